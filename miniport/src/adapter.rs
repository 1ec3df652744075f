//! The adapter: virtio transport, rings, limits and per-queue locks, living in StorPort's
//! device extension, plus the routines that bring it up (find-adapter, initialize, passive
//! initialize), reset it, and route interrupts to queues.
//!
//! Concurrency follows StorPort's rules. HwBuildIo runs with no lock; HwStartIo runs on many
//! processors at once (concurrent channels), so each request queue is guarded by the spin lock
//! of its MSI-X message, the lock StorPort itself holds while running that message's ISR. The
//! per-queue state sits in an `UnsafeCell` reached only through a [`QueueGuard`], which exists
//! only while that lock is held. The controlq and the eventq have their own messages and locks
//! ([`VirtqueueGuard`]).
//!
//! Whatever needs every queue at once (a device reset) takes StorPort's interrupt lock, once
//! (`Adapter::lock_all`). With `InterruptSynchronizePerMessage` that one lock *is* every
//! message's lock: "When a miniport needs to synchronize with all messages, it can use one call
//! to StorPortAcquireSpinLock which will acquire a lock for each message in the proper order"
//! (Microsoft, StorPortAcquireMSISpinLock). In shared mode it is the one message's lock, in line
//! mode the ISR's. So no context of ours ever holds two message locks, and a context StorPort
//! already runs under the interrupt lock (HwInitialize, HwAdapterControl's ScsiStopAdapter and
//! ScsiRestartAdapter, at DIRQL: the HW_ADAPTER_CONTROL and StorPortAcquireSpinLock tables)
//! holds every queue's lock already and must take none: acquiring a message lock there would
//! spin on a lock the processor itself holds.
//!
//! # Recovery and lifecycle
//! - Task management (aborts, LUN and target resets, HwResetBus) is [`crate::tmf`]; its
//!   escalation, and every protocol violation, is [`Adapter::reset_device`]: reset the device,
//!   complete what it had finished, fail the rest with `SRB_STATUS_BUS_RESET`, and bring it back
//!   with the same features, limits, queue count and sizes.
//! - One HwTimer routine ([`Adapter::on_timer`]) does all deferred work, because StorPort keeps
//!   one timer request per adapter: resets asked for by an ISR, `DEVICE_NEEDS_RESET` (also seen
//!   from the configuration interrupt), task management deadlines, and lost interrupts, found by
//!   polling every request queue each [`HEALTH_PERIOD_MICROSECONDS`]: a queue that had
//!   completions waiting at two consecutive polls is drained by the timer.
//! - ScsiStopAdapter resets the device and marks the adapter stopped until ScsiRestartAdapter
//!   brings it back (refusing a device whose features or limits changed); a request that reaches
//!   StartIo meanwhile completes with `SRB_STATUS_BUSY`, which StorPort retries, and never
//!   reaches the device. StorPort's power transitions (S3, S4) go through the same two calls;
//!   `SRB_FUNCTION_POWER` concerns a unit's power state, which virtio-scsi does not have, and is
//!   answered with success.
//! - The event queue ([`crate::events`]) is stocked after every DRIVER_OK (HwInitialize, each
//!   reset, ScsiRestartAdapter); the configuration interrupt is the one place that notices
//!   `DEVICE_NEEDS_RESET` between health checks, and asks the timer for the reset.
//! - In dump mode ([`crate::dump`], `adapter/polling.rs`) none of the deferred machinery
//!   exists: one polled queue, no timer, no DPC, no task management; resets run inline.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering, fence};

use virtio_core::features::{Features, SCSI_DRIVER_FEATURES};
use virtio_core::hal::{Hal, RegisterIo};
use virtio_core::pci::{
    DeviceStatus, Isr, PciTransport, TransportError, VIRTIO_DEVICE_TYPE_SCSI, VirtioPciCommonCfg,
};
use virtio_core::queue::packed::PackedQueue;
use virtio_core::queue::split::SplitQueue;
use virtio_core::queue::{QueueFeatures, Slot, Virtqueue};
use virtio_core::scsi::{Limits, queue_index};

use crate::dump::{DumpMode, Sizing};
use crate::events::EventQueue;
use crate::limits::StorLimits;
use crate::luns::{LunSlot, LunTable};
use crate::platform::{Carved, PciSnapshot, StorPortRegisters, UncachedArena};
use crate::port::{DeviceExtension, StorPortRegistry};
use crate::registry::{Parameters, Report, ValueOutcome};
use crate::storport::{
    AccessRange, InterruptLock, InterruptSynchronizePerMessage, PortConfigurationInformation,
    SCSI_DMA64_MINIPORT_FULL64BIT_SUPPORTED, SP_RETURN_ERROR, SP_RETURN_FOUND, SP_RETURN_NOT_FOUND,
    SRB_STATUS_ERROR, SRB_STATUS_SUCCESS, SRB_TYPE_STORAGE_REQUEST_BLOCK,
    STOR_MAP_NON_READ_WRITE_BUFFERS, STORAGE_ADDRESS_TYPE_BTL8, StorDpc, StorLockHandle,
    StorSynchronizeFullDuplex, TRUE,
};
use crate::tmf::{Active, Answer, Decision, Ending, Nexus, Owner, TmfSlot, TmfTable};
use crate::trace::{ADAPTER_WIDE, ResetCause, TraceEntry, TraceEvent, TraceRing, ViolationKind};
use crate::vpd::LunLocation;

/// Most request queues the adapter drives (one per processor on a 64-processor guest).
pub const MAX_REQUEST_QUEUES: u16 = 64;
/// Largest ring we set up, whatever the device offers: 1024 requests per queue is more than
/// StorPort keeps outstanding per adapter, and bounds the uncached extension.
pub const MAX_QUEUE_SIZE: u16 = 1024;
/// Delay of a timer request that only moves work out of an ISR (the shortest StorPort honours).
const KICK_MICROSECONDS: u32 = 1;
/// Period of the health timer when no task management function is outstanding: how often
/// `DEVICE_NEEDS_RESET` is checked and the request queues are polled for completions whose
/// interrupt never came.
pub const HEALTH_PERIOD_MICROSECONDS: u32 = 250_000;
/// Period of the timer while a task management function is outstanding: how often its answer
/// and the requests it covers are looked for.
pub const TMF_POLL_MICROSECONDS: u32 = 10_000;
/// [`HEALTH_PERIOD_MICROSECONDS`] in the 100 ns units of the system time.
const HEALTH_PERIOD: u64 = HEALTH_PERIOD_MICROSECONDS as u64 * 10;
/// Marks a device extension holding a constructed [`Adapter`] (the first field).
pub const ADAPTER_MAGIC: u64 = u64::from_le_bytes(*b"rvscsi\x01\x00");

/// Alignment of ring memory: a page, so no ring straddles pages needlessly (dump mode packs
/// them tighter: [`Sizing::ring_align`]).
pub(crate) const RING_MEMORY_ALIGN: usize = 4096;

mod polling;

/// Why bringing the adapter up failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterError {
    /// PCI configuration space could not be read.
    NoConfigSpace,
    /// A virtio device, but not SCSI (virtio device type).
    WrongDeviceType(u16),
    /// The function is not virtio-scsi or its capabilities are unusable.
    Transport(TransportError),
    /// The device configuration is unusable.
    Config(virtio_core::scsi::ConfigError),
    /// The limits derived from the device are unusable.
    Limits(crate::limits::LimitsError),
    /// StorPort could not give the uncached extension we need.
    NoUncachedExtension {
        /// Bytes asked for.
        len: usize,
    },
    /// A ring could not be created over the carved memory.
    Queue(virtio_core::queue::QueueError),
    /// Carving DMA memory or a table failed (a sizing bug: it was sized first).
    OutOfMemory,
    /// After a reset the device accepted other features than at find-adapter (the queues,
    /// limits and request layout depend on them).
    FeaturesChanged {
        /// The features accepted now.
        accepted: Features,
    },
    /// After a reset the device reported other limits than at find-adapter (what StorPort was
    /// told no longer holds).
    LimitsChanged,
    /// In dump mode, the uncached extension would exceed what the dump port can give.
    OverDumpBudget {
        /// Bytes needed.
        len: usize,
        /// [`crate::dump::DUMP_UNCACHED_BUDGET`].
        budget: usize,
    },
}

impl From<TransportError> for AdapterError {
    fn from(error: TransportError) -> Self {
        Self::Transport(error)
    }
}

/// A ring of either layout, driven through the common trait.
#[derive(Debug)]
pub enum Ring {
    /// Split virtqueue (virtio 1.x section 2.7).
    Split(SplitQueue<Carved<Slot>>),
    /// Packed virtqueue (virtio 1.x section 2.8).
    Packed(PackedQueue<Carved<Slot>>),
}

impl Ring {
    /// The ring as the common trait.
    pub fn queue(&mut self) -> &mut dyn Virtqueue {
        match self {
            Self::Split(queue) => queue,
            Self::Packed(queue) => queue,
        }
    }

    // The I/O path's ring calls, dispatched on the layout with static calls, which the
    // compiler can inline into StartIo and the drain (through `queue()` each is an indirect
    // call that inlines nothing).

    /// [`Virtqueue::free_descriptors`].
    #[must_use]
    #[inline]
    pub fn free_descriptors(&self) -> u16 {
        match self {
            Self::Split(queue) => queue.free_descriptors(),
            Self::Packed(queue) => queue.free_descriptors(),
        }
    }

    /// [`Virtqueue::add`].
    ///
    /// # Errors
    /// As [`Virtqueue::add`].
    #[inline]
    pub fn add(
        &mut self,
        readable: &[virtio_core::hal::Segment],
        writable: &[virtio_core::hal::Segment],
        indirect: Option<&virtio_core::dma::DmaMemory>,
    ) -> Result<virtio_core::queue::Token, virtio_core::queue::QueueError> {
        match self {
            Self::Split(queue) => queue.add(readable, writable, indirect),
            Self::Packed(queue) => queue.add(readable, writable, indirect),
        }
    }

    /// [`Virtqueue::kick_prepare`].
    #[inline]
    pub fn kick_prepare(&mut self) -> bool {
        match self {
            Self::Split(queue) => queue.kick_prepare(),
            Self::Packed(queue) => queue.kick_prepare(),
        }
    }

    /// [`Virtqueue::pop_used`].
    ///
    /// # Errors
    /// As [`Virtqueue::pop_used`].
    #[inline]
    pub fn pop_used(
        &mut self,
    ) -> Result<Option<virtio_core::queue::UsedBuffer>, virtio_core::queue::DeviceError> {
        match self {
            Self::Split(queue) => queue.pop_used(),
            Self::Packed(queue) => queue.pop_used(),
        }
    }

    /// [`Virtqueue::enable_interrupts`].
    #[inline]
    pub fn enable_interrupts(&mut self) -> bool {
        match self {
            Self::Split(queue) => queue.enable_interrupts(),
            Self::Packed(queue) => queue.enable_interrupts(),
        }
    }
}

