//! rvscsi: the StorPort virtio-scsi miniport.
#![cfg_attr(not(test), no_std)]

pub mod storport;
