//! eventq events (virtio 1.x section 5.6.6.3), decoded and validated into [`EventKind`].
//!
//! What the miniport does with them (section 5.6.6.3.1): a transport reset with reason RESCAN or
//! REMOVED, a parameter change, and any event with `events_missed` set all ask for a bus rescan
//! (`BusChangeDetected`); for LUN 0, RESCAN and REMOVED may concern the whole target. An event
//! that fails to decode is still a sign that something changed, so the safe reaction to an
//! [`EventError`] is the same rescan, plus a trace of the offending value. vioscsi ignores
//! `EVENTS_MISSED` and asynchronous notifications (its bug list, item 8).

use super::lun::{Lun, LunError};
use super::wire::{AnEvents, Event, EventType, ResetReason};

/// A decoded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedEvent {
    /// What happened.
    pub kind: EventKind,
    /// `VIRTIO_SCSI_T_EVENTS_MISSED` was set: the device dropped events for lack of buffers, so
    /// the driver should rescan.
    pub events_missed: bool,
}

/// The event types of section 5.6.6.3 with their validated payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `VIRTIO_SCSI_T_NO_EVENT`: nothing, except possibly `events_missed`. The LUN and reason
    /// are not looked at (QEMU leaves them zero).
    NoEvent,
    /// `VIRTIO_SCSI_T_TRANSPORT_RESET`: `lun` was reset, appeared or disappeared.
    TransportReset {
        /// The logical unit (for RESCAN and REMOVED on LUN 0, possibly the whole target).
        lun: Lun,
        /// What happened to it.
        reason: ResetReason,
    },
    /// `VIRTIO_SCSI_T_ASYNC_NOTIFY`: subscribed asynchronous events fired.
    AsyncNotification {
        /// The logical unit.
        lun: Lun,
        /// The events (a subset of those subscribed to).
        events: AnEvents,
    },
    /// `VIRTIO_SCSI_T_PARAM_CHANGE`: a parameter of `lun` changed; `asc`/`ascq` are the unit
    /// attention's additional sense code and qualifier (for example 0x2A/0x09, CAPACITY DATA
    /// HAS CHANGED).
    ParamChange {
        /// The logical unit.
        lun: Lun,
        /// Additional sense code (bits 0-7 of `reason`).
        asc: u8,
        /// Additional sense code qualifier (bits 8-15 of `reason`).
        ascq: u8,
    },
}

/// Why an event could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventError {
    /// `event` (without the missed bit) is not a defined event type.
    UnknownType {
        /// The raw `event` field.
        event: u32,
    },
    /// The LUN field is not a target plus single-level LUN.
    MalformedLun(LunError),
    /// A transport reset with a reason other than HARD, RESCAN or REMOVED.
    UnknownResetReason {
        /// The raw `reason` field.
        reason: u32,
    },
    /// A parameter change whose `reason` has bits above the ASC/ASCQ pair.
    MalformedParamChange {
        /// The raw `reason` field.
        reason: u32,
    },
    /// An asynchronous notification with event bits the spec does not define.
    UndefinedAsyncEvents {
        /// The raw `reason` field.
        reason: u32,
    },
}

impl core::fmt::Display for EventError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::UnknownType { event } => write!(f, "undefined event type {event:#x}"),
            Self::MalformedLun(error) => write!(f, "event LUN: {error}"),
            Self::UnknownResetReason { reason } => {
                write!(f, "undefined transport reset reason {reason}")
            }
            Self::MalformedParamChange { reason } => write!(
                f,
                "parameter change reason {reason:#x} has bits above ASC/ASCQ"
            ),
            Self::UndefinedAsyncEvents { reason } => {
                write!(f, "undefined asynchronous event bits {reason:#x}")
            }
        }
    }
}

impl core::error::Error for EventError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::MalformedLun(error) => Some(error),
            _ => None,
        }
    }
}

impl Event {
    /// Whether `VIRTIO_SCSI_T_EVENTS_MISSED` is set. Readable even when [`Event::decode`]
    /// fails, so a lost-events report is never lost with a malformed event.
    #[must_use]
    pub fn events_missed(&self) -> bool {
        self.event.get() & Self::EVENTS_MISSED != 0
    }