/// The request queue of processor `processor` when StorPort names no message for it: its own
/// number below `queues`, else that number folded by a mask onto the largest power-of-two
/// count of queues (a spread with no division on the I/O path; `queues` >= 1).
#[must_use]
pub const fn fold_onto_queues(processor: u32, queues: u16) -> u16 {
    let queues = queues as u32;
    if processor < queues {
        return processor as u16;
    }
    let span = 1u32 << (queues | 1).ilog2();
    (processor & (span - 1)) as u16
}

/// The cache line size the per-queue tables are padded to: each queue's state, counters and
/// DPC object is written on every I/O of that queue (the ring indices, the counters, the DPC's
/// queue links), so no two queues may share a line, or the processors serving them would
/// bounce it between their caches (false sharing).
pub const CACHE_LINE: usize = 64;

/// One virtqueue and the requests in flight on it, alone on its cache lines ([`CACHE_LINE`]).
#[derive(Debug)]
#[repr(align(64))]
pub struct QueueState {
    /// The ring.
    pub ring: Ring,
    /// SRB extension address of the request in flight for each token (0 when none).
    pub requests: Carved<usize>,
    /// Offset of the queue's notification address in the notify BAR.
    pub notify_offset: u64,
    /// The virtqueue index.
    pub index: u16,
    /// Room kept for a large request that found none (request queues only).
    pub reservation: crate::room::Reservation,
}

/// How interrupts reach the queues, decided in HwInitialize from the messages granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum InterruptMode {
    /// One MSI-X message per virtqueue (message 0 for configuration changes): the normal case.
    PerQueue = 1,
    /// One MSI/MSI-X message for everything.
    Shared = 2,
    /// Line-based (INTx): the ISR reads the ISR status register.
    Line = 3,
}

/// A request queue's DPC object, alone on its cache lines ([`CACHE_LINE`]): the kernel writes
/// its queue links each time StorPort issues it.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct QueueDpc(StorDpc);

const _: () = assert!(
    align_of::<QueueState>() == CACHE_LINE
        && align_of::<QueueCounters>() == CACHE_LINE
        && align_of::<QueueDpc>() == CACHE_LINE
);

/// Per-queue counters, readable from a crash dump and (later) through WMI; each queue's alone
/// on its cache lines ([`CACHE_LINE`]).
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct QueueCounters {
    /// Requests submitted.
    pub requests: AtomicU64,
    /// Device notifications (kicks).
    pub kicks: AtomicU64,
    /// Interrupts taken for the queue.
    pub interrupts: AtomicU64,
    /// Requests completed with SRB_STATUS_BUSY because the ring was full.
    pub queue_full: AtomicU64,
    /// Requests completed.
    pub completions: AtomicU64,
    /// Completed requests that read data from the device.
    pub reads: AtomicU64,
    /// Completed requests that wrote data to the device.
    pub writes: AtomicU64,
    /// Bytes read (as completed: the device's residual taken off).
    pub bytes_read: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
}

/// Adapter-wide recovery and lifecycle counters, readable from a crash dump (task management
/// has its own, [`crate::tmf::TmfCounters`]).
#[derive(Debug, Default)]
pub struct RecoveryCounters {
    /// Times the device reported `DEVICE_NEEDS_RESET` (each leads to a full reset).
    pub needs_reset: AtomicU64,
    /// Times the health timer found a queue whose completions had waited a whole period for
    /// an interrupt, and drained it.
    pub lost_interrupts: AtomicU64,
    /// HwResetBus calls (and `SRB_FUNCTION_RESET_BUS` requests).
    pub bus_resets: AtomicU64,
    /// Of `bus_resets`: polling the queues completed everything, no function was needed.
    pub bus_resets_polled: AtomicU64,
    /// ScsiStopAdapter calls.
    pub stops: AtomicU64,
    /// ScsiRestartAdapter calls that brought the device back.
    pub restarts: AtomicU64,
    /// Resets or restarts after which the device could not be brought back (it is failed).
    pub bring_up_failures: AtomicU64,
    /// Requests refused with `SRB_STATUS_BUSY` because the adapter was stopped.
    pub busy_while_stopped: AtomicU64,
}

impl QueueCounters {
    /// Counts a completed request that moved `bytes` in `direction`.
    pub fn record_transfer(&self, direction: virtio_core::scsi::DataDirection, bytes: u32) {
        use virtio_core::scsi::DataDirection;
        let (requests, total) = match direction {
            DataDirection::FromDevice => (&self.reads, &self.bytes_read),
            DataDirection::ToDevice => (&self.writes, &self.bytes_written),
            DataDirection::None | DataDirection::Bidirectional => return,
        };
        requests.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(u64::from(bytes), Ordering::Relaxed);
    }
}

/// The miniport's state for one adapter, constructed in the device extension by find-adapter.
#[repr(C)]
#[derive(Debug)]
pub struct Adapter {
    /// [`ADAPTER_MAGIC`] once constructed (read before any reference is formed).
    magic: u64,
    extension: DeviceExtension,
    registers: StorPortRegisters,
    /// The transport; mutated only in HwInitialize/restart (no I/O possible) or by the reset
    /// winner holding every queue lock.
    transport: UnsafeCell<PciTransport<StorPortRegisters>>,
    arena: UncachedArena,
    notify_bar: u8,
    features: Features,
    device_limits: Limits,
    limits: StorLimits,
    /// PCI bus and slot, for synthesised identifiers.
    bus: u8,
    slot: u8,
    /// Identity and sizes the WMI classes report.
    wmi_facts: crate::wmi::AdapterFacts,
    /// Virtqueues prepared (controlq, eventq, then request queues).
    prepared_queues: u16,
    /// Request queues in use (set in HwInitialize).
    request_queues: AtomicU16,
    /// [`InterruptMode`] as a byte (set in HwInitialize).
    mode: AtomicU8,
    queues: Carved<UnsafeCell<Option<QueueState>>>,
    dpcs: Carved<QueueDpc>,
    counters: Carved<QueueCounters>,
    /// What the bus scan told Windows about each logical unit ([`crate::luns`]).
    luns: LunTable<Carved<LunSlot>>,
    /// Where WMI copies the LUN table to answer from it ([`crate::wmi::WmiScratch`]).
    wmi_scratch: crate::wmi::WmiScratch,
    /// The eventq's buffers, the units the device reported removed, and the configuration
    /// watch ([`crate::events`]).
    events: EventQueue,
    /// Lock handle for StorPort's interrupt lock (line mode's queue lock, and every queue's
    /// lock at once in any mode: [`Adapter::lock_all`]); only its holder touches it.
    interrupt_lock: UnsafeCell<StorLockHandle>,
    dpc_ready: AtomicBool,
    /// StorPort accepted STOR_PERF_INTERRUPT_MESSAGE_RANGES: each request's queue is the one
    /// whose message StorPort names for the submitting processor.
    message_ranges: AtomicBool,
    resetting: AtomicBool,
    /// Resets performed.
    pub resets: AtomicU64,
    /// Task management slots and counters.
    tmfs: TmfTable<Carved<TmfSlot>>,
    /// Recovery and lifecycle counters.
    recovery: RecoveryCounters,
    /// Between ScsiStopAdapter and a successful ScsiRestartAdapter.
    stopped: AtomicBool,
    /// The [`ResetCause`] of the reset an ISR (or a context holding a queue lock) asked the
    /// timer for; 0 when none is pending.
    reset_requested: AtomicU32,
    /// An ISR asked for the timer to run now (see [`Adapter::kick_timer`]).
    timer_kick: AtomicBool,
    /// Where `device_status` is (BAR, offset), read without the transport so any context may.
    status_register: (u8, u64),
    /// System time of the last health check.
    last_health: AtomicU64,
    /// Request queues (bit per queue) that had completions waiting at the last health check.
    used_seen: AtomicU64,
    /// The most verbose StorPortDebugPrint level emitted (registry `RvscsiDebugPrintLevel`).
    debug_print_level: u32,
    /// Set when the crash-dump or hibernation stack loaded this instance ([`crate::dump`]):
    /// one polled queue, no DPCs, timers, MSI-X or task management.
    dump: Option<DumpMode>,
    /// The last notable events ([`crate::trace`]); last in the extension so the hot fields
    /// above share cache lines.
    trace: TraceRing,
}

/// Everything find-adapter learns before the memory is carved.
struct Discovery {
    transport: PciTransport<StorPortRegisters>,
    registers: StorPortRegisters,
    features: Features,
    device_limits: Limits,
    sizes: [u16; MAX_REQUEST_QUEUES as usize + 2],
    queue_count: u16,
    /// Where `device_status` is (BAR, offset).
    status_register: (u8, u64),
    /// The WMI identity.
    wmi_facts: crate::wmi::AdapterFacts,
    /// The registry parameters, validated (fixed ones in dump mode).
    parameters: Parameters,
    /// Whether the dump stack loaded us.
    dump: Option<DumpMode>,
}

impl Adapter {
    /// The adapter in `extension`, if find-adapter constructed one there.
    ///
    /// # Safety
    /// `extension` is the device extension StorPort passed to a HW routine (at least
    /// `size_of::<Adapter>()` bytes, 8-aligned, zeroed before find-adapter).
    #[must_use]
    pub unsafe fn from_extension<'a>(extension: *mut core::ffi::c_void) -> Option<&'a Self> {
        let pointer = NonNull::new(extension.cast::<Self>())?;
        // SAFETY: the extension is at least 8 bytes, 8-aligned and initialised (zeroed by
        // StorPort or constructed by us); `magic` is the first field of a repr(C) struct.
        let magic = unsafe { pointer.cast::<u64>().read() };
        if magic != ADAPTER_MAGIC {
            return None;
        }
        // SAFETY: the magic is written only with the whole Adapter, constructed in place by
        // find-adapter, and the adapter is only mutated through interior mutability afterwards.
        Some(unsafe { pointer.as_ref() })
    }

