//! The adapter: virtio transport, rings, limits and per-queue locks, living in StorPort's
//! device extension, plus the routines that bring it up (find-adapter, initialize, passive
//! initialize), reset it, and route interrupts to queues.
//!
//! Concurrency follows StorPort's rules. HwBuildIo runs with no lock; HwStartIo runs on many
//! processors at once (concurrent channels), so each request queue is guarded by the spin lock
//! of its MSI-X message, the lock StorPort itself holds while running that message's ISR. The
//! per-queue state is reached only through a [`QueueGuard`], which exists only while that lock
//! is held ([`crate::storport::queue_locks`] decides which lock guards which queue). The controlq and the eventq have their own messages and locks
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
//! - Task management (aborts, LUN and target resets, HwResetBus) is [`crate::recovery::tmf`]; its
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

#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};

use virtio_core::features::Features;
use virtio_core::pci::TransportError;
use virtio_core::scsi::Limits;

use crate::control::wmi_provider::{WmiContext, WmiHost};
use crate::dump::DumpMode;
use crate::events::{EventContext, EventQueue, GoneUnits};
use crate::io::IoHost;
use crate::io::device_identification::LunLocation;
use crate::limits::StorLimits;
use crate::luns::{LunSlot, LunTable};
use crate::queue_state::{QueueState, Transport};
use crate::recovery::tmf::{TmfSlot, TmfTable};
use crate::ring_view::Doorbell;
use crate::sizing::HEALTH_PERIOD_MICROSECONDS;
use crate::storport::StorDpc;
use crate::storport::dma::{Carved, StorPortRegisters, UncachedArena};
use crate::storport::port::{Callbacks, DeviceExtension};
use crate::storport::queue_locks::QueueLocks;
use crate::trace::{TraceEntry, TraceEvent, TraceRing, Tracer};

/// [`HEALTH_PERIOD_MICROSECONDS`] in the 100 ns units of the system time.
const HEALTH_PERIOD: u64 = HEALTH_PERIOD_MICROSECONDS as u64 * 10;
/// Marks a device extension holding a constructed [`Adapter`] (the first field).
pub const ADAPTER_MAGIC: u64 = u64::from_le_bytes(*b"rvscsi\x01\x00");

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

// virtio-core's errors are shown with `Debug`, which names the variant and its payload.
impl core::fmt::Display for AdapterError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::NoConfigSpace => f.write_str("PCI configuration space could not be read"),
            Self::WrongDeviceType(kind) => write!(f, "virtio device type {kind} is not SCSI"),
            Self::Transport(error) => write!(f, "virtio PCI transport: {error:?}"),
            Self::Config(error) => write!(f, "device configuration: {error:?}"),
            Self::Limits(error) => write!(f, "device limits: {error}"),
            Self::NoUncachedExtension { len } => {
                write!(f, "StorPort gave no uncached extension of {len} bytes")
            }
            Self::Queue(error) => write!(f, "ring over the carved memory: {error:?}"),
            Self::OutOfMemory => f.write_str("carving DMA memory or a table failed"),
            Self::FeaturesChanged { accepted } => write!(
                f,
                "the device accepted other features after a reset: {:#x}",
                accepted.bits()
            ),
            Self::LimitsChanged => f.write_str("the device reported other limits after a reset"),
            Self::OverDumpBudget { len, budget } => write!(
                f,
                "uncached extension of {len} bytes exceeds the dump budget of {budget}"
            ),
        }
    }
}

impl From<TransportError> for AdapterError {
    fn from(error: TransportError) -> Self {
        Self::Transport(error)
    }
}

impl WmiHost for Adapter {
    fn wmi_context(&self) -> WmiContext<'_> {
        let counters: &[QueueCounters] = core::borrow::Borrow::borrow(&self.counters);
        WmiContext {
            facts: self.wmi_facts,
            scratch: &self.wmi_scratch,
            luns: &self.luns,
            request_queues: self.request_queues(),
            counters,
            resets: &self.resets,
            device_limits: &self.device_limits,
            limits: &self.limits,
            features: self.features,
            extension: self.extension,
        }
    }
}

impl IoHost for Adapter {
    #[inline]
    fn extension(&self) -> DeviceExtension {
        self.extension
    }

    #[inline]
    fn limits(&self) -> &StorLimits {
        &self.limits
    }

    #[inline]
    fn device_limits(&self) -> &Limits {
        &self.device_limits
    }

    #[inline]
    fn features(&self) -> Features {
        self.features
    }

    #[inline]
    fn request_queues(&self) -> u16 {
        Self::request_queues(self)
    }

    #[expect(
        clippy::inline_always,
        reason = "on every I/O; left out of line the SRB view goes to memory for the call (cargo xtask bench)"
    )]
    #[inline(always)]
    fn queue_for_request(&self, srb: &crate::storport::srb::Srb) -> u16 {
        Self::queue_for_request(self, srb)
    }

    #[inline]
    fn lock(&self, queue: u16) -> QueueGuard<'_> {
        Self::lock(self, queue)
    }

    #[inline]
    fn notify(&self, queue: u16, offset: u64) {
        Self::notify(self, queue, offset);
    }

    #[inline]
    fn is_stopped(&self) -> bool {
        Self::is_stopped(self)
    }

    #[inline]
    fn keeps_reservations(&self) -> bool {
        self.dump.is_none()
    }

    #[inline]
    fn counters(&self, queue: u16) -> Option<&QueueCounters> {
        Self::counters(self, queue)
    }

    #[inline]
    fn recovery(&self) -> &RecoveryCounters {
        &self.recovery
    }

    #[inline]
    fn gone(&self) -> &GoneUnits<Carved<AtomicU64>> {
        self.events.gone()
    }

    #[inline]
    fn luns(&self) -> &LunTable<Carved<LunSlot>> {
        &self.luns
    }

    #[inline]
    fn location(&self, target: u8, lun: u16) -> LunLocation {
        Self::location(self, target, lun)
    }

    #[inline]
    fn tracer(&self) -> Tracer<'_> {
        Self::tracer(self)
    }
}

