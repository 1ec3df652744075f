//! The adapter's typed trace ring: the last [`TRACE_RECORDS`] notable events, in non-paged
//! memory inside the adapter, readable from a live debugger or a crash dump.
//!
//! Only events that are rare and matter after the fact are recorded (a reset and its cause, a
//! protocol violation with the offending value, registry values adjusted, stop/restart, task
//! management, device events); per-I/O activity is counted in the per-queue counters instead, so
//! the ring costs nothing on the I/O path and its 256 entries cover the adapter's history.
//!
//! Writers on several processors (under different queue locks, or none) share the ring
//! lock-free: each takes a sequence number with one `fetch_add`, clears its slot's sequence,
//! writes the fields and publishes the sequence last with release ordering. A reader (a test,
//! or a person in WinDbg) trusts a record whose sequence is nonzero and the same before and after
//! reading the fields. Sequence 0 means "never written" or "being written".
//!
//! From WinDbg, with the PDB: `!storadapter` gives the device extension, which starts with
//! the adapter; then `dx -r1 ((rvscsi!rvscsi::adapter::Adapter*)0x...)->trace` shows the records
//! oldest first with their event names, through the natvis in the PDB (`miniport/rvscsi.natvis`,
//! whose names must follow [`TraceEvent::name`]); without it, `next` and the records, whose
//! `event` values are [`TraceEvent`]'s discriminants (listed in docs/troubleshooting.md).
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

/// Records kept (a power of two, so the slot is the sequence's low bits).
pub const TRACE_RECORDS: usize = 256;

/// "RVSCTRAC", little-endian: lets a person scanning memory find the ring.
pub const TRACE_MAGIC: u64 = u64::from_le_bytes(*b"RVSCTRAC");

/// What happened. The discriminants are stable: docs/troubleshooting.md lists them for crash-dump
/// reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum TraceEvent {
    /// Find-adapter accepted the device. arg0: request queues; arg1: negotiated features;
    /// arg2: `NumberOfPhysicalBreaks`.
    AdapterFound = 1,
    /// HwInitialize chose the interrupt mode. arg0: mode (0 per-queue, 1 shared, 2 line);
    /// arg1: MSI-X messages granted.
    Initialized = 2,
    /// A registry value was clamped or refused. arg0: index in the registry table; arg1: the
    /// value read; arg2: the value used (`u64::MAX` if refused).
    RegistryAdjusted = 3,
    /// A device reset started. arg0: [`ResetCause`]; arg1: SRBs taken back.
    DeviceReset = 4,
    /// The device broke the protocol on a queue. arg0: the error kind (a virtio-core
    /// `QueueError` code); arg1: the offending value.
    ProtocolViolation = 5,
    /// StorPort stopped the adapter (ScsiStopAdapter or a power-down).
    Stopped = 6,
    /// StorPort restarted the adapter.
    Restarted = 7,
    /// A task management function was sent (queue: the controlq). arg0: subtype; arg1:
    /// target << 16 | lun; arg2: tag.
    TmfSent = 8,
    /// A task management function ended (queue: the controlq). arg0: the virtio response it
    /// got (or `u32::MAX` if it ended unanswered: its deadline passed, or a device reset came
    /// first); arg1: target << 16 | lun; arg2: tag. A function that escalates ends with the
    /// reset, so its record follows the [`TraceEvent::DeviceReset`] it caused.
    TmfDone = 9,
    /// The event queue delivered an event. arg0: event code; arg1: reason; arg2: target << 16 | lun.
    DeviceEvent = 10,
    /// The device's configuration changed. arg0: config generation.
    ConfigChanged = 11,
    /// StorPort's HwStorUnitControl started or removed a unit (see `crate::recovery::unit_control`). arg0: the
    /// `SCSI_UNIT_CONTROL_TYPE` (2 start, 9 remove, 10 surprise removal); arg1: target << 16 |
    /// lun; arg2: the unit's commands on a ring at the call (a LOGICAL UNIT RESET follows if
    /// nonzero), 0 for a start.
    UnitControl = 12,
}