    /// HwFindAdapter: identifies the device, negotiates features, derives the limits, fills
    /// `config` and carves the uncached extension, sized down when `dump` says the dump stack
    /// loaded us. Returns an `SP_RETURN_*` code.
    ///
    /// # Safety
    /// `extension` is the zeroed device extension of `size_of::<Adapter>()` bytes, 8-aligned,
    /// exclusively ours for the call; `config` is StorPort's ConfigInfo for this adapter.
    pub unsafe fn find(
        extension: DeviceExtension,
        config: &mut PortConfigurationInformation,
        dump: Option<DumpMode>,
    ) -> u32 {
        let pointer = extension.raw().cast::<Self>();
        if !pointer.is_aligned() {
            return SP_RETURN_ERROR;
        }
        // The registry is readable only at PASSIVE_LEVEL, so here; the reader frees StorPort's
        // registry buffer when it goes out of scope. The dump port calls find-adapter above
        // PASSIVE_LEVEL, so dump mode runs with its own fixed parameters instead.
        let (parameters, registry_report) = if dump.is_some() {
            (
                crate::dump::parameters(),
                Report {
                    outcomes: [ValueOutcome::Absent; 4],
                },
            )
        } else {
            let mut registry = StorPortRegistry::new(extension);
            crate::registry::read(&mut registry, MAX_REQUEST_QUEUES)
        };
        let discovery = match Self::discover(extension, config, parameters, dump) {
            Ok(discovery) => discovery,
            Err(
                AdapterError::NoConfigSpace
                | AdapterError::WrongDeviceType(_)
                | AdapterError::Transport(_),
            ) => {
                return SP_RETURN_NOT_FOUND;
            }
            Err(_) => return SP_RETURN_ERROR,
        };
        match Self::construct(extension, config, discovery) {
            // SAFETY: the caller guarantees the extension is ours, sized and aligned (checked
            // above) for an Adapter; it is written once, before any reference exists.
            Ok(adapter) => unsafe { pointer.write(adapter) },
            Err(_) => return SP_RETURN_ERROR,
        }
        // SAFETY: written just above, with the magic.
        if let Some(adapter) = unsafe { Self::from_extension(extension.raw()) } {
            adapter.trace_found(&registry_report);
        }
        SP_RETURN_FOUND
    }

    fn discover(
        extension: DeviceExtension,
        config: &PortConfigurationInformation,
        parameters: Parameters,
        dump: Option<DumpMode>,
    ) -> Result<Discovery, AdapterError> {
        let pci = PciSnapshot::read(extension, config.system_io_bus_number, config.slot_number);
        if pci.len() < 64 {
            return Err(AdapterError::NoConfigSpace);
        }
        let mut registers = StorPortRegisters::new(extension);
        let ranges: &[AccessRange] = if config.access_ranges.is_null() {
            &[]
        } else {
            // SAFETY: StorPort passes `NumberOfAccessRanges` ranges at `AccessRanges`, valid
            // for the duration of HwFindAdapter.
            unsafe {
                core::slice::from_raw_parts(
                    config.access_ranges,
                    config.number_of_access_ranges as usize,
                )
            }
        };
        for bar in 0..6u8 {
            let Some((address, io_space)) = pci.bar_address(bar) else {
                continue;
            };
            let Some(range) = ranges.iter().find(|range| {
                range.range_start.as_u64() == address && (range.range_in_memory == TRUE) != io_space
            }) else {
                continue;
            };
            if let Some(base) = extension.map_device_base(
                config.system_io_bus_number,
                address,
                range.range_length,
                io_space,
            ) {
                registers.map(bar, base, u64::from(range.range_length));
            }
        }
        let mut transport = PciTransport::probe(&pci, registers)?;
        if transport.device_type() != VIRTIO_DEVICE_TYPE_SCSI {
            return Err(AdapterError::WrongDeviceType(transport.device_type()));
        }
        transport.reset()?;
        let features = transport.begin_init(SCSI_DRIVER_FEATURES)?;
        let device_limits = Self::configure_device(&mut transport)?;
        // One MSI-X message per request queue, after configuration, controlq and eventq: a
        // device with fewer table entries than that (QEMU's `vectors`) gets no more request
        // queues than it can interrupt for, so that MaxNumberOfIO, reported now, stays true
        // after HwInitialize. (StorPort may still grant fewer messages than the table has; then
        // HwInitialize uses fewer queues and StorPort's BUSY handling absorbs the difference:
        // MaxNumberOfIO cannot change after find-adapter.) Fewer than four entries mean one
        // shared message for every queue.
        let interruptible = match transport.layout().msix_table_size {
            Some(entries) if entries >= 4 => entries - 3,
            _ => MAX_REQUEST_QUEUES,
        };
        let request_queues = device_limits
            .num_queues
            .min(MAX_REQUEST_QUEUES)
            .min(interruptible)
            .min(parameters.max_request_queues.unwrap_or(MAX_REQUEST_QUEUES));
        let queue_count = request_queues + queue_index::REQUEST_BASE;
        let packed = features.contains(Features::RING_PACKED);
        let mut sizes = [0u16; MAX_REQUEST_QUEUES as usize + 2];
        for (index, size) in sizes.iter_mut().enumerate().take(usize::from(queue_count)) {
            let max = transport
                .queue_max_size(index as u16)?
                .min(Sizing::of(dump).queue_size_cap(index as u16));
            // Split rings need a power of two; packed rings take any size.
            *size = if packed {
                max
            } else {
                max.checked_ilog2().map_or(0, |log| 1 << log)
            };
        }
        let smallest_request_queue = sizes
            .iter()
            .take(usize::from(queue_count))
            .skip(usize::from(queue_index::REQUEST_BASE))
            .copied()
            .min()
            .unwrap_or(0);
        let common = transport.layout().common;
        Ok(Discovery {
            status_register: (
                common.bar,
                u64::from(common.offset) + VirtioPciCommonCfg::DEVICE_STATUS,
            ),
            transport,
            registers,
            features,
            device_limits,
            sizes,
            queue_count,
            wmi_facts: crate::wmi::AdapterFacts::from_pci(
                &pci,
                smallest_request_queue,
                Self::identity(extension, &pci, config, dump),
            ),
            parameters,
            dump,
        })
    }

    /// This adapter's `UniqueAdapterId` ([`crate::identity`]): kept in the device's hardware
    /// key, created on the first start; in dump mode (no registry, no WMI) the PCI-derived
    /// fallback.
    fn identity(
        extension: DeviceExtension,
        pci: &PciSnapshot,
        config: &PortConfigurationInformation,
        dump: Option<DumpMode>,
    ) -> u64 {
        let memory_bar = crate::wmi::first_memory_bar(pci);
        if dump.is_some() {
            return crate::wmi::unique_adapter_id(
                config.system_io_bus_number,
                config.slot_number,
                memory_bar,
            );
        }
        let entropy = crate::identity::Entropy {
            system_time: extension.system_time(),
            extension_address: extension.raw() as u64,
            pci_location: (u64::from(config.system_io_bus_number) << 16)
                | u64::from(config.slot_number),
            memory_bar: memory_bar.unwrap_or(0),
        };
        let mut key = crate::port::StorPortAdapterKey::new(extension);
        crate::identity::adapter_identity(&mut key, entropy).0
    }

    /// Writes the sense and CDB sizes we use and reads the device limits back.
    fn configure_device(
        transport: &mut PciTransport<StorPortRegisters>,
    ) -> Result<Limits, AdapterError> {
        match virtio_core::scsi::configure(transport) {
            Ok((_, limits)) => Ok(limits),
            Err(virtio_core::scsi::ConfigureError::Transport(error)) => {
                Err(AdapterError::Transport(error))
            }
            Err(virtio_core::scsi::ConfigureError::Config(error)) => {
                Err(AdapterError::Config(error))
            }
        }
    }

    fn ring_len(packed: bool, size: u16) -> usize {
        if packed {
            PackedQueue::<Carved<Slot>>::ring_len(size)
        } else {
            SplitQueue::<Carved<Slot>>::ring_len(size)
        }
    }

    /// Bytes of uncached extension needed, padding included.
    fn uncached_len(discovery: &Discovery) -> usize {
        let sizing = Sizing::of(discovery.dump);
        let packed = discovery.features.contains(Features::RING_PACKED);
        let request_queues = usize::from(discovery.queue_count - queue_index::REQUEST_BASE);
        // Each table starts on a cache line: up to a line of padding before each of the three.
        let tables = usize::from(discovery.queue_count)
            * (size_of::<UnsafeCell<Option<QueueState>>>() + 16)
            + request_queues * (size_of::<QueueDpc>() + size_of::<QueueCounters>() + 16)
            + 3 * CACHE_LINE;
        let rings: usize = discovery
            .sizes
            .iter()
            .take(usize::from(discovery.queue_count))
            .map(|&size| {
                Self::ring_len(packed, size)
                    + sizing.ring_align()
                    + usize::from(size) * (size_of::<Slot>() + size_of::<usize>())
                    + 32
            })
            .sum();
        let lun_slots = sizing.lun_slots();
        tables
            + rings
            + Self::lun_table_len(lun_slots)
            + crate::wmi::WmiScratch::uncached_len_for(lun_slots)
            + EventQueue::uncached_len(sizing)
            + Self::tmf_len(sizing.tmf_slots())
    }

    /// Bytes of uncached extension `slots` task management slots take, padding included.
    const fn tmf_len(slots: usize) -> usize {
        slots * size_of::<TmfSlot>()
            + align_of::<TmfSlot>()
            + TmfTable::<Carved<TmfSlot>>::memory_len(slots)
            + 16
    }

    /// Carves `slots` task management slots and their DMA memory.
    fn carve_tmfs(
        arena: &UncachedArena,
        slots: usize,
    ) -> Result<TmfTable<Carved<TmfSlot>>, AdapterError> {
        let table = arena
            .carve_table_with(slots, TmfSlot::new)
            .ok_or(AdapterError::OutOfMemory)?;
        let memory = arena
            .dma_alloc(TmfTable::<Carved<TmfSlot>>::memory_len(slots), 16)
            .map_err(|_| AdapterError::OutOfMemory)?;
        Ok(TmfTable::new(table, memory))
    }

    /// The limits reported to StorPort, from the device's and the smallest request queue.
    fn derive_limits(discovery: &Discovery) -> Result<StorLimits, AdapterError> {
        let request_queues = discovery.queue_count - queue_index::REQUEST_BASE;
        let smallest = discovery
            .sizes
            .iter()
            .skip(usize::from(queue_index::REQUEST_BASE))
            .take(usize::from(request_queues))
            .copied()
            .min()
            .unwrap_or(0);
        // The registry's PhysicalBreaks caps the segments as vioscsi's does: as if the device's
        // seg_max were that low (max_sectors and the ring still cap it further).
        let mut device_limits = discovery.device_limits;
        if let Some(breaks) = discovery.parameters.physical_breaks {
            device_limits.seg_max = device_limits.seg_max.min(breaks.saturating_add(1));
        }
        StorLimits::derive(
            &device_limits,
            smallest,
            request_queues,
            discovery.features.contains(Features::INDIRECT_DESC),
        )
        .map_err(AdapterError::Limits)
    }

    /// Carves the LUN table of `slots` slots and the WMI scratch that copies it.
    fn carve_lun_state(
        arena: &UncachedArena,
        slots: usize,
    ) -> Result<(LunTable<Carved<LunSlot>>, crate::wmi::WmiScratch), AdapterError> {
        let table = arena
            .carve_table_with(slots, LunSlot::new)
            .ok_or(AdapterError::OutOfMemory)?;
        let scratch =
            crate::wmi::WmiScratch::carve_for(arena, slots).ok_or(AdapterError::OutOfMemory)?;
        Ok((LunTable::new(table), scratch))
    }

