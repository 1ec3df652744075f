//! The event queue (virtio 1.x section 5.6.6.3) and the configuration-change interrupt (section
//! 4.1.5.3): event buffers kept on the eventq, what the device reports in them turned into
//! StorPort notifications, and the units the device reported removed.
//!
//! **Buffers.** [`EVENT_BUFFERS`] device-writable `virtio_scsi_event` buffers of 16 bytes are
//! carved from the uncached extension at find-adapter. [`EventQueue::stock`] puts every one on
//! the eventq right after DRIVER_OK (HwInitialize, every device reset, ScsiRestartAdapter), and
//! [`EventQueue::drain`] puts each buffer back as soon as its event is copied out, so the device
//! only runs dry (and sets `VIRTIO_SCSI_T_EVENTS_MISSED`) when more than eight events arrive
//! between two interrupts. The eventq's `requests` table holds, per ring token, the buffer index
//! plus one (0: no buffer), so a used element naming a token with no buffer is caught.
//!
//! **Context.** The eventq has its own MSI-X message (virtqueue 1, message 2) in per-queue mode;
//! in shared and line mode it is drained by the one ISR with the other queues. Either way events
//! are handled in the ISR, at DIRQL, under the lock StorPort holds for that message, with no DPC:
//! the work is a few atomics and at most one StorPort notification per event, and it also works
//! where no DPC exists (the crash-dump stack). `StorPortNotification(BusChangeDetected)` documents
//! no IRQL limit (StorPort queues the rescan; vioscsi raises it from its interrupt path too), and
//! `StorPortStateChangeDetected` is documented "IRQL: Any".
//!
//! **What each event becomes** ([`Reaction::of`] decides, [`EventQueue::drain`] acts):
//!
//! | device writes | miniport does |
//! |---|---|
//! | `TRANSPORT_RESET` / `RESCAN` | clears the unit's removed mark (the whole target's for LUN 0), `BusChangeDetected` |
//! | `TRANSPORT_RESET` / `REMOVED` | marks the unit removed, drops it from the LUN table, `BusChangeDetected` |
//! | `TRANSPORT_RESET` / `HARD` | counted only: the unit is still there and its unit attention tells the class driver |
//! | `PARAM_CHANGE` (e.g. 0x2A/0x09, capacity changed) | `StorPortStateChangeDetected(STATE_CHANGE_LUN)` for the unit; `BusChangeDetected` if one is still being processed |
//! | `EVENTS_MISSED` flag (with any event) | clears every removed mark, `BusChangeDetected` (a full rescan) |
//! | `ASYNC_NOTIFY` | counted and ignored: this driver subscribes to none |
//! | an event that does not decode (unknown type, malformed LUN, undefined reason) | counted, `BusChangeDetected` (something changed; a rescan is harmless) |
//! | a used length below 16 bytes | counted and ignored (nothing trustworthy was written) |
//! | a LUN above 255 or target 255 | counted and ignored: StorPort cannot address it |
//! | a used element for no posted buffer, a length beyond the buffer | the device broke the ring protocol: reset |
//!
//! Several rescans asked for by one interrupt's events are one `BusChangeDetected`.
//!
//! **Removed units.** I/O to a unit the device reported removed is failed with
//! `SRB_STATUS_NO_DEVICE`: in BuildIo for every command but INQUIRY and REPORT LUNS (which the
//! device still answers truthfully for an absent unit, so StorPort's rescan sees it gone), and at
//! completion for any command that did not succeed. The port drivers translate NO_DEVICE into
//! `STATUS_DEVICE_DOES_NOT_EXIST` and classpnp does not retry it, which is what a unit that is
//! gone means. `SRB_STATUS_SELECTION_TIMEOUT` would say the target did not answer selection (a
//! transport fault that classpnp logs and multipath treats as a path failure); here the device
//! said the unit is gone, so NO_DEVICE is the honest status. The mark is cleared by a RESCAN
//! event for the unit, by a lost-events rescan, and by a successful INQUIRY that finds the unit
//! present.
//!
//! **Configuration changes.** The configuration interrupt (message 0, or the ISR status `CONFIG`
//! bit) re-reads the whole configuration (consistently, through `config_generation`). A device
//! that set `DEVICE_NEEDS_RESET`, or changed `sense_size` / `cdb_size` away from the request
//! layout, is reset (which writes the sizes again). A change of `max_target`, `max_lun` or
//! `max_channel` asks for a bus rescan. Changes of the limits StorPort fixed at find-adapter
//! (`num_queues`, `seg_max`, `max_sectors`, `cmd_per_lun`, `event_info_size`) cannot be honoured
//! while the adapter runs and are counted.
//!
//! **Not done.** Asynchronous notification subscription (`VIRTIO_SCSI_T_AN_SUBSCRIBE` on the
//! controlq): the spec has no feature bit for it, QEMU answers every query with no event class
//! supported, and Windows has no consumer for MMC media events on disks; `ASYNC_NOTIFY` events
//! are counted as unsolicited.
#![forbid(unsafe_code)]

