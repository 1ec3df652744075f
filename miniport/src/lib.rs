//! rvscsi: the StorPort virtio-scsi miniport.
#![cfg_attr(not(test), no_std)]

pub mod storport;

pub mod adapter;
pub mod hw;
pub mod io;
pub mod layout;
pub mod limits;
pub mod platform;
pub mod port;
pub mod srb;
pub mod vpd;