    /// Bytes of uncached extension a LUN table of `slots` slots takes, padding included.
    const fn lun_table_len(slots: usize) -> usize {
        slots * size_of::<LunSlot>() + align_of::<LunSlot>()
    }

    /// Asks StorPort for the uncached extension `discovery` needs (within the dump budget in
    /// dump mode) and checks it is contiguous.
    fn claim_uncached(
        extension: DeviceExtension,
        config: &mut PortConfigurationInformation,
        discovery: &Discovery,
        sizing: Sizing,
    ) -> Result<UncachedArena, AdapterError> {
        let len = Self::uncached_len(discovery);
        if let Some(budget) = sizing.uncached_budget()
            && len > budget
        {
            return Err(AdapterError::OverDumpBudget { len, budget });
        }
        let len32 = u32::try_from(len).map_err(|_| AdapterError::NoUncachedExtension { len })?;
        let memory = extension
            .uncached_extension(config, len32)
            .ok_or(AdapterError::NoUncachedExtension { len })?;
        let (bus, contiguous) = extension.physical_address(None, memory.as_ptr() as usize);
        if (contiguous as usize) < len {
            return Err(AdapterError::NoUncachedExtension { len });
        }
        // SAFETY: StorPort just gave us `len` bytes of uncached extension at `memory`,
        // contiguous at `bus` (checked), for the adapter's life.
        Ok(unsafe { UncachedArena::new(extension, memory, bus, len) })
    }

    fn construct(
        extension: DeviceExtension,
        config: &mut PortConfigurationInformation,
        discovery: Discovery,
    ) -> Result<Self, AdapterError> {
        let request_queues = discovery.queue_count - queue_index::REQUEST_BASE;
        let sizing = Sizing::of(discovery.dump);
        let limits = Self::derive_limits(&discovery)?;
        Self::fill_config(config, &discovery.device_limits, &limits);
        if discovery.dump.is_some() {
            crate::dump::restrict_config(config);
        }

        let arena = Self::claim_uncached(extension, config, &discovery, sizing)?;
        let queues = arena
            .carve_table_with(usize::from(discovery.queue_count), || UnsafeCell::new(None))
            .ok_or(AdapterError::OutOfMemory)?;
        let dpcs = arena
            .carve_table_with(usize::from(request_queues), || QueueDpc(StorDpc::zeroed()))
            .ok_or(AdapterError::OutOfMemory)?;
        let counters = arena
            .carve_table_with(usize::from(request_queues), QueueCounters::default)
            .ok_or(AdapterError::OutOfMemory)?;
        let (luns, wmi_scratch) = Self::carve_lun_state(&arena, sizing.lun_slots())?;
        let events = EventQueue::carve(&arena, sizing).ok_or(AdapterError::OutOfMemory)?;
        let tmfs = Self::carve_tmfs(&arena, sizing.tmf_slots())?;

        let packed = discovery.features.contains(Features::RING_PACKED);
        let queue_features = QueueFeatures {
            event_idx: discovery.features.contains(Features::EVENT_IDX),
            indirect: discovery.features.contains(Features::INDIRECT_DESC),
        };
        let cells: &[UnsafeCell<Option<QueueState>>] = core::borrow::Borrow::borrow(&queues);
        for (index, cell) in cells.iter().enumerate() {
            let size = discovery.sizes.get(index).copied().unwrap_or(0);
            let index = index as u16;
            let ring_memory = arena
                .dma_alloc(Self::ring_len(packed, size), sizing.ring_align())
                .map_err(|_| AdapterError::OutOfMemory)?;
            let slots = arena
                .carve_table(usize::from(size), Slot::EMPTY)
                .ok_or(AdapterError::OutOfMemory)?;
            let requests = arena
                .carve_table(usize::from(size), 0usize)
                .ok_or(AdapterError::OutOfMemory)?;
            let ring = if packed {
                Ring::Packed(
                    PackedQueue::new(index, size, ring_memory, slots, queue_features)
                        .map_err(AdapterError::Queue)?,
                )
            } else {
                Ring::Split(
                    SplitQueue::new(index, size, ring_memory, slots, queue_features)
                        .map_err(AdapterError::Queue)?,
                )
            };
            // SAFETY: the table was carved just now; nothing else references this cell.
            unsafe {
                *cell.get() = Some(QueueState {
                    ring,
                    requests,
                    notify_offset: 0,
                    index,
                    reservation: crate::room::Reservation::default(),
                });
            }
        }
        let notify_bar = discovery.transport.layout().notify.bar;
        Ok(Self {
            magic: ADAPTER_MAGIC,
            extension,
            registers: discovery.registers,
            transport: UnsafeCell::new(discovery.transport),
            arena,
            notify_bar,
            features: discovery.features,
            device_limits: discovery.device_limits,
            limits,
            bus: config.system_io_bus_number as u8,
            slot: config.slot_number as u8,
            wmi_facts: discovery.wmi_facts,
            prepared_queues: discovery.queue_count,
            request_queues: AtomicU16::new(request_queues),
            mode: AtomicU8::new(InterruptMode::PerQueue as u8),
            queues,
            dpcs,
            counters,
            luns,
            wmi_scratch,
            events,
            interrupt_lock: UnsafeCell::new(StorLockHandle::zeroed()),
            dpc_ready: AtomicBool::new(false),
            message_ranges: AtomicBool::new(false),
            resetting: AtomicBool::new(false),
            resets: AtomicU64::new(0),
            tmfs,
            recovery: RecoveryCounters::default(),
            stopped: AtomicBool::new(false),
            reset_requested: AtomicU32::new(0),
            timer_kick: AtomicBool::new(false),
            status_register: discovery.status_register,
            last_health: AtomicU64::new(0),
            used_seen: AtomicU64::new(0),
            debug_print_level: discovery.parameters.debug_print_level,
            dump: discovery.dump,
            trace: TraceRing::new(),
        })
    }

    /// Fills ConfigInfo as StorPort expects from a bus-master, scatter/gather, 64-bit DMA,
    /// MSI-X HBA with one bus.
    fn fill_config(
        config: &mut PortConfigurationInformation,
        device: &Limits,
        limits: &StorLimits,
    ) {
        config.maximum_transfer_length = limits.max_transfer_length;
        config.number_of_physical_breaks = limits.physical_breaks;
        // virtio places no alignment requirement on data buffers.
        config.alignment_mask = 0;
        config.scatter_gather = TRUE;
        config.master = TRUE;
        config.caches_data = TRUE;
        config.dma32_bit_addresses = TRUE;
        config.dma64_bit_addresses = SCSI_DMA64_MINIPORT_FULL64BIT_SUPPORTED;
        config.map_buffers = STOR_MAP_NON_READ_WRITE_BUFFERS;
        config.need_physical_addresses = TRUE;
        config.tagged_queuing = TRUE;
        config.auto_request_sense = TRUE;
        config.multiple_request_per_lu = TRUE;
        config.number_of_buses = 1;
        config.maximum_number_of_targets = device.max_target.min(254) + 1;
        config.maximum_number_of_logical_units =
            u8::try_from(device.max_lun.saturating_add(1)).unwrap_or(u8::MAX);
        config.srb_type = SRB_TYPE_STORAGE_REQUEST_BLOCK;
        config.address_type = STORAGE_ADDRESS_TYPE_BTL8;
        config.srb_extension_size = limits.request.extension_size() as u32;
        config.synchronization_model = StorSynchronizeFullDuplex;
        config.hw_ms_interrupt_routine = Some(crate::hw::hw_message_interrupt);
        config.interrupt_synchronization_mode = InterruptSynchronizePerMessage;
        config.max_number_of_io = limits.max_ios;
        config.max_ios_per_lun = limits.ios_per_lun;
        config.initial_lun_queue_depth = limits.ios_per_lun;
        // SRB_FUNCTION_WMI is answered by `crate::wmi`.
        config.wmi_data_provider = TRUE;
    }

    /// The device extension this adapter lives in.
    #[must_use]
    pub const fn extension(&self) -> DeviceExtension {
        self.extension
    }

    /// The limits reported to StorPort.
    #[must_use]
    pub const fn limits(&self) -> &StorLimits {
        &self.limits
    }

    /// The device's limits.
    #[must_use]
    pub const fn device_limits(&self) -> &Limits {
        &self.device_limits
    }

    /// Features negotiated with the device.
    #[must_use]
    pub const fn features(&self) -> Features {
        self.features
    }

    /// Request queues in use.
    #[must_use]
    pub fn request_queues(&self) -> u16 {
        self.request_queues.load(Ordering::Relaxed)
    }

    /// How interrupts are delivered.
    #[must_use]
    pub fn mode(&self) -> InterruptMode {
        match self.mode.load(Ordering::Relaxed) {
            2 => InterruptMode::Shared,
            3 => InterruptMode::Line,
            _ => InterruptMode::PerQueue,
        }
    }

    /// Where synthesised identifiers for `target`/`lun` come from.
    #[must_use]
    pub const fn location(&self, target: u8, lun: u16) -> LunLocation {
        LunLocation {
            bus: self.bus,
            slot: self.slot,
            target,
            lun,
        }
    }

    /// Identity and sizes the WMI classes report.
    #[must_use]
    pub const fn wmi_facts(&self) -> crate::wmi::AdapterFacts {
        self.wmi_facts
    }

    /// The LUN table.
    #[must_use]
    pub const fn luns(&self) -> &LunTable<Carved<LunSlot>> {
        &self.luns
    }

    /// The WMI scratch area.
    #[must_use]
    pub const fn wmi_scratch(&self) -> &crate::wmi::WmiScratch {
        &self.wmi_scratch
    }

    /// The event queue's state: removed units, counters ([`crate::events`]).
    #[must_use]
    pub const fn events(&self) -> &EventQueue {
        &self.events
    }

    /// The task management slots (their counters: `tmfs().counters`).
    #[must_use]
    pub const fn tmfs(&self) -> &TmfTable<Carved<TmfSlot>> {
        &self.tmfs
    }

    /// Recovery and lifecycle counters.
    #[must_use]
    pub const fn recovery(&self) -> &RecoveryCounters {
        &self.recovery
    }