use core::borrow::Borrow;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use virtio_core::dma::DmaMemory;
use virtio_core::hal::{Hal, RegisterIo, Segment};
use virtio_core::pci::PciTransport;
use virtio_core::queue::QueueError;
use virtio_core::scsi::{Config, Event, EventError, EventKind, Limits, ResetReason, queue_index};
use zerocopy::FromBytes;

use crate::dump::Sizing;
use crate::luns::{LunSlot, LunTable};
use crate::ring_view::{Doorbell, RingView};
use crate::sizing::EVENT_BUFFERS;
use crate::storport::HwStateChange;
use crate::storport::dma::{Carved, UncachedArena};
use crate::storport::port::DeviceExtension;
use crate::storport::state_change::{Notified, UnitStateChange};
use crate::trace::{ADAPTER_WIDE, TraceEvent, Tracer, ViolationKind};

/// Bytes of one `virtio_scsi_event` (virtio 1.x section 5.6.6.3).
pub const EVENT_LEN: usize = size_of::<Event>();
/// Highest target StorPort addresses: find-adapter reports at most 255 targets (0 to 254).
pub const MAX_ADDRESSABLE_TARGET: u8 = 254;
/// Units the removed-unit set covers: every BTL8 target and LUN byte.
const UNITS: usize = 256 * 256;
/// 64-bit words of the removed-unit set.
pub const GONE_WORDS: usize = UNITS / 64;
/// Bytes of the device configuration the watch keeps (`virtio_scsi_config`).
const CONFIG_LEN: usize = size_of::<Config>();
/// 32-bit words of the device configuration.
const CONFIG_WORDS: usize = CONFIG_LEN / 4;
const _: () = assert!(CONFIG_LEN.is_multiple_of(4));

/// SCSI operation codes a device answers for a unit that is not there (SPC-4 6.6 and 6.33:
/// INQUIRY with peripheral qualifier 3, REPORT LUNS from the target), which therefore still go
/// to the device for a unit marked removed, so a rescan learns the truth.
#[must_use]
pub const fn reaches_absent_unit(opcode: u8) -> bool {
    matches!(opcode, crate::luns::INQUIRY | crate::luns::REPORT_LUNS)
}

/// What one event means for Windows, before anything is done about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// `NO_EVENT`: nothing (the missed-events flag may still be set).
    None,
    /// `TRANSPORT_RESET` / `HARD`: the unit was reset and is still there.
    HardReset {
        /// Target.
        target: u8,
        /// LUN.
        lun: u8,
    },
    /// `TRANSPORT_RESET` / `RESCAN`: the unit (for LUN 0, possibly its whole target) appeared.
    Appeared {
        /// Target.
        target: u8,
        /// LUN.
        lun: u8,
    },
    /// `TRANSPORT_RESET` / `REMOVED`: the unit can no longer receive commands.
    Removed {
        /// Target.
        target: u8,
        /// LUN.
        lun: u8,
    },
    /// `PARAM_CHANGE`: a parameter of the unit changed; `asc`/`ascq` name it (0x2A/0x09:
    /// capacity data has changed).
    ParametersChanged {
        /// Target.
        target: u8,
        /// LUN.
        lun: u8,
        /// Additional sense code.
        asc: u8,
        /// Additional sense code qualifier.
        ascq: u8,
    },
    /// `ASYNC_NOTIFY`, which this driver never subscribes to.
    UnsolicitedNotification,
    /// A unit StorPort cannot address (target 255 or LUN above 255).
    Unaddressable {
        /// Target.
        target: u8,
        /// LUN.
        lun: u16,
    },
    /// The event does not decode.
    Malformed(EventError),
    /// The device reported fewer bytes than an event.
    Short {
        /// The used length.
        written: u32,
    },
}

