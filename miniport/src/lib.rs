//! rvscsi: the StorPort virtio-scsi miniport.
#![cfg_attr(not(test), no_std)]
// How WinDbg's `dx` shows the trace ring, the counters and the recovery state: rustc passes the
// file to the linker, which embeds it in the PDB (see docs/windbg.md).
#![debugger_visualizer(natvis_file = "../rvscsi.natvis")]

// The kernel image's panic handler and memcpy/memmove/memset/memcmp, which nothing names from
// Rust; on other targets rvscsi-rt is empty and the rlib uses the host's.
#[cfg(all(windows, target_env = "msvc", not(test)))]
use rvscsi_rt as _;

pub mod storport;

pub mod adapter;
pub mod dump;
pub mod events;
pub mod hw;
pub mod identity;
pub mod io;
pub mod ioctl;
pub mod layout;
pub mod limits;
pub mod luns;
pub mod platform;
pub mod port;
pub mod registry;
pub mod room;
pub mod srb;
pub mod tmf;
pub mod trace;
pub mod unit;
pub mod vpd;
pub mod wmi;