    /// Whether the adapter is stopped (ScsiStopAdapter until ScsiRestartAdapter).
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        // ORDERING: pairs with the Release stores in `stop` and `restart`; readers that must
        // not race a stop read it under a queue lock, which orders it anyway.
        self.stopped.load(Ordering::Acquire)
    }

    /// Counters of request queue `queue`.
    #[must_use]
    pub fn counters(&self, queue: u16) -> Option<&QueueCounters> {
        let table: &[QueueCounters] = core::borrow::Borrow::borrow(&self.counters);
        table.get(usize::from(queue))
    }

    /// The MSI-X message of virtqueue `index` in per-queue mode (message 0 is configuration).
    #[must_use]
    pub const fn vector_of_queue(index: u16) -> u16 {
        index + 1
    }

    /// HwInitialize: decides the interrupt mode from the messages StorPort connected, sets up
    /// every queue with its vector and sets DRIVER_OK. Runs before any I/O, with StorPort's
    /// interrupt lock held.
    pub fn initialize(&self) -> bool {
        let mut messages = 0u16;
        // The dump port connects no interrupt at all (it polls HwInterrupt): line mode, which
        // programs no MSI-X vector, whatever messages the function has.
        while self.dump.is_none()
            && messages < MAX_REQUEST_QUEUES + 3
            && self.extension.msi_info(u32::from(messages)).is_some()
        {
            messages += 1;
        }
        let prepared_requests = self.prepared_queues - queue_index::REQUEST_BASE;
        let (mode, request_queues) = if messages >= 4 {
            (InterruptMode::PerQueue, prepared_requests.min(messages - 3))
        } else if messages >= 1 {
            (InterruptMode::Shared, prepared_requests)
        } else {
            (InterruptMode::Line, prepared_requests)
        };
        self.mode.store(mode as u8, Ordering::Relaxed);
        self.request_queues.store(request_queues, Ordering::Relaxed);
        self.trace(
            TraceEvent::Initialized,
            ADAPTER_WIDE,
            (mode as u32, u64::from(messages), u64::from(request_queues)),
        );
        // SAFETY: HwInitialize runs before any I/O, interrupt or timer of this adapter: nothing
        // else reaches the transport.
        let transport = unsafe { &mut *self.transport.get() };
        if self.start_queues(transport).is_err() {
            return false;
        }
        // The health timer (no timer at all on the dump stack: `arm_timer`).
        self.arm_timer();
        // Without passive initialisation (a StorPort that offers the miniport no DPCs) there
        // are no queue DPCs: the ISR completes requests itself. The dump stack must not even be
        // asked (see `crate::dump`).
        if self.dump.is_none() {
            let _dpcs_offered = self
                .extension
                .enable_passive_initialization(Some(crate::hw::hw_passive_initialize));
        }
        true
    }

    /// Virtqueues in use: controlq, eventq and the request queues.
    fn active_queues(&self) -> u16 {
        self.request_queues() + queue_index::REQUEST_BASE
    }

    /// Sets every active queue up on the device and sets DRIVER_OK. Called with no I/O possible
    /// (initialize) or holding every queue lock (reset, restart), which is what makes the
    /// queue cells exclusively ours here.
    fn start_queues(
        &self,
        transport: &mut PciTransport<StorPortRegisters>,
    ) -> Result<(), AdapterError> {
        let mode = self.mode();
        let msix = mode != InterruptMode::Line;
        if msix {
            transport.set_config_msix_vector(Some(0))?;
        }
        for index in 0..self.active_queues() {
            // SAFETY: as above: no other context touches queue state during setup.
            let Some(queue) = (unsafe { self.queue_cell(index) }) else {
                return Err(AdapterError::OutOfMemory);
            };
            let vector = match mode {
                InterruptMode::PerQueue => Some(Self::vector_of_queue(index)),
                InterruptMode::Shared => Some(0),
                InterruptMode::Line => None,
            };
            let ring = queue.ring.queue();
            let notifier = transport.setup_queue(index, ring.size(), ring.addresses(), vector)?;
            queue.notify_offset = notifier.offset();
        }
        transport.driver_ok()?;
        self.events.started(transport);
        // The eventq is stocked from DRIVER_OK on (the device must not be notified before).
        // SAFETY: as above: the callers' exclusive access covers the eventq too.
        if let Some(eventq) = unsafe { self.queue_cell(queue_index::EVENT) }
            && let Some(offset) = self.events.stock(eventq)
        {
            self.notify_virtqueue(queue_index::EVENT, offset);
        }
        Ok(())
    }

    /// The state of virtqueue `index`.
    ///
    /// # Safety
    /// The caller holds the queue's lock (or otherwise has exclusive access: setup with no
    /// I/O possible), and does not keep the reference past it.
    #[expect(
        clippy::mut_from_ref,
        reason = "interior mutability guarded by the queue lock"
    )]
    unsafe fn queue_cell(&self, index: u16) -> Option<&mut QueueState> {
        let table: &[UnsafeCell<Option<QueueState>>] = core::borrow::Borrow::borrow(&self.queues);
        let cell = table.get(usize::from(index))?;
        // SAFETY: the caller's lock makes this the only access to the cell.
        unsafe { (*cell.get()).as_mut() }
    }

    /// PassiveInitialize: per-queue DPCs and StorPort's performance options (concurrent
    /// StartIo channels, completion DPCs redirected to the submitting processor).
    pub fn passive_initialize(&self) -> bool {
        for queue in 0..self.request_queues() {
            if let Some(dpc) = self.dpc(queue) {
                self.extension
                    .initialize_dpc(dpc, Some(crate::hw::hw_queue_dpc));
            }
        }
        // ORDERING: the DPC objects must be initialised before an ISR on another processor
        // sees `dpc_ready` and issues one; pairs with the acquire load in `on_queue_interrupt`.
        self.dpc_ready.store(true, Ordering::Release);
        let mut perf = crate::storport::PerfConfigurationData::zeroed();
        perf.version = crate::storport::STOR_PERF_VERSION_2;
        perf.size = size_of::<crate::storport::PerfConfigurationData>() as u32;
        if self.extension.perf_opts(true, &mut perf) {
            let supported = perf.flags;
            let mut wanted = crate::storport::STOR_PERF_CONCURRENT_CHANNELS;
            if self.mode() == InterruptMode::PerQueue {
                // Completions on the submitting processor: StorPort's completion DPCs go where
                // each request came from, and with the request queues' messages as the
                // redirection range, StorPortGetStartIoPerfParams names for each processor the
                // message (so the queue) that interrupts on it; the device's interrupt, our
                // ISR, our DPC and RequestComplete then all run on the submitter.
                wanted |= crate::storport::STOR_PERF_DPC_REDIRECTION
                    | crate::storport::STOR_PERF_INTERRUPT_MESSAGE_RANGES;
                perf.first_redirection_message_number =
                    u32::from(Self::vector_of_queue(queue_index::REQUEST_BASE));
                perf.last_redirection_message_number = u32::from(Self::vector_of_queue(
                    queue_index::REQUEST_BASE + self.request_queues() - 1,
                ));
            }
            perf.flags = supported & wanted;
            perf.concurrent_channels = u32::from(self.request_queues());
            // A refusal leaves StorPort's defaults (StartIo serialised), which our per-queue
            // locks handle as well.
            let applied = self.extension.perf_opts(false, &mut perf);
            self.message_ranges.store(
                applied && perf.flags & crate::storport::STOR_PERF_INTERRUPT_MESSAGE_RANGES != 0,
                Ordering::Relaxed,
            );
        }
        true
    }

    /// The DPC object of request queue `queue`.
    fn dpc(&self, queue: u16) -> Option<NonNull<StorDpc>> {
        let table: &[QueueDpc] = core::borrow::Borrow::borrow(&self.dpcs);
        table
            .get(usize::from(queue))
            .map(|dpc| NonNull::from(&dpc.0))
    }

    /// The request queue `srb`, submitted on the current processor, goes to: with message
    /// ranges, the queue of the message StorPort names for this processor (so that it
    /// completes here); otherwise the processor number modulo the queues.
    #[must_use]
    pub fn queue_for_request(&self, srb: &crate::srb::Srb) -> u16 {
        let queues = self.request_queues().max(1);
        // One queue (always so in dump mode): no need to ask StorPort where we run.
        if queues == 1 {
            return 0;
        }
        if self.message_ranges.load(Ordering::Relaxed) {
            let first = u32::from(Self::vector_of_queue(queue_index::REQUEST_BASE));
            if let Some(queue) = self
                .extension
                .start_io_message(srb)
                .and_then(|message| message.checked_sub(first))
                .and_then(|queue| u16::try_from(queue).ok())
                .filter(|&queue| queue < queues)
            {
                return queue;
            }
        }
        fold_onto_queues(self.extension.current_processor(), queues)
    }

    /// Acquires the lock that guards the queues of MSI-X message `message` in per-queue mode
    /// (the one shared message's lock, or the interrupt lock, in the other modes).
    fn acquire(&self, message: u32) -> Held {
        match self.mode() {
            InterruptMode::PerQueue => {
                let old_irql = self.extension.acquire_msi_lock(message);
                Held::Msi { message, old_irql }
            }
            InterruptMode::Shared => {
                let old_irql = self.extension.acquire_msi_lock(0);
                Held::Msi {
                    message: 0,
                    old_irql,
                }
            }
            InterruptMode::Line => self.acquire_interrupt_lock(),
        }
    }

    /// Acquires StorPort's interrupt lock: every message's lock in per-message mode.
    fn acquire_interrupt_lock(&self) -> Held {
        // SAFETY: the handle lives in the adapter (fixed address) and is touched only by the
        // lock holder, which we are about to become.
        unsafe {
            self.extension
                .acquire_interrupt_lock(self.interrupt_lock.get());
        }
        Held::Interrupt
    }

    /// Releases what [`Adapter::acquire`] took.
    fn release(&self, how: Held) {
        match how {
            Held::Msi { message, old_irql } => {
                self.extension.release_msi_lock(message, old_irql);
            }
            // SAFETY: the guard being dropped acquired the interrupt lock with this handle.
            Held::Interrupt => unsafe {
                self.extension
                    .release_interrupt_lock(self.interrupt_lock.get());
            },
            Held::ByCaller => {}
        }
    }

    /// Locks request queue `queue` (its MSI-X message lock, or the interrupt lock).
    #[must_use]
    pub fn lock(&self, queue: u16) -> QueueGuard<'_> {
        let message = u32::from(Self::vector_of_queue(queue + queue_index::REQUEST_BASE));
        QueueGuard {
            adapter: self,
            queue,
            how: self.acquire(message),
        }
    }

    /// A guard for `queue` whose lock StorPort already holds (inside the ISR for its message).
    ///
    /// # Safety
    /// The caller runs in the ISR whose lock guards `queue` (per-queue: that queue's message;
    /// shared: message 0; line: the interrupt lock), or holds that lock otherwise.
    #[must_use]
    pub unsafe fn assume_locked(&self, queue: u16) -> QueueGuard<'_> {
        QueueGuard {
            adapter: self,
            queue,
            how: Held::ByCaller,
        }
    }

    /// Locks the controlq (its MSI-X message lock, or the one lock of the other modes).
    #[must_use]
    pub fn lock_control(&self) -> VirtqueueGuard<'_> {
        VirtqueueGuard {
            adapter: self,
            index: queue_index::CONTROL,
            how: self.acquire(u32::from(Self::vector_of_queue(queue_index::CONTROL))),
        }
    }

    /// A guard for virtqueue `index` (the controlq or the eventq) whose lock StorPort already
    /// holds (inside the ISR for its message).
    ///
    /// # Safety
    /// The caller runs in the ISR whose lock guards virtqueue `index` (per-queue: its message;
    /// shared: message 0; line: the interrupt lock), or holds that lock otherwise.
    #[must_use]
    pub unsafe fn assume_virtqueue_locked(&self, index: u16) -> VirtqueueGuard<'_> {
        VirtqueueGuard {
            adapter: self,
            index,
            how: Held::ByCaller,
        }
    }

    /// Notifies the device of new requests on request queue `queue` (after unlocking).
    pub fn notify(&self, queue: u16, offset: u64) {
        // Counted before the write: the device may complete the request inside it.
        if let Some(counters) = self.counters(queue) {
            counters.kicks.fetch_add(1, Ordering::Relaxed);
        }
        self.notify_virtqueue(queue + queue_index::REQUEST_BASE, offset);
    }

    /// Notifies the device of new buffers on virtqueue `index`, whose notification address is
    /// at `offset` in the notify BAR (after unlocking, or from the ISR that owns the queue).
    pub fn notify_virtqueue(&self, index: u16, offset: u64) {
        // ORDERING: the ring updates (descriptors, then the available index published with
        // release by the queue) must be visible before the device reacts to the notification
        // (virtio 1.x section 2.7.13 step 4 / 2.8.21). Pairs with the device's read of the
        // available index after the notification; the register routine orders the MMIO store.
        fence(Ordering::SeqCst);
        self.registers.write16(self.notify_bar, offset, index);
    }

    /// Handles MSI message `message`; true if it was ours.
    pub fn on_message(&self, message: u32) -> bool {
        match self.mode() {
            InterruptMode::PerQueue => {
                let Some(index) = message.checked_sub(1) else {
                    self.on_config_interrupt();
                    return true;
                };
                let Ok(index) = u16::try_from(index) else {
                    return false;
                };
                if index == queue_index::EVENT {
                    self.on_event_interrupt();
                    return true;
                }
                if index == queue_index::CONTROL {
                    self.on_control_interrupt();
                    return true;
                }
                let Some(queue) = index.checked_sub(queue_index::REQUEST_BASE) else {
                    return false;
                };
                if queue >= self.request_queues() {
                    return false;
                }
                self.on_queue_interrupt(queue);
                true
            }
            InterruptMode::Shared => {
                // One message for everything: the configuration is checked on each (its
                // interrupt carries no ISR bit a driver may rely on with MSI-X, virtio 1.x
                // section 4.1.5.3).
                self.on_config_interrupt();
                self.on_every_queue();
                true
            }
            InterruptMode::Line => self.on_line_interrupt(),
        }
    }

    /// HwInterrupt (line-based): reads and clears the ISR status; true if the device
    /// interrupted. In dump mode, the dump port's poll.
    pub fn on_line_interrupt(&self) -> bool {
        if self.dump.is_some() {
            // The dump port's poll, not an interrupt.
            return self.poll();
        }
        // SAFETY: in line mode the ISR holds the interrupt lock, which the reset path also
        // takes, so the transport is not being mutated.
        let isr = unsafe { &*self.transport.get() }.read_isr();
        if isr.is_empty() {
            return false;
        }
        if isr.contains(Isr::CONFIG) {
            self.on_config_interrupt();
        }
        self.on_every_queue();
        true
    }

    /// The ISR of the one message (or line) every queue shares: the eventq, the controlq, then
    /// each request queue.
    fn on_every_queue(&self) {
        self.on_event_interrupt();
        self.on_control_interrupt();
        for queue in 0..self.request_queues() {
            self.on_queue_interrupt(queue);
        }
    }

    /// The configuration-change interrupt, in the ISR that owns it (message 0, the shared
    /// message, or the line ISR): re-reads the configuration ([`EventQueue::on_config_change`]).
    /// A device that set `DEVICE_NEEDS_RESET` (or changed the request layout) is reset by the
    /// timer, an ISR not being able to take every queue lock; the timer's health check reads
    /// `DEVICE_NEEDS_RESET` as well, so one missed configuration interrupt delays the reset by
    /// at most [`HEALTH_PERIOD_MICROSECONDS`].
    fn on_config_interrupt(&self) {
        // SAFETY: the ISR for message 0 (or the shared/line ISR) holds a lock the reset path
        // takes too (`lock_all`), so the transport is not being mutated; it is only read here.
        let transport = unsafe { &*self.transport.get() };
        if self.events.on_config_change(self, transport) {
            self.reset_later(ResetCause::DeviceNeedsReset);
        }
    }

    /// The eventq's interrupt, in the ISR that owns it (message 2, the shared message, or the
    /// line ISR): see [`EventQueue::drain`].
    fn on_event_interrupt(&self) {
        // SAFETY: we run in the ISR whose lock guards the eventq (see the callers).
        let mut guard = unsafe { self.assume_virtqueue_locked(queue_index::EVENT) };
        if self.events.drain(self, &mut guard) {
            self.reset_later(ResetCause::ProtocolViolation);
        }
    }

    /// The controlq's interrupt, in the ISR that owns it (message 1, the shared message, or
    /// the line ISR): records the answers of task management functions.
    fn on_control_interrupt(&self) {
        // SAFETY: we run in the ISR whose lock guards the controlq (see the callers).
        let mut guard = unsafe { self.assume_virtqueue_locked(queue_index::CONTROL) };
        self.drain_control(&mut guard, true);
    }

    /// Asks the timer to reset the device for `cause`, right after this ISR (or this context,
    /// which holds a queue lock): the reset takes every lock. If a reset is already pending,
    /// its first cause is kept. Never in dump mode, where the poll resets inline.
    fn reset_later(&self, cause: ResetCause) {
        // ORDERING: relaxed; the timer request in `kick_timer` is StorPort's, which orders it
        // before the timer routine on any processor (a lock hand-over inside StorPort).
        let _ = self.reset_requested.compare_exchange(
            0,
            cause as u32,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.kick_timer();
    }

    /// Takes the reset cause [`Self::reset_later`] left for the timer, if any.
    fn take_reset_request(&self) -> Option<ResetCause> {
        // ORDERING: relaxed; see `reset_later`.
        match self.reset_requested.swap(0, Ordering::Relaxed) {
            0 => None,
            raw if raw == ResetCause::DeviceNeedsReset as u32 => Some(ResetCause::DeviceNeedsReset),
            _ => Some(ResetCause::ProtocolViolation),
        }
    }

    /// Whether `device_status` has `DEVICE_NEEDS_RESET`. A device that reads all ones is gone
    /// (surprise removal), not asking for a reset.
    fn device_needs_reset(&self) -> bool {
        let (bar, offset) = self.status_register;
        let status = self.registers.read8(bar, offset);
        status != 0xFF
            && DeviceStatus::from_bits_retain(status).contains(DeviceStatus::DEVICE_NEEDS_RESET)
    }

    fn on_queue_interrupt(&self, queue: u16) {
        if let Some(counters) = self.counters(queue) {
            counters.interrupts.fetch_add(1, Ordering::Relaxed);
        }
        // ORDERING: pairs with the release store in `passive_initialize`.
        if self.dpc_ready.load(Ordering::Acquire)
            && let Some(dpc) = self.dpc(queue)
        {
            let _already_queued = !self.extension.issue_dpc(dpc, usize::from(queue));
        } else {
            // SAFETY: we are in the ISR for this queue's message, whose lock StorPort holds.
            let mut guard = unsafe { self.assume_locked(queue) };
            if crate::io::drain(&mut guard) {
                // The device broke the protocol. The reset takes every queue lock, which an ISR
                // holding one of them cannot do: StorPort's timer runs it right after, with no
                // queue lock held.
                self.reset_later(ResetCause::ProtocolViolation);
            }
        }
    }

    /// The queue DPC: drains request queue `queue` under its lock.
    pub fn on_dpc(&self, queue: u16) {
        if queue >= self.request_queues() {
            return;
        }
        let reset = {
            let mut guard = self.lock(queue);
            crate::io::drain(&mut guard)
        };
        if reset {
            self.reset_device(ResetCause::ProtocolViolation);
        }
    }

    /// Pops the controlq's used chains and records each function's answer in its slot. A used
    /// chain that names no function in flight is a protocol violation: the timer resets the
    /// device. With `kick`, the timer is asked to run now to act on the answers.
    fn drain_control(&self, guard: &mut VirtqueueGuard<'_>, kick: bool) {
        let mut answered = false;
        let mut broken = false;
        while let Some(state) = guard.state() {
            match state.ring.queue().pop_used() {
                Ok(Some(used)) => {
                    let tokens: &mut [usize] =
                        core::borrow::BorrowMut::borrow_mut(&mut state.requests);
                    let slot = tokens
                        .get_mut(used.token.index())
                        .map_or(0, core::mem::take);
                    if slot == 0 || !self.tmfs.answer(slot - 1, used.written) {
                        self.trace(
                            TraceEvent::ProtocolViolation,
                            queue_index::CONTROL,
                            (
                                ViolationKind::UnknownUsedId as u32,
                                used.token.index() as u64,
                                0,
                            ),
                        );
                        broken = true;
                        break;
                    }
                    answered = true;
                }
                Ok(None) => {
                    if !state.ring.queue().enable_interrupts() {
                        break;
                    }
                }
                Err(_) => {
                    self.trace(
                        TraceEvent::ProtocolViolation,
                        queue_index::CONTROL,
                        (ViolationKind::RingError as u32, 0, 0),
                    );
                    broken = true;
                    break;
                }
            }
        }
        if broken {
            // ORDERING: relaxed; see `reset_later` (which this is, but for the kick).
            let _ = self.reset_requested.compare_exchange(
                0,
                ResetCause::ProtocolViolation as u32,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        if kick && (answered || broken) {
            self.kick_timer();
        }
    }

    /// Sends task management function `nexus` on the controlq; `owner` is the SRB it completes.
    ///
    /// # Errors
    /// [`PostError`], with the owner handed back: the adapter is stopped, or the function
    /// could not be sent (no free slot, controlq full).
    pub fn post_tmf(&self, nexus: Nexus, owner: Option<Owner>) -> Result<(), PostError> {
        let queues = self.request_queues();
        let mut counts = [0u64; MAX_REQUEST_QUEUES as usize];
        for (queue, count) in counts.iter_mut().enumerate().take(usize::from(queues)) {
            // Read under the queue's lock, under which StartIo numbers each request, so every
            // request already on that ring is below the count and every later one is not.
            let guard = self.lock(queue as u16);
            *count = self
                .counters(queue as u16)
                .map_or(0, |counters| counters.requests.load(Ordering::Relaxed));
            drop(guard);
        }
        let now = self.extension.system_time();
        let Some((claim, readable, writable)) = self.tmfs.claim(nexus, owner, now, queues, |q| {
            counts.get(usize::from(q)).copied().unwrap_or(0)
        }) else {
            return Err(PostError::NotSent(owner));
        };
        let notify = {
            let mut guard = self.lock_control();
            if self.is_stopped() {
                drop(guard);
                return Err(PostError::Stopped(self.tmfs.release(claim)));
            }
            let Some(state) = guard.state() else {
                drop(guard);
                return Err(PostError::NotSent(self.tmfs.release(claim)));
            };
            let ring = state.ring.queue();
            let Ok(token) = ring.add(&[readable], &[writable], None) else {
                drop(guard);
                return Err(PostError::NotSent(self.tmfs.release(claim)));
            };
            let tokens: &mut [usize] = core::borrow::BorrowMut::borrow_mut(&mut state.requests);
            if let Some(entry) = tokens.get_mut(token.index()) {
                *entry = claim.index() + 1;
            }
            // Posted before the lock drops: the answer is recorded under this lock and needs
            // the slot posted.
            self.tmfs.posted(claim);
            self.tmfs.counters.count_sent(nexus);
            self.trace(
                TraceEvent::TmfSent,
                queue_index::CONTROL,
                nexus.trace_args(),
            );
            let kick = state.ring.queue().kick_prepare();
            kick.then_some(state.notify_offset)
        };
        if let Some(offset) = notify {
            self.notify_virtqueue(queue_index::CONTROL, offset);
        }
        // The timer watches the deadline, at the short period from now on.
        self.kick_timer();
        Ok(())
    }

    /// Drains every request queue, each under its lock (completions whose interrupt has not
    /// come, or never will). Returns true if the device broke the protocol.
    pub fn poll_all(&self) -> bool {
        let mut reset = false;
        for queue in 0..self.request_queues() {
            let mut guard = self.lock(queue);
            reset |= crate::io::drain(&mut guard);
        }
        reset
    }

    /// Calls `visit` for every request in flight, queue by queue, each under its lock.
    pub fn for_each_in_flight(&self, mut visit: impl FnMut(&crate::io::InFlight)) {
        for queue in 0..self.request_queues() {
            let mut guard = self.lock(queue);
            crate::io::scan_in_flight(&mut guard, &mut visit);
        }
    }

    /// Completes the SRB a task management slot handed back, with `status`.
    pub fn complete_owner(&self, owner: Owner, status: u8) {
        // SAFETY: an `Owner` comes out of a slot only once (claim release, finish or
        // resolve, each behind a compare-exchange), and it holds an SRB StorPort handed to
        // StartIo, validated by BuildIo and not completed since.
        unsafe { crate::io::complete_kept(self, owner.srb, owner.extended, status) };
    }

    /// The timer's work on task management functions at time `now`: records answers whose
    /// interrupt was lost, then ends, keeps waiting for, or escalates each function (see
    /// [`crate::tmf::decide`]).
    fn service_tmfs(&self, now: u64) {
        if !self.tmfs.any_active() {
            return;
        }
        {
            let mut guard = self.lock_control();
            self.drain_control(&mut guard, false);
        }
        let mut drained = false;
        let mut escalate = false;
        self.tmfs.for_each_active(|active| {
            if escalate {
                return;
            }
            let covered = if matches!(active.answer, Answer::Outcome(_)) {
                if !drained {
                    // The device completed what it took back before it answered: collect
                    // those completions before counting what is left.
                    escalate |= self.poll_all();
                    drained = true;
                }
                self.covered_in_flight(&active)
            } else {
                0
            };
            let elapsed = now.saturating_sub(active.posted_at);
            match crate::tmf::decide(active.answer, covered, elapsed) {
                Decision::Wait => {
                    if covered > 0 {
                        self.tmfs.mark_waiting(&active);
                    }
                }
                Decision::Complete(ending) => {
                    if let Some(ended) = self.tmfs.finish(&active) {
                        let counters = &self.tmfs.counters;
                        let counter = match ending {
                            Ending::Done => &counters.completed,
                            Ending::AbsentNexus => &counters.absent_nexus,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        if active.was_waiting() {
                            counters.waited.fetch_add(1, Ordering::Relaxed);
                        }
                        self.trace(
                            TraceEvent::TmfDone,
                            queue_index::CONTROL,
                            active.trace_args(),
                        );
                        if let Some(owner) = ended.owner {
                            self.complete_owner(owner, SRB_STATUS_SUCCESS);
                        }
                    }
                }
                Decision::Escalate(why) => {
                    self.tmfs.counters.count_escalation(why);
                    escalate = true;
                }
            }
        });
        if escalate {
            // The reset ends every function, this one included (its TmfDone is recorded then,
            // after the reset's own record).
            self.reset_device(ResetCause::TmfEscalation);
        }
    }

    /// Requests in flight that `active` covers.
    fn covered_in_flight(&self, active: &Active) -> u32 {
        let mut covered = 0u32;
        self.for_each_in_flight(|request| {
            if self.tmfs.covers(active, request) {
                covered += 1;
            }
        });
        covered
    }

    /// HwTimer: every deferred piece of work (see the module documentation), then the next
    /// timer request. Runs at DISPATCH_LEVEL with no queue lock held.
    pub fn on_timer(&self) {
        self.timer_kick.store(false, Ordering::Relaxed);
        // ORDERING: the kick flag was cleared before anything this run looks at, so a kick
        // that arrives from here on is seen by `arm_timer`'s check (pairs with the fence in
        // `kick_timer`).
        fence(Ordering::SeqCst);
        if self.is_stopped() {
            // Nothing is in flight, and the timer stays off until ScsiRestartAdapter.
            return;
        }
        let requested = self.take_reset_request();
        let cause = if self.device_needs_reset() {
            self.recovery.needs_reset.fetch_add(1, Ordering::Relaxed);
            Some(ResetCause::DeviceNeedsReset)
        } else {
            requested
        };
        if let Some(cause) = cause {
            self.reset_device(cause);
        }
        let now = self.extension.system_time();
        let last = self.last_health.load(Ordering::Relaxed);
        // A system time that went backwards counts as a period gone, so polling never stops.
        if now < last || now - last >= HEALTH_PERIOD {
            self.last_health.store(now, Ordering::Relaxed);
            self.find_lost_interrupts();
        }
        self.service_tmfs(now);
        self.arm_timer();
    }

    /// Drains each request queue whose completions have waited a whole health period: their
    /// interrupt was lost (or a device that completes without interrupting).
    fn find_lost_interrupts(&self) {
        let seen_before = self.used_seen.load(Ordering::Relaxed);
        let mut seen = 0u64;
        let mut reset = false;
        for queue in 0..self.request_queues().min(64) {
            let bit = 1u64 << queue;
            let mut guard = self.lock(queue);
            let waiting = guard
                .state()
                .is_some_and(|state| state.ring.queue().has_used());
            if !waiting {
                continue;
            }
            if seen_before & bit == 0 {
                seen |= bit;
                continue;
            }
            self.recovery
                .lost_interrupts
                .fetch_add(1, Ordering::Relaxed);
            reset |= crate::io::drain(&mut guard);
        }
        self.used_seen.store(seen, Ordering::Relaxed);
        if reset {
            self.reset_device(ResetCause::ProtocolViolation);
        }
    }

    /// Asks StorPort for the next timer call: soon while a task management function is out,
    /// at the health period otherwise. Never in dump mode: the dump port has no timer (asking
    /// for one there is a contract violation, see [`crate::dump`]).
    fn arm_timer(&self) {
        if self.dump.is_some() {
            return;
        }
        let period = if self.tmfs.any_active() {
            TMF_POLL_MICROSECONDS
        } else {
            HEALTH_PERIOD_MICROSECONDS
        };
        self.extension
            .request_timer(Some(crate::hw::hw_timer), period);
        // ORDERING: the request above replaced any kick made while this run was going on; the
        // fence orders it before the flag's load, pairing with the fence in `kick_timer`: either
        // this load sees the kicker's flag (and renews the kick), or the kicker's request comes
        // after ours (and stands).
        fence(Ordering::SeqCst);
        if self.timer_kick.load(Ordering::Relaxed) {
            self.extension
                .request_timer(Some(crate::hw::hw_timer), KICK_MICROSECONDS);
        }
    }

    /// Asks for the timer to run now (from an ISR, or a context that must not do the work
    /// itself). Nothing in dump mode, which has no timer (and no work for one: its poll resets
    /// the device inline and it sends no task management function).
    pub fn kick_timer(&self) {
        if self.dump.is_some() {
            return;
        }
        self.timer_kick.store(true, Ordering::Relaxed);
        // ORDERING: pairs with the fence in `arm_timer` (see there).
        fence(Ordering::SeqCst);
        self.extension
            .request_timer(Some(crate::hw::hw_timer), KICK_MICROSECONDS);
    }

    /// Resets the device for `cause`: completes what it had finished, fails every other request
    /// in flight with SRB_STATUS_BUS_RESET, ends every task management function, then brings
    /// the queues back and restocks the eventq. Only one context resets at a time; a second
    /// caller returns at once (the reset it would do is under way). Call with no queue lock
    /// held. Returns false if the device could not be brought back (it is then failed).
    pub fn reset_device(&self, cause: ResetCause) -> bool {
        self.reset_device_with(cause, false)
    }

    /// [`Self::reset_device`], from a context that holds StorPort's interrupt lock when
    /// `interrupt_lock_held` (which is every queue's lock already: the dump port's poll).
    pub(crate) fn reset_device_with(&self, cause: ResetCause, interrupt_lock_held: bool) -> bool {
        // ORDERING: the flag only elects one resetter; the queue locks order everything the
        // reset touches. Acquire pairs with the Release below of the previous reset, so a new
        // winner starts after the last one finished.
        if self
            .resetting
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return true;
        }
        let mut restarted = true;
        let mut reset = false;
        {
            let locks = self.lock_all(interrupt_lock_held);
            // A stopped adapter has nothing in flight and its device stays reset until
            // ScsiRestartAdapter.
            if !self.is_stopped() {
                reset = true;
                let resets = self.resets.fetch_add(1, Ordering::Relaxed) + 1;
                self.trace(
                    TraceEvent::DeviceReset,
                    ADAPTER_WIDE,
                    (cause as u32, resets, 0),
                );
                let transport = self.take_everything_back(&locks);
                restarted = self.bring_up(transport).is_ok();
                if !restarted {
                    transport.fail();
                    self.recovery
                        .bring_up_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.end_every_tmf(restarted);
            }
        }
        // ORDERING: pairs with the Acquire of the next winner's compare-exchange above.
        self.resetting.store(false, Ordering::Release);
        self.extension.reset_detected();
        if reset {
            self.events.restarted(self);
        }
        restarted
    }

    /// Negotiates again and sets the queues up, insisting on the state find-adapter
    /// established: the same features and limits (so the same queue count), and the same queue
    /// sizes (the rings are reused as they are; a device that now offers less fails setup).
    fn bring_up(
        &self,
        transport: &mut PciTransport<StorPortRegisters>,
    ) -> Result<(), AdapterError> {
        let accepted = transport.begin_init(self.features)?;
        if accepted != self.features {
            return Err(AdapterError::FeaturesChanged { accepted });
        }
        if Self::configure_device(transport)? != self.device_limits {
            return Err(AdapterError::LimitsChanged);
        }
        self.start_queues(transport)
    }

    /// Ends every task management function after a device reset (every queue lock held): their
    /// SRBs complete with SUCCESS if the device came back, SRB_STATUS_ERROR if not.
    fn end_every_tmf(&self, restarted: bool) {
        let status = if restarted {
            SRB_STATUS_SUCCESS
        } else {
            SRB_STATUS_ERROR
        };
        self.tmfs.resolve_all(|active, owner| {
            self.trace(
                TraceEvent::TmfDone,
                queue_index::CONTROL,
                active.trace_args(),
            );
            if let Some(owner) = owner {
                self.complete_owner(owner, status);
            }
        });
    }

    /// ScsiStopAdapter: resets the device (it stops using every buffer) and marks the adapter
    /// stopped; requests in flight are completed with SRB_STATUS_BUS_RESET (StorPort normally
    /// drains them first), task management functions end.
    pub fn stop(&self) {
        self.trace(TraceEvent::Stopped, ADAPTER_WIDE, (0, 0, 0));
        // StorPort calls ScsiStopAdapter at DIRQL holding the interrupt lock, which is every
        // queue's lock (every message's, with per-message synchronisation): taking any of them
        // here would spin forever on a lock this processor holds.
        let locks = self.lock_all(true);
        // ORDERING: Release pairs with `is_stopped`'s Acquire; StartIo reads it under a queue
        // lock held here, so no request reaches a ring once this store is made.
        self.stopped.store(true, Ordering::Release);
        let _ = self.take_everything_back(&locks);
        self.end_every_tmf(true);
        self.recovery.stops.fetch_add(1, Ordering::Relaxed);
        drop(locks);
        // Zero microseconds cancels the pending timer request (the dump stack has none).
        if self.dump.is_none() {
            self.extension.request_timer(Some(crate::hw::hw_timer), 0);
        }
    }

    /// ScsiRestartAdapter: renegotiates and sets the queues up again, as after power-up, with
    /// the state find-adapter established (see `Adapter::bring_up`); false if the device
    /// cannot be brought back that way (it is then failed and the adapter stays stopped).
    pub fn restart(&self) -> bool {
        // Under StorPort's interrupt lock, as ScsiStopAdapter (see `stop`).
        let locks = self.lock_all(true);
        let transport = self.transport_of(&locks);
        let restarted = self.bring_up(transport).is_ok();
        if restarted {
            // ORDERING: Release pairs with `is_stopped`'s Acquire: the queues set up above are
            // published before StartIo sees the adapter running.
            self.stopped.store(false, Ordering::Release);
            self.recovery.restarts.fetch_add(1, Ordering::Relaxed);
        } else {
            transport.fail();
            self.recovery
                .bring_up_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        drop(locks);
        if restarted {
            self.used_seen.store(0, Ordering::Relaxed);
            self.arm_timer();
            self.events.restarted(self);
        }
        self.trace(
            TraceEvent::Restarted,
            ADAPTER_WIDE,
            (u32::from(restarted), 0, 0),
        );
        restarted
    }

    /// Every queue's lock (the module documentation has why it is one lock): StorPort's
    /// interrupt lock, taken here unless the caller runs under it already
    /// (`interrupt_lock_held`: HwInitialize, ScsiStopAdapter, ScsiRestartAdapter, the dump
    /// port's poll). Released when the guard drops.
    fn lock_all(&self, interrupt_lock_held: bool) -> AllQueuesLocked<'_> {
        AllQueuesLocked {
            adapter: self,
            held: if interrupt_lock_held {
                Held::ByCaller
            } else {
                self.acquire_interrupt_lock()
            },
        }
    }

    /// The transport, for a holder of every lock.
    fn transport_of<'a>(
        &'a self,
        _locks: &'a AllQueuesLocked<'a>,
    ) -> &'a mut PciTransport<StorPortRegisters> {
        // SAFETY: the interrupt lock, every queue's lock, is held, so no StartIo, ISR, DPC or
        // timer touches the transport or the queues; the returned reference
        // borrows `_locks`, so it cannot outlive them, and callers take it once per hold.
        unsafe { &mut *self.transport.get() }
    }

    /// With every queue lock held: resets the device, completes what it had finished (their
    /// used elements are valid: written before the reset), fails every other request in
    /// flight with SRB_STATUS_BUS_RESET, and returns every ring to its initial state. Returns
    /// the transport for the caller to bring the device back (or not).
    fn take_everything_back<'a>(
        &'a self,
        locks: &'a AllQueuesLocked<'a>,
    ) -> &'a mut PciTransport<StorPortRegisters> {
        let transport = self.transport_of(locks);
        // Once the device reads back status 0 it no longer touches any buffer (virtio 1.x
        // section 2.4), so the requests in flight can be handed back.
        let _ = transport.reset();
        for queue in 0..self.request_queues() {
            // SAFETY: every queue lock is held (see `lock_all`).
            let mut guard = unsafe { self.assume_locked(queue) };
            crate::io::salvage(&mut guard);
            drop(guard);
            crate::io::fail_in_flight(self, queue);
        }
        for index in 0..self.active_queues() {
            // SAFETY: all locks held, as above.
            if let Some(state) = unsafe { self.queue_cell(index) } {
                state.ring.queue().reset();
                if index == queue_index::CONTROL {
                    let tokens: &mut [usize] =
                        core::borrow::BorrowMut::borrow_mut(&mut state.requests);
                    tokens.fill(0);
                }
            }
        }
        transport
    }

    /// Records `event` in the trace ring and prints it if the registry's level allows.
    pub fn trace(&self, event: TraceEvent, queue: u16, args: (u32, u64, u64)) {
        self.trace.record(event, queue, args);
        if event.print_level() <= self.debug_print_level {
            crate::port::debug_print(
                event.print_level(),
                event.name(),
                [u64::from(args.0), args.1, args.2],
            );
        }
    }

    /// The trace ring's records, oldest first (tests and diagnostics).
    pub fn trace_entries(&self) -> impl Iterator<Item = TraceEntry> + '_ {
        self.trace.entries()
    }

    /// Records what find-adapter decided, and every registry value it had to adjust.
    fn trace_found(&self, report: &Report) {
        for (index, outcome) in report.outcomes.iter().enumerate() {
            let (read, used) = match *outcome {
                ValueOutcome::Clamped(read, used) => (read, u64::from(used)),
                ValueOutcome::Refused(read) => (read, u64::MAX),
                ValueOutcome::Absent | ValueOutcome::Used(_) => continue,
            };
            self.trace(
                TraceEvent::RegistryAdjusted,
                ADAPTER_WIDE,
                (index as u32, u64::from(read), used),
            );
        }
        self.trace(
            TraceEvent::AdapterFound,
            ADAPTER_WIDE,
            (
                u32::from(self.prepared_queues - queue_index::REQUEST_BASE),
                self.features.bits(),
                u64::from(self.limits.physical_breaks),
            ),
        );
    }
}