/// One event's meaning: its [`Change`] and whether the device also lost events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reaction {
    /// What the event reports.
    pub change: Change,
    /// `VIRTIO_SCSI_T_EVENTS_MISSED` was set: events were dropped, so everything is rescanned.
    pub events_missed: bool,
}

impl Reaction {
    /// The reaction to the event in `bytes`, of which the device reported `written`.
    #[must_use]
    pub fn of(bytes: &[u8; EVENT_LEN], written: u32) -> Self {
        let short = Self {
            change: Change::Short { written },
            events_missed: false,
        };
        if usize::try_from(written).map_or(true, |written| written < EVENT_LEN) {
            return short;
        }
        let Ok(event) = Event::read_from_bytes(bytes) else {
            return short;
        };
        let change = match event.decode() {
            Err(error) => Change::Malformed(error),
            Ok(decoded) => match decoded.kind {
                EventKind::NoEvent => Change::None,
                EventKind::AsyncNotification { .. } => Change::UnsolicitedNotification,
                EventKind::TransportReset { lun, reason } => {
                    match addressable(lun.target(), lun.lun()) {
                        Err(change) => change,
                        Ok((target, lun)) => match reason {
                            ResetReason::Hard => Change::HardReset { target, lun },
                            ResetReason::Rescan => Change::Appeared { target, lun },
                            ResetReason::Removed => Change::Removed { target, lun },
                        },
                    }
                }
                EventKind::ParamChange { lun, asc, ascq } => {
                    match addressable(lun.target(), lun.lun()) {
                        Err(change) => change,
                        Ok((target, lun)) => Change::ParametersChanged {
                            target,
                            lun,
                            asc,
                            ascq,
                        },
                    }
                }
            },
        };
        Self {
            change,
            events_missed: event.events_missed(),
        }
    }

    /// Whether the event asks StorPort to rescan the bus (a parameter change asks for a unit
    /// notification instead, and falls back to a rescan on its own).
    #[must_use]
    pub const fn rescans_bus(&self) -> bool {
        self.events_missed
            || matches!(
                self.change,
                Change::Appeared { .. } | Change::Removed { .. } | Change::Malformed(_)
            )
    }
}

/// The trace arguments of an event as the device wrote it ([`TraceEvent::DeviceEvent`]): the
/// raw `event` field, the raw `reason`, and the LUN field's target << 16 | LUN (14 bits).
fn trace_args(bytes: &[u8; EVENT_LEN]) -> (u32, u64, u64) {
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|word| word.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    };
    let target = u64::from(bytes[5]);
    let lun = (u64::from(bytes[6] & 0x3F) << 8) | u64::from(bytes[7]);
    (word(0), u64::from(word(12)), (target << 16) | lun)
}

/// The StorPort address of a virtio target and LUN, or the [`Change::Unaddressable`] it is.
fn addressable(target: u8, lun: u16) -> Result<(u8, u8), Change> {
    match u8::try_from(lun) {
        Ok(lun) if target <= MAX_ADDRESSABLE_TARGET => Ok((target, lun)),
        _ => Err(Change::Unaddressable { target, lun }),
    }
}

/// The units the device reported removed: one bit per BTL8 target and LUN.
///
/// The bits are read by BuildIo and completion on every processor and written by the eventq
/// ISR, all relaxed: a bit publishes no other data, and a stale read only sends one more command
/// to the device, which answers for the absent unit itself.
///
/// `any` is set before the first bit is, and never cleared, so that [`GoneUnits::contains`],
/// asked three times per I/O, reads one flag while no unit was ever reported removed.
#[derive(Debug)]
pub struct GoneUnits<S> {
    words: S,
    any: AtomicBool,
}

