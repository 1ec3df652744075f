//! controlq requests (virtio 1.x section 5.6.6.2): task management functions and asynchronous
//! notification query/subscribe, and the typed outcome of their responses.

use super::command::ProtocolViolation;
use super::lun::Lun;
use super::wire::{AnEvents, AnReq, AnResp, ControlType, Response, TmfReq, TmfResp, TmfSubtype};

impl TmfReq {
    /// Task management function `subtype` on `lun`; `tag` names the command for ABORT TASK and
    /// QUERY TASK and is ignored by the others (the spec still requires the field).
    #[must_use]
    pub fn new(subtype: TmfSubtype, lun: Lun, tag: u64) -> Self {
        Self {
            control_type: ControlType::Tmf.raw().into(),
            subtype: subtype.raw().into(),
            lun: lun.encode(),
            tag: tag.into(),
        }
    }
}

impl AnReq {
    /// `VIRTIO_SCSI_T_AN_QUERY`: which of `events` can `lun` report.
    #[must_use]
    pub fn query(lun: Lun, events: AnEvents) -> Self {
        Self::new(ControlType::AnQuery, lun, events)
    }

    /// `VIRTIO_SCSI_T_AN_SUBSCRIBE`: ask `lun` to report `events` on the eventq.
    #[must_use]
    pub fn subscribe(lun: Lun, events: AnEvents) -> Self {
        Self::new(ControlType::AnSubscribe, lun, events)
    }

    fn new(control_type: ControlType, lun: Lun, events: AnEvents) -> Self {
        Self {
            control_type: control_type.raw().into(),
            lun: lun.encode(),
            event_requested: events.bits().into(),
        }
    }
}

/// A controlq failure, valid as the answer to any controlq request (virtio 1.x section
/// 5.6.6.2, "response values valid for all commands").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlFailure {
    /// `VIRTIO_SCSI_S_BAD_TARGET`: the target does not exist.
    BadTarget,
    /// `VIRTIO_SCSI_S_INCORRECT_LUN`: the logical unit does not exist.
    IncorrectLun,
    /// `VIRTIO_SCSI_S_BUSY`: retrying is likely to work.
    Busy,
    /// `VIRTIO_SCSI_S_TRANSPORT_FAILURE`.
    TransportFailure,
    /// `VIRTIO_SCSI_S_TARGET_FAILURE`.
    TargetFailure,
    /// `VIRTIO_SCSI_S_NEXUS_FAILURE`.
    NexusFailure,
    /// `VIRTIO_SCSI_S_FAILURE`.
    Failure,
}

/// The outcome of a task management function (the SAM service responses, which the spec maps
/// 1-to-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TmfOutcome {
    /// `VIRTIO_SCSI_S_FUNCTION_COMPLETE` (0): done. For QUERY TASK / QUERY TASK SET it means
    /// the task (set) was not found. The device has completed every command the function
    /// affected before this (section 5.6.6.2), so their completions are already in the used
    /// rings.
    Complete,
    /// `VIRTIO_SCSI_S_FUNCTION_SUCCEEDED` (10): done; for QUERY TASK the task exists.
    Succeeded,
    /// `VIRTIO_SCSI_S_FUNCTION_REJECTED` (11): the device does not perform this function.
    Rejected,
    /// The request failed.
    Failed(ControlFailure),
}

impl TmfOutcome {
    /// Whether the function was carried out (`Complete` or `Succeeded`). vioscsi accepts
    /// exactly these two and asserts on anything else; here the others are values.
    #[must_use]
    pub const fn is_success(self) -> bool {
        matches!(self, Self::Complete | Self::Succeeded)
    }
}

/// The outcome of an AN QUERY or AN SUBSCRIBE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnOutcome {
    /// `VIRTIO_SCSI_S_OK`: the event classes the device supports for the LUN (QEMU answers
    /// none). Intersect with what was requested before relying on them.
    Supported(AnEvents),
    /// The request failed.
    Failed(ControlFailure),
}

const fn control_failure(response: Response) -> Option<ControlFailure> {
    Some(match response {
        Response::BadTarget => ControlFailure::BadTarget,
        Response::IncorrectLun => ControlFailure::IncorrectLun,
        Response::Busy => ControlFailure::Busy,
        Response::TransportFailure => ControlFailure::TransportFailure,
        Response::TargetFailure => ControlFailure::TargetFailure,
        Response::NexusFailure => ControlFailure::NexusFailure,
        Response::Failure => ControlFailure::Failure,
        _ => return None,
    })
}

/// Interprets a TMF response.
///
/// # Errors
/// [`ProtocolViolation::InvalidResponse`] for a value the spec does not define on the controlq
/// (the command-only `OVERRUN`, `ABORTED`, `RESET`, or anything above 12). The TMF must be
/// treated as failed and the device reset, which is the escalation a failed TMF leads to anyway.
pub const fn complete_tmf(resp: &TmfResp) -> Result<TmfOutcome, ProtocolViolation> {
    let invalid = ProtocolViolation::InvalidResponse {
        response: resp.response,
    };
    let Some(response) = Response::from_raw(resp.response) else {
        return Err(invalid);
    };
    Ok(match response {
        Response::Ok => TmfOutcome::Complete,
        Response::FunctionSucceeded => TmfOutcome::Succeeded,
        Response::FunctionRejected => TmfOutcome::Rejected,
        other => match control_failure(other) {
            Some(failure) => TmfOutcome::Failed(failure),
            None => return Err(invalid),
        },
    })
}