/// Why a task management function was not sent; the owner comes back to be completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostError {
    /// The adapter is stopped: nothing is in flight, nothing to do.
    Stopped(Option<Owner>),
    /// No free slot, or the controlq is full.
    NotSent(Option<Owner>),
}

/// How a [`QueueGuard`]'s lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    /// We acquired this MSI message's lock.
    Msi { message: u32, old_irql: u32 },
    /// We acquired StorPort's interrupt lock (line mode's queue lock, or every queue's lock
    /// for `lock_all`).
    Interrupt,
    /// StorPort holds it for us (inside the ISR, or the interrupt lock around the routine), or
    /// the caller's `lock_all` does.
    ByCaller,
}

/// Proof that a request queue's lock is held; gives access to the queue's state.
#[derive(Debug)]
pub struct QueueGuard<'a> {
    adapter: &'a Adapter,
    queue: u16,
    how: Held,
}

impl<'a> QueueGuard<'a> {
    /// The adapter.
    #[must_use]
    pub const fn adapter(&self) -> &'a Adapter {
        self.adapter
    }

    /// The request queue number.
    #[must_use]
    pub const fn queue(&self) -> u16 {
        self.queue
    }

    /// The queue's state.
    pub fn state(&mut self) -> Option<&mut QueueState> {
        // SAFETY: this guard proves the queue's lock is held, and `&mut self` makes the
        // returned reference the only one derived from it.
        unsafe {
            self.adapter
                .queue_cell(self.queue + queue_index::REQUEST_BASE)
        }
    }
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        self.adapter.release(self.how);
    }
}