    /// Decodes and validates the event.
    ///
    /// # Errors
    /// An [`EventError`] naming the first field that is not as the spec defines it.
    pub fn decode(&self) -> Result<DecodedEvent, EventError> {
        let raw = self.event.get();
        let event_type = EventType::from_raw(raw & !Self::EVENTS_MISSED)
            .ok_or(EventError::UnknownType { event: raw })?;
        let reason = self.reason.get();
        let lun = || Lun::decode(self.lun).map_err(EventError::MalformedLun);
        let kind = match event_type {
            EventType::NoEvent => EventKind::NoEvent,
            EventType::TransportReset => EventKind::TransportReset {
                lun: lun()?,
                reason: ResetReason::from_raw(reason)
                    .ok_or(EventError::UnknownResetReason { reason })?,
            },
            EventType::AsyncNotify => EventKind::AsyncNotification {
                lun: lun()?,
                events: AnEvents::from_bits(reason)
                    .ok_or(EventError::UndefinedAsyncEvents { reason })?,
            },
            EventType::ParamChange => {
                let lun = lun()?;
                let [asc, ascq, high @ ..] = reason.to_le_bytes();
                if high != [0, 0] {
                    return Err(EventError::MalformedParamChange { reason });
                }
                EventKind::ParamChange { lun, asc, ascq }
            }
        };
        Ok(DecodedEvent {
            kind,
            events_missed: self.events_missed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use zerocopy::FromBytes;
    use zerocopy::little_endian::U32;

    use super::*;

    fn event(event: u32, lun: [u8; 8], reason: u32) -> Event {
        Event {
            event: U32::new(event),
            lun,
            reason: U32::new(reason),
        }
    }

    const LUN_3_5: [u8; 8] = [1, 3, 0, 5, 0, 0, 0, 0];
    const LUN_9_300: [u8; 8] = [1, 9, 0x41, 0x2C, 0, 0, 0, 0];

    #[test]
    fn no_event_ignores_lun_and_reason_and_reports_missed_events() {
        let decoded = event(0, [0; 8], 0).decode().unwrap();
        assert_eq!(
            decoded,
            DecodedEvent {
                kind: EventKind::NoEvent,
                events_missed: false
            }
        );
        let decoded = event(0x8000_0000, [0xFF; 8], 77).decode().unwrap();
        assert_eq!(
            decoded,
            DecodedEvent {
                kind: EventKind::NoEvent,
                events_missed: true
            }
        );
    }

    #[test]
    fn transport_reset_for_every_reason() {
        let lun = Lun::new(3, 5).unwrap();
        for (raw, reason) in [
            (0, ResetReason::Hard),
            (1, ResetReason::Rescan),
            (2, ResetReason::Removed),
        ] {
            for missed in [0, Event::EVENTS_MISSED] {
                let decoded = event(1 | missed, LUN_3_5, raw).decode().unwrap();
                let kind = EventKind::TransportReset { lun, reason };
                assert_eq!(
                    decoded,
                    DecodedEvent {
                        kind,
                        events_missed: missed != 0
                    }
                );
            }
        }
        for reason in [3, 0x100, u32::MAX] {
            assert_eq!(
                event(1, LUN_3_5, reason).decode(),
                Err(EventError::UnknownResetReason { reason })
            );
        }
    }

    #[test]
    fn async_notification_carries_defined_event_bits_only() {
        let lun = Lun::new(9, 300).unwrap();
        let decoded = event(2, LUN_9_300, 0x10).decode().unwrap();
        let kind = EventKind::AsyncNotification {
            lun,
            events: AnEvents::MEDIA_CHANGE,
        };
        assert_eq!(decoded.kind, kind);
        for reason in [1, 0x80, 0x7F] {
            assert_eq!(
                event(2, LUN_9_300, reason).decode(),
                Err(EventError::UndefinedAsyncEvents { reason })
            );
        }
    }

    #[test]
    fn param_change_splits_asc_and_ascq() {
        let lun = Lun::new(3, 5).unwrap();
        let decoded = event(3, LUN_3_5, 0x092A).decode().unwrap();
        assert_eq!(
            decoded.kind,
            EventKind::ParamChange {
                lun,
                asc: 0x2A,
                ascq: 0x09
            }
        );
        let decoded = event(3 | Event::EVENTS_MISSED, LUN_3_5, 0x0000_0129)
            .decode()
            .unwrap();
        assert_eq!(
            decoded.kind,
            EventKind::ParamChange {
                lun,
                asc: 0x29,
                ascq: 0x01
            }
        );
        assert!(decoded.events_missed);
        for reason in [0x0001_092A, 0x8000_0000] {
            assert_eq!(
                event(3, LUN_3_5, reason).decode(),
                Err(EventError::MalformedParamChange { reason })
            );
        }
    }

    #[test]
    fn unknown_types_and_malformed_luns_are_refused() {
        for raw in [4, 0x8000_0004, 0x4000_0001, u32::MAX] {
            let bad = event(raw, LUN_3_5, 0);
            assert_eq!(bad.decode(), Err(EventError::UnknownType { event: raw }));
            assert_eq!(bad.events_missed(), raw & 0x8000_0000 != 0);
        }
        let malformed: [[u8; 8]; 4] = [
            [0; 8],
            [2, 3, 0, 5, 0, 0, 0, 0],
            [1, 3, 0x80, 5, 0, 0, 0, 0],
            [1, 3, 0, 5, 0, 0, 1, 0],
        ];
        for bytes in malformed {
            for (event_type, reason) in [(1, 1), (2, 0x10), (3, 0x092A)] {
                assert_eq!(
                    event(event_type, bytes, reason).decode(),
                    Err(EventError::MalformedLun(LunError::Malformed { bytes })),
                    "type {event_type} lun {bytes:02x?}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn random_events_never_panic_and_keep_the_missed_bit(
            bytes in proptest::collection::vec(any::<u8>(), 16)
        ) {
            let event = Event::read_from_bytes(&bytes).unwrap();
            if let Ok(decoded) = event.decode() {
                prop_assert_eq!(decoded.events_missed, event.events_missed());
                prop_assert!((event.event.get() & !Event::EVENTS_MISSED) <= 3);
            }
        }
    }
}