/// Why a device reset happened (arg0 of [`TraceEvent::DeviceReset`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ResetCause {
    /// StorPort called HwResetBus (usually an SRB timeout) and task management could not be
    /// sent, or the dump stack called it with a request in flight.
    ResetBus = 1,
    /// A reset or abort SRB asked for it and task management could not be sent (or the dump
    /// stack sent it with a request in flight).
    ResetSrb = 2,
    /// The device broke the protocol.
    ProtocolViolation = 3,
    /// The device set DEVICE_NEEDS_RESET.
    DeviceNeedsReset = 4,
    /// A task management function failed or was not answered in time.
    TmfEscalation = 5,
    /// A unit was removed with commands in flight and its LOGICAL UNIT RESET could not be sent.
    UnitRemoval = 6,
}

/// What the device did wrong (arg0 of [`TraceEvent::ProtocolViolation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ViolationKind {
    /// A used element named a descriptor with no request in flight. arg1: its id.
    UnknownUsedId = 1,
    /// A used element's response or length was impossible. arg1: the request's token.
    BadResponse = 2,
    /// The used ring itself was malformed (index, id or length out of range).
    RingError = 3,
}

impl TraceEvent {
    /// The DPFLTR level its StorPortDebugPrint line is emitted at: the adapter's history at
    /// info, what went wrong at error.
    #[must_use]
    pub const fn print_level(self) -> u32 {
        match self {
            Self::DeviceReset | Self::ProtocolViolation => 0,
            Self::RegistryAdjusted | Self::TmfDone => 1,
            Self::Stopped
            | Self::Restarted
            | Self::DeviceEvent
            | Self::ConfigChanged
            | Self::UnitControl => 2,
            Self::AdapterFound | Self::Initialized | Self::TmfSent => 3,
        }
    }

    /// Its name in debug prints.
    #[must_use]
    pub const fn name(self) -> &'static core::ffi::CStr {
        match self {
            Self::AdapterFound => c"adapter-found",
            Self::Initialized => c"initialized",
            Self::RegistryAdjusted => c"registry-adjusted",
            Self::DeviceReset => c"device-reset",
            Self::ProtocolViolation => c"protocol-violation",
            Self::Stopped => c"stopped",
            Self::Restarted => c"restarted",
            Self::TmfSent => c"tmf-sent",
            Self::TmfDone => c"tmf-done",
            Self::DeviceEvent => c"device-event",
            Self::ConfigChanged => c"config-changed",
            Self::UnitControl => c"unit-control",
        }
    }
}

/// One record. The fields are atomics so concurrent writers and readers never race; in a
/// debugger each shows as its integer.
#[derive(Debug, Default)]
#[repr(C)]
pub struct TraceRecord {
    /// The record's sequence number (from 1); 0 while empty or being written.
    pub sequence: AtomicU64,
    /// The [`TraceEvent`] discriminant.
    pub event: AtomicU16,
    /// The queue it concerns (`u16::MAX`: the adapter).
    pub queue: AtomicU16,
    /// First argument (meaning per event).
    pub arg0: AtomicU32,
    /// Second argument.
    pub arg1: AtomicU64,
    /// Third argument.
    pub arg2: AtomicU64,
}

const _: () = assert!(size_of::<TraceRecord>() == 32);

/// A record read back from the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// Its sequence number.
    pub sequence: u64,
    /// The raw event discriminant (an unknown one is kept, not dropped).
    pub event: u16,
    /// The queue, `u16::MAX` for the adapter.
    pub queue: u16,
    /// Arguments.
    pub args: (u32, u64, u64),
}

/// The ring: a magic, the next sequence number and the records.
#[derive(Debug)]
#[repr(C)]
pub struct TraceRing {
    /// [`TRACE_MAGIC`].
    pub magic: u64,
    /// Sequence number the next record takes, minus one (records so far).
    pub next: AtomicU64,
    /// The records; a record's slot is its sequence modulo [`TRACE_RECORDS`].
    pub records: [TraceRecord; TRACE_RECORDS],
}