impl Doorbell for Adapter {
    fn notify_virtqueue(&self, index: u16, offset: u64) {
        Self::notify_virtqueue(self, index, offset);
    }
}

pub use crate::sizing::CACHE_LINE;

/// A request queue's DPC object, alone on its cache lines ([`CACHE_LINE`]): the kernel writes
/// its queue links each time StorPort issues it.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct QueueDpc(pub StorDpc);

const _: () = assert!(
    align_of::<QueueState>() == CACHE_LINE
        && align_of::<QueueCounters>() == CACHE_LINE
        && align_of::<QueueDpc>() == CACHE_LINE
);

/// The miniport's state for one adapter, constructed in the device extension by find-adapter.
#[repr(C)]
#[derive(Debug)]
pub struct Adapter {
    /// [`ADAPTER_MAGIC`] once constructed (read before any reference is formed).
    magic: u64,
    extension: DeviceExtension,
    /// The routines registered with StorPort after find-adapter (built by [`crate::entry`]).
    callbacks: Callbacks,
    registers: StorPortRegisters,
    arena: UncachedArena,
    notify_bar: u8,
    features: Features,
    device_limits: Limits,
    limits: StorLimits,
    /// PCI bus and slot, for synthesised identifiers.
    bus: u8,
    slot: u8,
    /// Identity and sizes the WMI classes report.
    wmi_facts: crate::control::wmi_provider::AdapterFacts,
    /// Virtqueues prepared (controlq, eventq, then request queues).
    prepared_queues: u16,
    /// Request queues in use (set in HwInitialize).
    request_queues: AtomicU16,
    /// The virtqueues' states and the transport, each behind the lock that guards it (the
    /// transport is mutated only under every queue's lock: HwInitialize, a reset, a restart),
    /// and the interrupt mode that decides which lock that is.
    queues: QueueLocks<QueueState, Transport>,
    dpcs: Carved<QueueDpc>,
    counters: Carved<QueueCounters>,
    /// What the bus scan told Windows about each logical unit ([`crate::luns`]).
    luns: LunTable<Carved<LunSlot>>,
    /// Where WMI copies the LUN table to answer from it ([`crate::control::wmi_provider::WmiScratch`]).
    wmi_scratch: crate::control::wmi_provider::WmiScratch,
    /// The eventq's buffers, the units the device reported removed, and the configuration
    /// watch ([`crate::events`]).
    events: EventQueue,
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

impl Adapter {
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

    /// The routines registered with StorPort after find-adapter.
    #[must_use]
    pub const fn callbacks(&self) -> Callbacks {
        self.callbacks
    }

    /// How interrupts are delivered.
    #[must_use]
    pub fn mode(&self) -> InterruptMode {
        self.queues.mode()
    }

    /// Whether interrupts come as one MSI-X message per virtqueue (the normal case), tested
    /// without decoding the whole mode.
    #[must_use]
    pub fn is_per_queue_mode(&self) -> bool {
        self.queues.is_per_queue()
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
    pub const fn wmi_facts(&self) -> crate::control::wmi_provider::AdapterFacts {
        self.wmi_facts
    }

    /// The LUN table.
    #[must_use]
    pub const fn luns(&self) -> &LunTable<Carved<LunSlot>> {
        &self.luns
    }

    /// The WMI scratch area.
    #[must_use]
    pub const fn wmi_scratch(&self) -> &crate::control::wmi_provider::WmiScratch {
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
        InterruptMode::vector_of_queue(index)
    }

    /// Records `event` in the trace ring and prints it if the registry's level allows.
    pub fn trace(&self, event: TraceEvent, queue: u16, args: (u32, u64, u64)) {
        self.tracer().trace(event, queue, args);
    }

    /// The trace ring and print level, for the layers above that record without the adapter.
    #[must_use]
    pub const fn tracer(&self) -> Tracer<'_> {
        Tracer::new(&self.trace, self.debug_print_level)
    }

    /// What the event queue reaches of the adapter.
    #[must_use]
    pub fn event_context(&self) -> EventContext<'_> {
        EventContext {
            tracer: self.tracer(),
            luns: &self.luns,
            extension: self.extension,
            state_change: self.callbacks.state_change,
            doorbell: self,
            rescan_after_restart: self.dump.is_none()
                && self.features.contains(Features::SCSI_HOTPLUG),
        }
    }

    /// The trace ring's records, oldest first (tests and diagnostics).
    pub fn trace_entries(&self) -> impl Iterator<Item = TraceEntry> + '_ {
        self.trace.entries()
    }
}

mod find;
mod initialize;
mod interrupts;
mod locks;
mod recovery;

pub use crate::counters::{QueueCounters, RecoveryCounters};
pub use crate::queue_state::QueueGuard;
pub use crate::storport::queue_locks::InterruptMode;
pub use locks::{AllQueuesLocked, VirtqueueGuard};

#[cfg(test)]
mod tests;
