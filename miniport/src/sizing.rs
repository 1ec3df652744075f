//! The ground floor: the sizing constants every layer agrees on (queues, rings, requests,
//! tables and timer periods), in one place so no layer imports another for a number.
#![forbid(unsafe_code)]

/// Most request queues the adapter drives (one per processor on a 64-processor guest).
pub const MAX_REQUEST_QUEUES: u16 = 64;

/// Largest ring we set up, whatever the device offers: 1024 requests per queue is more than
/// StorPort keeps outstanding per adapter, and bounds the uncached extension.
pub const MAX_QUEUE_SIZE: u16 = 1024;

/// Delay of a timer request that only moves work out of an ISR (the shortest StorPort honours).
pub const KICK_MICROSECONDS: u32 = 1;

/// Period of the health timer when no task management function is outstanding: how often
/// `DEVICE_NEEDS_RESET` is checked and the request queues are polled for completions whose
/// interrupt never came.
pub const HEALTH_PERIOD_MICROSECONDS: u32 = 250_000;

/// Period of the timer while a task management function is outstanding: how often its answer
/// and the requests it covers are looked for.
pub const TMF_POLL_MICROSECONDS: u32 = 10_000;

/// Alignment of ring memory: a page, so no ring straddles pages needlessly (dump mode packs
/// them tighter: [`Sizing::ring_align`](crate::dump::Sizing::ring_align)).
pub const RING_MEMORY_ALIGN: usize = 4096;

/// The page size StorPort's scatter/gather lists are built from (4 KiB on x64 and ARM64).
pub const PAGE_SIZE: u32 = 4096;

/// Our own cap on data segments per request: 512 pages, so one request carries a 2 MiB
/// transfer that starts page aligned (2 MiB - 4 KiB at worst alignment), and the indirect table
/// of one request (514 descriptors, 8 KiB) stays small enough to live in the SRB extension.
pub const MAX_DATA_SEGMENTS: u32 = 512;

/// Descriptors a command needs besides its data: the request header and the response.
pub const HEADER_DESCRIPTORS: u32 = 2;

/// Alignment of the parts that need it: virtio indirect tables (16, virtio 1.x section
/// 2.7.5.3, as our rings require) and the segment list.
pub const REQUEST_ALIGN: usize = 16;

/// Bytes of one virtqueue descriptor (split and packed alike, virtio 1.x 2.7.5 / 2.8.13).
pub const DESCRIPTOR_LEN: usize = 16;

/// Logical units the table holds.
pub const LUN_SLOTS: usize = 64;

/// Task management functions that can be outstanding at once. StorPort resets one unit at a
/// time per timeout; sixteen leave room for a bus reset's per-target functions besides.
pub const TMF_SLOTS: usize = 16;

/// Event buffers kept on the eventq (Linux's `virtio_scsi` keeps the same number).
pub const EVENT_BUFFERS: usize = 8;

/// The cache line size the per-queue tables are padded to: each queue's state, counters and
/// DPC object is written on every I/O of that queue (the ring indices, the counters, the DPC's
/// queue links), so no two queues may share a line, or the processors serving them would
/// bounce it between their caches (false sharing).
pub const CACHE_LINE: usize = 64;