/// What a layer above the adapter records through: the adapter's ring and the most verbose
/// StorPortDebugPrint level the registry allows (`RvscsiDebugPrintLevel`). Built by the
/// adapter for the events, recovery and WMI contexts, so none of them names the adapter.
#[derive(Clone, Copy, Debug)]
pub struct Tracer<'a> {
    ring: &'a TraceRing,
    print_level: u32,
}

impl<'a> Tracer<'a> {
    /// Records into `ring`, printing events at or below `print_level`.
    #[must_use]
    pub const fn new(ring: &'a TraceRing, print_level: u32) -> Self {
        Self { ring, print_level }
    }

    /// Records `event` in the trace ring and prints it if the registry's level allows.
    pub fn trace(&self, event: TraceEvent, queue: u16, args: (u32, u64, u64)) {
        self.ring.record(event, queue, args);
        if event.print_level() <= self.print_level {
            crate::storport::port::debug_print(
                event.print_level(),
                event.name(),
                [u64::from(args.0), args.1, args.2],
            );
        }
    }
}

/// The queue value of adapter-wide records.
pub const ADAPTER_WIDE: u16 = u16::MAX;

impl Default for TraceRing {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceRing {
    /// An empty ring.
    #[must_use]
    pub fn new() -> Self {
        Self {
            magic: TRACE_MAGIC,
            next: AtomicU64::new(0),
            records: core::array::from_fn(|_| TraceRecord::default()),
        }
    }

    /// Records `event` about `queue` with its arguments.
    pub fn record(&self, event: TraceEvent, queue: u16, args: (u32, u64, u64)) {
        // ORDERING: the sequence is only a ticket; the record's own publication below carries
        // the ordering a reader needs.
        let sequence = self.next.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let slot = &self.records[(sequence % TRACE_RECORDS as u64) as usize];
        // ORDERING: clearing the sequence first tells a reader the old record is going away;
        // a reader that sees the new fields with the old sequence rejects them because the
        // sequence it reads again afterwards (acquire) is 0 or the new one.
        slot.sequence.store(0, Ordering::Relaxed);
        slot.event.store(event as u16, Ordering::Relaxed);
        slot.queue.store(queue, Ordering::Relaxed);
        slot.arg0.store(args.0, Ordering::Relaxed);
        slot.arg1.store(args.1, Ordering::Relaxed);
        slot.arg2.store(args.2, Ordering::Relaxed);
        // ORDERING: release publishes the fields above with the sequence; pairs with the
        // acquire load in `entries`.
        slot.sequence.store(sequence, Ordering::Release);
    }

