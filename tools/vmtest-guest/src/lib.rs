//! vmtest-guest's pure logic, built and unit-tested on the host and run in the QEMU guest.
//!
//! - [`scsi_cmd`]: the SCSI commands the exerciser sends (SPC/SBC CDBs) and the parsing of
//!   what the device returns for them;
//! - [`arena`]: the bookkeeping of the guest's DMA pool;
//! - [`pattern`]: the data patterns written and verified across the disk;
//! - [`driver`]: a small interrupt-driven virtio-scsi driver over virtio-core's transport and queues;
//! - [`exercise`]: the checks the guest runs against QEMU's device;
//! - [`pci_scan`]: PCI enumeration and BAR decoding over an abstract configuration space;
//! - [`reservation`]: persistent reservation CDBs and parameter data (SPC-4);
//! - [`cluster`]: the two-node persistent-reservation sequence, its judge and its runner;
//! - [`text`]: fixed-size result lines;
//! - [`wmi_reply`]: the image's per-queue counters as its WMI class returns them;
//! - [`storport_abi`]: the StorPort C layouts (x64) the guest's StorPort host hands the shipped
//!   image, the simulator's own file compiled here too, so both hosts share one definition.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod arena;
pub mod cluster;
pub mod driver;
pub mod exercise;
pub mod pattern;
pub mod pci_scan;
pub mod reservation;
pub mod scsi_cmd;
pub mod text;
pub mod wmi_reply;

#[path = "../../../tests/src/sim/abi.rs"]
pub mod storport_abi;