impl<S: Borrow<[AtomicU64]>> GoneUnits<S> {
    /// A set over `words` (all clear); fewer than [`GONE_WORDS`] words cover fewer targets.
    pub const fn new(words: S) -> Self {
        Self {
            words,
            any: AtomicBool::new(false),
        }
    }

    fn word(&self, target: u8, lun: u8) -> Option<(&AtomicU64, u64)> {
        let bit = usize::from(target) * 256 + usize::from(lun);
        let word = self.words.borrow().get(bit / 64)?;
        Some((word, 1 << (bit % 64)))
    }

    /// Whether `target`/`lun` was reported removed.
    #[must_use]
    #[inline]
    pub fn contains(&self, target: u8, lun: u8) -> bool {
        // ORDERING: relaxed, as the bits (see the type's documentation). `mark` sets `any`
        // before the bit, in program order on the marking processor, so whoever is ordered
        // after that bit's store (StartIo under the queue lock a removal takes after marking:
        // the lock's release and acquire order both stores before this load) sees `any` set
        // too; a reader not so ordered may miss both, as it may miss the bit alone.
        if !self.any.load(Ordering::Relaxed) {
            return false;
        }
        // ORDERING: relaxed; see the type's documentation.
        self.word(target, lun)
            .is_some_and(|(word, bit)| word.load(Ordering::Relaxed) & bit != 0)
    }

    /// Whether the unit `unit` gives (target, LUN) was reported removed; `unit` is asked only
    /// if some unit was (StartIo's hot path loads the request's address only then).
    #[must_use]
    #[inline]
    pub fn contains_unit(&self, unit: impl FnOnce() -> (u8, u8)) -> bool {
        // ORDERING: relaxed, as in `contains`.
        if !self.any.load(Ordering::Relaxed) {
            return false;
        }
        let (target, lun) = unit();
        self.contains(target, lun)
    }

    /// Marks `target`/`lun` removed.
    pub fn mark(&self, target: u8, lun: u8) {
        if let Some((word, bit)) = self.word(target, lun) {
            // ORDERING: relaxed, before the bit (see `contains`).
            self.any.store(true, Ordering::Relaxed);
            // ORDERING: relaxed; see the type's documentation.
            word.fetch_or(bit, Ordering::Relaxed);
        }
    }

    /// Clears the mark of `target`/`lun`.
    pub fn clear(&self, target: u8, lun: u8) {
        if let Some((word, bit)) = self.word(target, lun) {
            // ORDERING: relaxed; see the type's documentation.
            word.fetch_and(!bit, Ordering::Relaxed);
        }
    }

    /// Clears the marks of every LUN of `target`.
    pub fn clear_target(&self, target: u8) {
        let first = usize::from(target) * 4;
        for word in self.words.borrow().iter().skip(first).take(4) {
            // ORDERING: relaxed; see the type's documentation.
            word.store(0, Ordering::Relaxed);
        }
    }

    /// Clears every mark.
    pub fn clear_all(&self) {
        for word in self.words.borrow() {
            // ORDERING: relaxed; see the type's documentation.
            word.store(0, Ordering::Relaxed);
        }
    }

    /// Number of units marked.
    #[must_use]
    pub fn count(&self) -> u32 {
        self.words
            .borrow()
            .iter()
            // ORDERING: relaxed; see the type's documentation.
            .map(|word| word.load(Ordering::Relaxed).count_ones())
            .sum()
    }
}

/// What changed between two reads of the device configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    /// `sense_size` or `cdb_size` is no longer the request layout's: every request would be
    /// misparsed, so the device must be reset (which writes them again).
    pub layout: bool,
    /// `max_channel`, `max_target` or `max_lun` changed: the bus is rescanned.
    pub bus: bool,
    /// A limit StorPort fixed at find-adapter changed (`num_queues`, `seg_max`,
    /// `max_sectors`, `cmd_per_lun`, `event_info_size`): it cannot be honoured until the
    /// adapter is restarted by Windows, so it is counted.
    pub limits: bool,
}