/// Proof that the lock of a virtqueue other than a request queue (the controlq or the eventq)
/// is held; gives access to its state.
#[derive(Debug)]
pub struct VirtqueueGuard<'a> {
    adapter: &'a Adapter,
    index: u16,
    how: Held,
}

impl<'a> VirtqueueGuard<'a> {
    /// The adapter.
    #[must_use]
    pub const fn adapter(&self) -> &'a Adapter {
        self.adapter
    }

    /// The virtqueue's state.
    pub fn state(&mut self) -> Option<&mut QueueState> {
        // SAFETY: this guard proves the virtqueue's lock is held, and `&mut self` makes the
        // returned reference the only one derived from it.
        unsafe { self.adapter.queue_cell(self.index) }
    }
}

impl Drop for VirtqueueGuard<'_> {
    fn drop(&mut self) {
        self.adapter.release(self.how);
    }
}

/// Every queue's lock, from [`Adapter::lock_all`]: StorPort's interrupt lock, which dropping
/// the guard releases if `lock_all` took it.
struct AllQueuesLocked<'a> {
    adapter: &'a Adapter,
    held: Held,
}

impl Drop for AllQueuesLocked<'_> {
    fn drop(&mut self) {
        self.adapter.release(self.held);
    }
}

/// The StorPort interrupt-lock kind (for the line-mode wrappers in `port`).
pub const LINE_LOCK: u32 = InterruptLock;

#[cfg(test)]
mod queue_choice_tests {
    use super::fold_onto_queues;

    #[test]
    fn processors_fold_onto_the_queues_without_leaving_them() {
        // Below the queue count, each processor has its own queue.
        for queues in 1..=8u16 {
            for processor in 0..u32::from(queues) {
                assert_eq!(u32::from(fold_onto_queues(processor, queues)), processor);
            }
        }
        // Past it, a valid queue, spread over the largest power-of-two count of queues.
        for queues in 1..=64u16 {
            for processor in 0..1024u32 {
                assert!(
                    fold_onto_queues(processor, queues) < queues,
                    "{processor} {queues}"
                );
            }
        }
        assert_eq!(fold_onto_queues(5, 3), 1);
        assert_eq!(fold_onto_queues(6, 4), 2);
        assert_eq!(fold_onto_queues(9, 6), 1);
        assert_eq!(fold_onto_queues(7, 1), 0);
    }
}
