//! rvscsi: the StorPort virtio-scsi miniport.
//!
//! Not written yet (issue 3): StorPort bindings, HW entry points and the I/O path arrive with
//! the miniport issue. Until then this crate is empty.
#![no_std]