impl ConfigChanges {
    /// The changes from `seen` to `now`.
    #[must_use]
    pub fn between(seen: &Config, now: &Config) -> Self {
        let layout = Limits::check_layout(now).is_err();
        let bus = seen.max_channel != now.max_channel
            || seen.max_target != now.max_target
            || seen.max_lun != now.max_lun;
        let limits = seen.num_queues != now.num_queues
            || seen.seg_max != now.seg_max
            || seen.max_sectors != now.max_sectors
            || seen.cmd_per_lun != now.cmd_per_lun
            || seen.event_info_size != now.event_info_size;
        Self {
            layout,
            bus,
            limits,
        }
    }
}

/// The event queue's counters, readable from a crash dump (and by the tests).
#[derive(Debug, Default)]
pub struct EventCounters {
    /// Events taken off the eventq.
    pub events: AtomicU64,
    /// `NO_EVENT` events.
    pub no_events: AtomicU64,
    /// `TRANSPORT_RESET` / `HARD` events.
    pub hard_resets: AtomicU64,
    /// `TRANSPORT_RESET` / `RESCAN` events.
    pub appeared: AtomicU64,
    /// `TRANSPORT_RESET` / `REMOVED` events.
    pub removed: AtomicU64,
    /// `PARAM_CHANGE` events.
    pub parameter_changes: AtomicU64,
    /// Events with `EVENTS_MISSED` set.
    pub missed: AtomicU64,
    /// Used lengths below an event.
    pub short: AtomicU64,
    /// Events that did not decode.
    pub malformed: AtomicU64,
    /// Events about units StorPort cannot address.
    pub unaddressable: AtomicU64,
    /// `ASYNC_NOTIFY` events (never subscribed to).
    pub unsolicited: AtomicU64,
    /// Buffers that could not be put back on the eventq.
    pub restock_failures: AtomicU64,
    /// Ring protocol violations on the eventq (each resets the device).
    pub protocol_violations: AtomicU64,
    /// `BusChangeDetected` notifications sent.
    pub bus_changes: AtomicU64,
    /// `StorPortStateChangeDetected` notifications StorPort accepted.
    pub state_changes: AtomicU64,
    /// Parameter changes reported as a bus change because a unit notification was still being
    /// processed or StorPort refused it.
    pub state_change_fallbacks: AtomicU64,
    /// Configuration changes seen (a new `config_generation`, or `DEVICE_NEEDS_RESET`).
    pub config_changes: AtomicU64,
    /// Configuration changes that asked for a bus rescan.
    pub config_rescans: AtomicU64,
    /// Configuration interrupts that reset the device (DEVICE_NEEDS_RESET or a layout change).
    pub config_resets: AtomicU64,
    /// Configuration changes that cannot be honoured, or configurations that could not be read.
    pub config_ignored: AtomicU64,
}

/// Adds one to a counter.
fn count(counter: &AtomicU64) {
    // ORDERING: a statistic; it publishes nothing.
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What one drain of the eventq leaves to do once the ring work is done.
#[derive(Clone, Copy, Debug, Default)]
struct Batch {
    bus_change: bool,
}

/// What the event queue reaches of the adapter, built by the adapter for each call.
pub struct EventContext<'a> {
    /// Where device events and violations are recorded.
    pub tracer: Tracer<'a>,
    /// The LUN table, from which a removed unit is dropped.
    pub luns: &'a LunTable<Carved<LunSlot>>,
    /// The adapter in StorPort's calls (`BusChangeDetected`, `StorPortStateChangeDetected`).
    pub extension: DeviceExtension,
    /// HwStorStateChange, the callback of a unit's state-change notification.
    pub state_change: HwStateChange,
    /// Notifies the device of the buffers put back.
    pub doorbell: &'a dyn Doorbell,
    /// A restart rescans the bus: hot-plug was negotiated and this is not the crash-dump stack.
    pub rescan_after_restart: bool,
}

impl core::fmt::Debug for EventContext<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EventContext")
            .field("extension", &self.extension)
            .field("rescan_after_restart", &self.rescan_after_restart)
            .finish_non_exhaustive()
    }
}

