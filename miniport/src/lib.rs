//! rvscsi: the StorPort virtio-scsi miniport.
//!
//! # Map
//! The folders are the layers. Only the FFI floor and the entry points may use `unsafe`;
//! every module above forbids it and reaches StorPort only through the floor's safe types.
//!
//! | layer | module | what it holds |
//! |---|---|---|
//! | entry | [`entry`] | `DriverEntry` and every `extern "system" fn hw_*` trampoline: each validates what StorPort passed, forms the safe context and calls the layer below; builds `HW_INITIALIZATION_DATA` and the [`storport::port::Callbacks`] table handed to bring-up |
//! | bring-up | [`adapter`] | find-adapter, initialize, passive initialize, interrupt routing, the health timer, device resets, stop/restart; the adapter's state in the device extension |
//! | I/O path | [`io`] | SRB -> virtio-scsi request (BuildIo), ring submission (StartIo), used ring -> SRB completion; reaches the adapter only through [`io::IoHost`] |
//! | recovery | [`recovery`] | task management (aborts, LUN/target resets, HwResetBus) and unit control |
//! | events | [`events`] | the eventq and the configuration interrupt: hotplug, rescans, parameter changes |
//! | WMI/IOCTL | [`control`] | `SRB_FUNCTION_WMI` and `IOCTL_SCSI_MINIPORT`, answered in BuildIo |
//! | dump | [`dump`] | how the crash-dump stack is recognised and the adapter sized down for it |
//! | observability | [`trace`] | the typed trace ring and counters readable from a crash dump |
//! | shared state | [`counters`], [`in_flight`], [`queue_state`], [`ring_view`], [`luns`], [`limits`], [`registry`], [`identity`], [`srb_extension`] | the per-queue and recovery counters, a request on a ring as recovery sees it, a request queue as the adapter and the I/O path share it (its ring, in-flight table, reservation and lock guard), a virtqueue as the eventq and controlq users drive it, the LUN table, StorPort limits derived from the device, registry parameters, the adapter's identity, the layout of one request in its SRB extension |
//! | ground floor | [`sizing`] | the sizing constants every layer agrees on |
//! | FFI floor | [`storport`] | StorPort's C types and imports, the safe wrappers over them ([`storport::port`]), the SRB views ([`storport::srb`]), the SRBs held without a view (a request's area in its SRB extension, the in-flight token, task management's kept SRB, mapped data buffers: [`storport::request`]), the DMA/HAL glue ([`storport::dma`]) |
#![cfg_attr(not(test), no_std)]
// How WinDbg's `dx` shows the trace ring, the counters and the recovery state: rustc passes the
// file to the linker, which embeds it in the PDB (see docs/windbg.md).
#![debugger_visualizer(natvis_file = "../rvscsi.natvis")]

// The kernel image's panic handler and memcpy/memmove/memset/memcmp, which nothing names from
// Rust; on other targets rvscsi-rt is empty and the rlib uses the host's.
#[cfg(all(windows, target_env = "msvc", not(test)))]
use rvscsi_rt as _;

pub mod storport;

pub mod sizing;

pub mod counters;
pub mod identity;
pub mod in_flight;
pub mod limits;
pub mod luns;
pub mod queue_state;
pub mod registry;
pub mod ring_view;
pub mod srb_extension;
pub mod trace;

pub mod adapter;
pub mod control;
pub mod dump;
pub mod events;
pub mod io;
pub mod recovery;

pub mod entry;