/// Interprets an AN QUERY / AN SUBSCRIBE response.
///
/// # Errors
/// [`ProtocolViolation::InvalidResponse`] for a value not defined for AN requests (the
/// TMF-only and command-only codes, anything above 12);
/// [`ProtocolViolation::UndefinedAsyncEvents`] if `event_actual` has bits outside
/// [`AnEvents::all`].
pub fn complete_an(resp: &AnResp) -> Result<AnOutcome, ProtocolViolation> {
    let invalid = ProtocolViolation::InvalidResponse {
        response: resp.response,
    };
    let response = Response::from_raw(resp.response).ok_or(invalid)?;
    if let Some(failure) = control_failure(response) {
        return Ok(AnOutcome::Failed(failure));
    }
    if response != Response::Ok {
        return Err(invalid);
    }
    let events = resp.event_actual.get();
    AnEvents::from_bits(events)
        .map(AnOutcome::Supported)
        .ok_or(ProtocolViolation::UndefinedAsyncEvents { events })
}

#[cfg(test)]
mod tests {
    use zerocopy::IntoBytes;
    use zerocopy::little_endian::U32;

    use super::*;

    #[test]
    fn tmf_requests_carry_type_subtype_lun_and_tag() {
        let lun = Lun::new(2, 7).unwrap();
        let req = TmfReq::new(TmfSubtype::AbortTask, lun, 0x0A0B_0C0D);
        let mut expected = [0u8; 24];
        expected[8..16].copy_from_slice(&[1, 2, 0, 7, 0, 0, 0, 0]);
        expected[16..20].copy_from_slice(&[0x0D, 0x0C, 0x0B, 0x0A]);
        assert_eq!(req.as_bytes(), &expected);
        let reset = TmfReq::new(TmfSubtype::LogicalUnitReset, lun, 0);
        assert_eq!(reset.subtype.get(), 5);
        assert_eq!(reset.control_type.get(), 0);
    }

    #[test]
    fn an_requests_carry_their_type_and_events() {
        let lun = Lun::new(0, 0).unwrap();
        let events = AnEvents::MEDIA_CHANGE | AnEvents::OPERATIONAL_CHANGE;
        let query = AnReq::query(lun, events);
        assert_eq!(
            query.as_bytes(),
            &[1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x12, 0, 0, 0]
        );
        assert_eq!(AnReq::subscribe(lun, events).control_type.get(), 2);
    }

    #[test]
    fn every_tmf_response_value() {
        use ControlFailure::*;
        let invalid = |response| Err(ProtocolViolation::InvalidResponse { response });
        let expected: [(u8, Result<TmfOutcome, ProtocolViolation>); 15] = [
            (0, Ok(TmfOutcome::Complete)),
            (1, invalid(1)),
            (2, invalid(2)),
            (3, Ok(TmfOutcome::Failed(BadTarget))),
            (4, invalid(4)),
            (5, Ok(TmfOutcome::Failed(Busy))),
            (6, Ok(TmfOutcome::Failed(TransportFailure))),
            (7, Ok(TmfOutcome::Failed(TargetFailure))),
            (8, Ok(TmfOutcome::Failed(NexusFailure))),
            (9, Ok(TmfOutcome::Failed(Failure))),
            (10, Ok(TmfOutcome::Succeeded)),
            (11, Ok(TmfOutcome::Rejected)),
            (12, Ok(TmfOutcome::Failed(IncorrectLun))),
            (13, invalid(13)),
            (255, invalid(255)),
        ];
        for (response, outcome) in expected {
            assert_eq!(
                complete_tmf(&TmfResp { response }),
                outcome,
                "response {response}"
            );
            let success = outcome.is_ok_and(TmfOutcome::is_success);
            assert_eq!(success, matches!(response, 0 | 10), "response {response}");
        }
    }

    #[test]
    fn every_an_response_value() {
        use ControlFailure::*;
        let an = |response, events| AnResp {
            event_actual: U32::new(events),
            response,
        };
        let invalid = |response| Err(ProtocolViolation::InvalidResponse { response });
        let expected: [(u8, Result<AnOutcome, ProtocolViolation>); 15] = [
            (0, Ok(AnOutcome::Supported(AnEvents::MEDIA_CHANGE))),
            (1, invalid(1)),
            (2, invalid(2)),
            (3, Ok(AnOutcome::Failed(BadTarget))),
            (4, invalid(4)),
            (5, Ok(AnOutcome::Failed(Busy))),
            (6, Ok(AnOutcome::Failed(TransportFailure))),
            (7, Ok(AnOutcome::Failed(TargetFailure))),
            (8, Ok(AnOutcome::Failed(NexusFailure))),
            (9, Ok(AnOutcome::Failed(Failure))),
            (10, invalid(10)),
            (11, invalid(11)),
            (12, Ok(AnOutcome::Failed(IncorrectLun))),
            (13, invalid(13)),
            (255, invalid(255)),
        ];
        for (response, outcome) in expected {
            assert_eq!(
                complete_an(&an(response, 0x10)),
                outcome,
                "response {response}"
            );
        }
        assert_eq!(
            complete_an(&an(0, 0)),
            Ok(AnOutcome::Supported(AnEvents::empty()))
        );
        for events in [1, 0x80, 0x8000_0000, 0x7F] {
            assert_eq!(
                complete_an(&an(0, events)),
                Err(ProtocolViolation::UndefinedAsyncEvents { events })
            );
        }
    }
}