/// The event queue's state, in the adapter.
#[derive(Debug)]
pub struct EventQueue {
    /// [`EVENT_BUFFERS`] buffers of [`EVENT_LEN`] bytes, device-writable.
    buffers: DmaMemory,
    gone: GoneUnits<Carved<AtomicU64>>,
    /// The configuration as last read, as little-endian words.
    config: [AtomicU32; CONFIG_WORDS],
    /// `config_generation` before that read (virtio 1.x section 4.1.4.3.1: it changes whenever
    /// the configuration did since the driver last read it).
    config_generation: AtomicU8,
    /// A `StorPortStateChangeDetected` notification is being processed.
    state_change: UnitStateChange,
    counters: EventCounters,
}

impl EventQueue {
    /// Words of the removed-unit set for `sizing`: none on the crash-dump stack, which writes
    /// to the one disk it was loaded for and has no uncached memory to spare (a set without
    /// words contains nothing).
    #[must_use]
    pub const fn gone_words(sizing: Sizing) -> usize {
        match sizing {
            Sizing::Normal => GONE_WORDS,
            Sizing::Dump => 0,
        }
    }

    /// Bytes of uncached extension the event queue takes for `sizing`, padding included.
    #[must_use]
    pub const fn uncached_len(sizing: Sizing) -> usize {
        EVENT_BUFFERS * EVENT_LEN
            + 16
            + Self::gone_words(sizing) * size_of::<AtomicU64>()
            + align_of::<AtomicU64>()
    }

    /// Carves the buffers and the removed-unit set for `sizing` from `arena`.
    #[must_use]
    pub fn carve(arena: &UncachedArena, sizing: Sizing) -> Option<Self> {
        let buffers = arena.dma_alloc(EVENT_BUFFERS * EVENT_LEN, 16).ok()?;
        let words = arena.carve_table_with(Self::gone_words(sizing), || AtomicU64::new(0))?;
        Some(Self {
            buffers,
            gone: GoneUnits::new(words),
            config: [const { AtomicU32::new(0) }; CONFIG_WORDS],
            config_generation: AtomicU8::new(0),
            state_change: UnitStateChange::default(),
            counters: EventCounters::default(),
        })
    }

    /// The counters.
    #[must_use]
    pub const fn counters(&self) -> &EventCounters {
        &self.counters
    }

    /// The units the device reported removed.
    #[must_use]
    pub const fn gone(&self) -> &GoneUnits<Carved<AtomicU64>> {
        &self.gone
    }

    /// Puts buffer `index` (zeroed, so a device that reports a length without writing yields
    /// `NO_EVENT`) on the eventq and records it under its token.
    fn post(&self, ring: &mut RingView<'_>, index: usize) -> Result<(), QueueError> {
        let offset = index * EVENT_LEN;
        if !self.buffers.write_bytes(offset, &[0; EVENT_LEN]) {
            return Err(QueueError::EmptyChain);
        }
        let segment = Segment::new(self.buffers.bus_address() + offset as u64, EVENT_LEN as u32);
        let token = ring.queue.add(&[], &[segment], None)?;
        if let Some(slot) = ring.tokens.get_mut(token.index()) {
            *slot = index + 1;
        }
        Ok(())
    }

    /// Puts every buffer not already on the eventq there; returns the notification offset if
    /// the device must be told. The caller has the eventq to itself (set-up with StorPort's
    /// interrupt lock, or the reset winner holding every lock) and has set DRIVER_OK.
    pub fn stock(&self, mut ring: RingView<'_>) -> Option<u64> {
        let size = usize::from(ring.queue.size());
        if ring.queue.in_flight() == 0 {
            // A new or reset ring: any token recorded before belongs to no chain.
            ring.tokens.fill(0);
        }
        let mut posted = [false; EVENT_BUFFERS];
        for &slot in &*ring.tokens {
            if let Some(flag) = slot.checked_sub(1).and_then(|index| posted.get_mut(index)) {
                *flag = true;
            }
        }
        for (index, _) in posted
            .iter()
            .enumerate()
            .take(EVENT_BUFFERS.min(size))
            .filter(|(_, posted)| !**posted)
        {
            if self.post(&mut ring, index).is_err() {
                count(&self.counters.restock_failures);
            }
        }
        ring.queue.kick_prepare().then_some(ring.notify_offset)
    }