    /// Records taken so far (including those the ring has since overwritten).
    #[must_use]
    pub fn recorded(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// The records still in the ring, oldest first; records being written are skipped.
    pub fn entries(&self) -> impl Iterator<Item = TraceEntry> + '_ {
        let newest = self.recorded();
        let oldest = newest.saturating_sub(TRACE_RECORDS as u64 - 1).max(1);
        (oldest..=newest).filter_map(move |sequence| {
            let slot = &self.records[(sequence % TRACE_RECORDS as u64) as usize];
            // ORDERING: acquire pairs with the writer's release of the sequence, so the fields
            // read next are at least those it published.
            if slot.sequence.load(Ordering::Acquire) != sequence {
                return None;
            }
            let entry = TraceEntry {
                sequence,
                event: slot.event.load(Ordering::Relaxed),
                queue: slot.queue.load(Ordering::Relaxed),
                args: (
                    slot.arg0.load(Ordering::Relaxed),
                    slot.arg1.load(Ordering::Relaxed),
                    slot.arg2.load(Ordering::Relaxed),
                ),
            };
            // ORDERING: a fence orders the field loads before the re-check, so a writer that
            // started overwriting the slot meanwhile is caught (seqlock read side).
            core::sync::atomic::fence(Ordering::Acquire);
            (slot.sequence.load(Ordering::Relaxed) == sequence).then_some(entry)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_natvis_names_every_event_as_the_debug_prints_do() {
        let natvis = include_str!("../rvscsi.natvis");
        // Every variant, by its discriminant: a new variant fails to compile here until listed.
        let all = |event: TraceEvent| match event {
            TraceEvent::AdapterFound
            | TraceEvent::Initialized
            | TraceEvent::RegistryAdjusted
            | TraceEvent::DeviceReset
            | TraceEvent::ProtocolViolation
            | TraceEvent::Stopped
            | TraceEvent::Restarted
            | TraceEvent::TmfSent
            | TraceEvent::TmfDone
            | TraceEvent::DeviceEvent
            | TraceEvent::ConfigChanged
            | TraceEvent::UnitControl => event,
        };
        for event in [
            TraceEvent::AdapterFound,
            TraceEvent::Initialized,
            TraceEvent::RegistryAdjusted,
            TraceEvent::DeviceReset,
            TraceEvent::ProtocolViolation,
            TraceEvent::Stopped,
            TraceEvent::Restarted,
            TraceEvent::TmfSent,
            TraceEvent::TmfDone,
            TraceEvent::DeviceEvent,
            TraceEvent::ConfigChanged,
            TraceEvent::UnitControl,
        ]
        .map(all)
        {
            let shown = format!(
                "event.v.value == {}\">#{{sequence.v.value}} {} ",
                event as u16,
                event.name().to_str().unwrap()
            );
            assert!(natvis.contains(&shown), "rvscsi.natvis lacks {shown}");
        }
        assert_eq!(natvis.matches("event.v.value == ").count(), 12);
    }

    #[test]
    fn records_come_back_in_order_with_their_arguments() {
        let ring = TraceRing::new();
        assert_eq!(ring.entries().count(), 0);
        ring.record(TraceEvent::AdapterFound, ADAPTER_WIDE, (4, 0x1234, 32));
        ring.record(
            TraceEvent::DeviceReset,
            2,
            (ResetCause::ResetBus as u32, 17, 0),
        );
        let entries: Vec<_> = ring.entries().collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].event, TraceEvent::AdapterFound as u16);
        assert_eq!(entries[0].args, (4, 0x1234, 32));
        assert_eq!(entries[1].sequence, 2);
        assert_eq!(entries[1].queue, 2);
        assert_eq!(entries[1].args.1, 17);
        assert_eq!(ring.magic, TRACE_MAGIC);
    }

    #[test]
    fn the_ring_keeps_the_newest_records_when_it_wraps() {
        let ring = TraceRing::new();
        let total = TRACE_RECORDS as u64 * 3 + 5;
        for n in 0..total {
            ring.record(TraceEvent::DeviceEvent, 0, (0, n, 0));
        }
        let entries: Vec<_> = ring.entries().collect();
        assert_eq!(entries.len(), TRACE_RECORDS);
        assert_eq!(entries.last().map(|e| e.args.1), Some(total - 1));
        assert_eq!(entries[0].args.1, total - TRACE_RECORDS as u64);
        assert!(
            entries
                .windows(2)
                .all(|w| w[1].sequence == w[0].sequence + 1)
        );
    }

    #[test]
    fn concurrent_writers_lose_no_record_and_tear_none() {
        let ring = Arc::new(TraceRing::new());
        let writers: Vec<_> = (0..4u16)
            .map(|queue| {
                let ring = Arc::clone(&ring);
                std::thread::spawn(move || {
                    for n in 0..40u64 {
                        // arg2 is arg1 + queue, so a torn record is visible.
                        ring.record(TraceEvent::DeviceEvent, queue, (0, n, n + u64::from(queue)));
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let entries: Vec<_> = ring.entries().collect();
        assert_eq!(ring.recorded(), 160);
        assert_eq!(entries.len(), 160);
        for entry in entries {
            assert_eq!(entry.args.2, entry.args.1 + u64::from(entry.queue));
        }
    }
}