    /// Drains the eventq under its lock (the caller holds it for `ring`): copies each event
    /// out, puts its buffer back, and acts on it; notifies the device of the buffers put back
    /// and StorPort of the changes. Returns true if the device broke the ring protocol and must
    /// be reset (by the caller, from outside the ISR).
    pub fn drain(&self, context: &EventContext<'_>, mut ring: RingView<'_>) -> bool {
        let mut batch = Batch::default();
        let mut broken = false;
        loop {
            let popped = ring.queue.pop_used();
            match popped {
                Ok(Some(used)) => {
                    let slot = ring
                        .tokens
                        .get_mut(used.token.index())
                        .map_or(0, core::mem::take);
                    let Some(index) = slot.checked_sub(1).filter(|&i| i < EVENT_BUFFERS) else {
                        context.tracer.trace(
                            TraceEvent::ProtocolViolation,
                            queue_index::EVENT,
                            (
                                ViolationKind::UnknownUsedId as u32,
                                used.token.index() as u64,
                                0,
                            ),
                        );
                        broken = true;
                        break;
                    };
                    let mut bytes = [0u8; EVENT_LEN];
                    let read = self.buffers.read_bytes(index * EVENT_LEN, &mut bytes);
                    if self.post(&mut ring, index).is_err() {
                        count(&self.counters.restock_failures);
                    }
                    count(&self.counters.events);
                    let written = if read { used.written } else { 0 };
                    context.tracer.trace(
                        TraceEvent::DeviceEvent,
                        queue_index::EVENT,
                        trace_args(&bytes),
                    );
                    self.apply(context, Reaction::of(&bytes, written), &mut batch);
                }
                Ok(None) => {
                    if !ring.queue.enable_interrupts() {
                        break;
                    }
                }
                Err(_) => {
                    context.tracer.trace(
                        TraceEvent::ProtocolViolation,
                        queue_index::EVENT,
                        (ViolationKind::RingError as u32, 0, 0),
                    );
                    broken = true;
                    break;
                }
            }
        }
        if broken {
            count(&self.counters.protocol_violations);
        }
        if ring.queue.kick_prepare() {
            context
                .doorbell
                .notify_virtqueue(queue_index::EVENT, ring.notify_offset);
        }
        if batch.bus_change {
            self.bus_change(context.extension);
        }
        broken
    }

    /// Acts on one event.
    fn apply(&self, context: &EventContext<'_>, reaction: Reaction, batch: &mut Batch) {
        let counters = &self.counters;
        if reaction.events_missed {
            // Lost events may have brought removed units back: let the device answer for them.
            count(&counters.missed);
            self.gone.clear_all();
        }
        match reaction.change {
            Change::None => count(&counters.no_events),
            Change::HardReset { .. } => count(&counters.hard_resets),
            Change::Appeared { target, lun } => {
                count(&counters.appeared);
                if lun == 0 {
                    self.gone.clear_target(target);
                } else {
                    self.gone.clear(target, lun);
                }
            }
            Change::Removed { target, lun } => {
                count(&counters.removed);
                self.gone.mark(target, lun);
                let _ = context.luns.remove(target, u16::from(lun));
            }
            Change::ParametersChanged { target, lun, .. } => {
                count(&counters.parameter_changes);
                if !self.unit_changed(context, target, lun) {
                    count(&counters.state_change_fallbacks);
                    batch.bus_change = true;
                }
            }
            Change::UnsolicitedNotification => count(&counters.unsolicited),
            Change::Unaddressable { .. } => count(&counters.unaddressable),
            Change::Malformed(_) => count(&counters.malformed),
            Change::Short { .. } => count(&counters.short),
        }
        batch.bus_change |= reaction.rescans_bus();
    }

    /// `BusChangeDetected`, counted.
    pub fn bus_change(&self, extension: DeviceExtension) {
        count(&self.counters.bus_changes);
        extension.bus_change_detected();
    }

    /// Tells StorPort that `target`/`lun` changed (`StorPortStateChangeDetected`, one at a
    /// time). False if it could not be told: another notification is being processed or
    /// StorPort refused (an older StorPort answers NOT_IMPLEMENTED).
    fn unit_changed(&self, context: &EventContext<'_>, target: u8, lun: u8) -> bool {
        match self
            .state_change
            .notify(context.extension, target, lun, context.state_change)
        {
            Notified::Sent => {
                count(&self.counters.state_changes);
                true
            }
            Notified::Busy | Notified::Refused(_) => false,
        }
    }

    /// StorPort finished processing the state-change notification (HwStorStateChange).
    pub fn state_change_done(&self) {
        self.state_change.done();
    }

    /// After DRIVER_OK: records the configuration the device started with, so the next
    /// configuration interrupt can tell what changed.
    pub fn started<R: RegisterIo>(&self, transport: &PciTransport<R>) {
        let _ = self.read_config(transport);
    }

    /// Reads the configuration, records it and the generation it was read at, and returns it.
    fn read_config<R: RegisterIo>(&self, transport: &PciTransport<R>) -> Option<Config> {
        // The generation before the read: if the device changes the configuration during it,
        // the next interrupt sees a newer generation and reads again.
        let generation = transport.config_generation();
        // Field by field, each at its natural width (virtio 1.x 4.1.3.1).
        let Ok(config) = virtio_core::scsi::read_config(transport) else {
            count(&self.counters.config_ignored);
            return None;
        };
        let bytes: [u8; CONFIG_LEN] = zerocopy::transmute!(config);
        self.store_config(&bytes);
        // ORDERING: relaxed; see `store_config`.
        self.config_generation.store(generation, Ordering::Relaxed);
        Some(config)
    }

    /// After the device was reset or restarted: events the device had while the eventq was
    /// empty were dropped without an `EVENTS_MISSED` report (a device reset clears that flag),
    /// so with hot-plug negotiated the bus is rescanned once.
    /// Not on the crash-dump stack, which has no PnP to rescan with.
    pub fn restarted(&self, context: &EventContext<'_>) {
        if context.rescan_after_restart {
            self.bus_change(context.extension);
        }
    }

    fn store_config(&self, bytes: &[u8; CONFIG_LEN]) {
        for (word, chunk) in self.config.iter().zip(bytes.chunks_exact(4)) {
            let value = u32::from_le_bytes(chunk.try_into().unwrap_or([0; 4]));
            // ORDERING: relaxed; only the configuration interrupt (one message lock) and
            // set-up (no interrupt) touch these words.
            word.store(value, Ordering::Relaxed);
        }
    }

    fn seen_config(&self) -> Config {
        let mut bytes = [0u8; CONFIG_LEN];
        for (word, chunk) in self.config.iter().zip(bytes.chunks_exact_mut(4)) {
            // ORDERING: relaxed; see `store_config`.
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        Config::read_from_bytes(&bytes).unwrap_or_else(|_| zerocopy::FromZeros::new_zeroed())
    }

    /// The configuration-change interrupt: if the device needs a reset or `config_generation`
    /// moved, re-reads the configuration and acts on what changed (see the module
    /// documentation); otherwise (a shared message's other interrupts) does nothing more than
    /// two register reads. Returns true if the device must be reset (by the caller, from
    /// outside the ISR).
    pub fn on_config_change<R: RegisterIo>(
        &self,
        context: &EventContext<'_>,
        transport: &PciTransport<R>,
    ) -> bool {
        let counters = &self.counters;
        if transport.needs_reset() {
            count(&counters.config_changes);
            count(&counters.config_resets);
            return true;
        }
        // ORDERING: relaxed; see `store_config`.
        if transport.config_generation() == self.config_generation.load(Ordering::Relaxed) {
            return false;
        }
        count(&counters.config_changes);
        let seen = self.seen_config();
        let Some(now) = self.read_config(transport) else {
            return false;
        };
        // ORDERING: relaxed; see `store_config`.
        let generation = self.config_generation.load(Ordering::Relaxed);
        context.tracer.trace(
            TraceEvent::ConfigChanged,
            ADAPTER_WIDE,
            (u32::from(generation), 0, 0),
        );
        let changes = ConfigChanges::between(&seen, &now);
        if changes.limits {
            count(&counters.config_ignored);
        }
        if changes.layout {
            count(&counters.config_resets);
            return true;
        }
        if changes.bus {
            count(&counters.config_rescans);
            self.bus_change(context.extension);
        }
        false
    }
}

#[cfg(test)]
mod tests;
