//! Command requests (virtio 1.x section 5.6.6.1) and the one mapping from a command response to
//! what the miniport completes the SRB with ([`complete_command`]).

use super::lun::Lun;
use super::scsi_status::{CHECK_CONDITION, COMMAND_TERMINATED, GOOD};
use super::wire::{CmdReq, CmdResp, CmdRespHeader, Response, TaskAttr};
use super::{CDB_SIZE, SENSE_SIZE};

/// Why a request could not be built. These are caller errors (a malformed SRB), never device
/// misbehaviour: the miniport completes the SRB with `SRB_STATUS_INVALID_REQUEST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The CDB is empty or longer than [`CDB_SIZE`].
    CdbLength {
        /// The CDB length given.
        len: usize,
    },
}

impl core::fmt::Display for RequestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::CdbLength { len } => {
                write!(f, "CDB of {len} bytes (must be 1 to {CDB_SIZE})")
            }
        }
    }
}

impl core::error::Error for RequestError {}

impl CmdReq {
    /// A command for `lun` with identifier `tag`, task attribute SIMPLE, priority 0 and CRN 0
    /// (section 5.6.6.1.2: they should be zero), and `cdb` zero-padded to [`CDB_SIZE`].
    ///
    /// # Errors
    /// [`RequestError::CdbLength`] if `cdb` is empty or longer than [`CDB_SIZE`]. vioscsi
    /// silently truncates longer CDBs, which sends a different command than was asked for.
    pub fn new(lun: Lun, tag: u64, cdb: &[u8]) -> Result<Self, RequestError> {
        let mut padded = [0u8; CDB_SIZE];
        match padded.get_mut(..cdb.len()) {
            Some(head) if !cdb.is_empty() => head.copy_from_slice(cdb),
            _ => return Err(RequestError::CdbLength { len: cdb.len() }),
        }
        Ok(Self {
            lun: lun.encode(),
            tag: tag.into(),
            task_attr: TaskAttr::Simple.raw(),
            prio: 0,
            crn: 0,
            cdb: padded,
        })
    }

    /// The same request with task attribute `attr` (from the SRB's queue action). Devices may
    /// treat every attribute as SIMPLE.
    #[must_use]
    pub const fn with_task_attr(mut self, attr: TaskAttr) -> Self {
        self.task_attr = attr.raw();
        self
    }
}

/// Direction of the data buffers posted with a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirection {
    /// No data buffers.
    None,
    /// Data-out (device-readable) buffers: a write.
    ToDevice,
    /// Data-in (device-writable) buffers: a read.
    FromDevice,
    /// Both; needs `VIRTIO_SCSI_F_INOUT`. The residual then counts both directions.
    Bidirectional,
}

/// What the driver posted with a command: the data direction, the data length, and how many
/// sense bytes the SRB can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    direction: DataDirection,
    length: u32,
    sense_capacity: u32,
}

impl Transfer {
    /// `length` bytes of data buffers posted in `direction` (the sum of the descriptor lengths
    /// actually posted, which is what the device's residual refers to), and a sense buffer of
    /// `sense_capacity` bytes (0 when the SRB has none or disables autosense).
    ///
    /// With [`DataDirection::None`] the length is taken as 0 whatever is passed, so any
    /// residual the device reports is a protocol violation.
    #[must_use]
    pub const fn new(direction: DataDirection, length: u32, sense_capacity: u32) -> Self {
        let length = if matches!(direction, DataDirection::None) {
            0
        } else {
            length
        };
        Self {
            direction,
            length,
            sense_capacity,
        }
    }

    /// The data direction.
    #[must_use]
    pub const fn direction(&self) -> DataDirection {
        self.direction
    }

    /// Bytes of data buffers posted (both directions together).
    #[must_use]
    pub const fn length(&self) -> u32 {
        self.length
    }

    /// Bytes the caller's sense buffer holds.
    #[must_use]
    pub const fn sense_capacity(&self) -> u32 {
        self.sense_capacity
    }
}

/// A device broke the virtio-scsi protocol in a response. The miniport fails the affected
/// request with `SRB_STATUS_ERROR` and resets the device (ARCHITECTURE: device boundary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolViolation {
    /// A `response` value the spec does not define for this queue: above 12 anywhere,
    /// `FUNCTION_SUCCEEDED`/`FUNCTION_REJECTED` on a request queue, command-only values on the
    /// controlq.
    InvalidResponse {
        /// The value the device wrote.
        response: u8,
    },
    /// `residual` is larger than the data posted; by definition (data length minus bytes
    /// transferred) it cannot be.
    ResidualExceedsTransfer {
        /// The residual the device wrote.
        residual: u32,
        /// The data length posted.
        length: u32,
    },
    /// An AN response or event names event classes the spec does not define.
    UndefinedAsyncEvents {
        /// The raw bits the device wrote.
        events: u32,
    },
}

impl core::fmt::Display for ProtocolViolation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::InvalidResponse { response } => {
                write!(f, "response {response} is not valid on this queue")
            }
            Self::ResidualExceedsTransfer { residual, length } => write!(
                f,
                "residual {residual} exceeds the {length} bytes of data posted"
            ),
            Self::UndefinedAsyncEvents { events } => {
                write!(f, "undefined asynchronous event bits {events:#x}")
            }
        }
    }
}

impl core::error::Error for ProtocolViolation {}

/// How the miniport completes the SRB. Each variant is one Windows SRB status; the doc of
/// each says which. `SRB_STATUS_AUTOSENSE_VALID` is added on top when
/// [`CommandOutcome::autosense_valid`] says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// `SRB_STATUS_SUCCESS`: status GOOD and every posted byte transferred.
    Success,
    /// `SRB_STATUS_DATA_OVERRUN`, with `DataTransferLength` set to
    /// [`CommandOutcome::transferred`]. Windows uses this one status for both directions of
    /// mismatch: an underrun (GOOD with a residual; the class driver accepts short INQUIRY,
    /// MODE SENSE and similar data) and the device's `VIRTIO_SCSI_S_OVERRUN`.
    DataOverrun,
    /// `SRB_STATUS_ERROR`, with `ScsiStatus` set to [`CommandOutcome::scsi_status`]. Either
    /// the device completed the command with a SCSI status other than GOOD (CHECK CONDITION,
    /// RESERVATION CONFLICT, BUSY, TASK SET FULL, ... passed through untouched for the class
    /// driver and the cluster service), or the transport failed (`TRANSPORT_FAILURE`,
    /// `TARGET_FAILURE`, `NEXUS_FAILURE`, `FAILURE`) and `ScsiStatus` is GOOD.
    Error,
    /// `SRB_STATUS_ABORTED`: cancelled by ABORT TASK or ABORT TASK SET.
    Aborted,
    /// `SRB_STATUS_INVALID_TARGET_ID`: the target does not exist (also the answer during a bus
    /// scan).
    InvalidTargetId,
    /// `SRB_STATUS_INVALID_LUN`: the logical unit does not exist.
    InvalidLun,
    /// `SRB_STATUS_BUS_RESET`: cancelled by a reset; the class driver retries.
    BusReset,
    /// `SRB_STATUS_BUSY`: `StorPort` retries the request later.
    Busy,
    /// `SRB_STATUS_ERROR`, and the miniport must reset the device: the response broke the
    /// protocol, so nothing else it says can be trusted (nothing is reported transferred and
    /// no sense is valid).
    ProtocolViolation(ProtocolViolation),
}

impl Disposition {
    /// Whether the device broke the protocol and must be reset.
    #[must_use]
    pub const fn requires_device_reset(self) -> bool {
        matches!(self, Self::ProtocolViolation(_))
    }
}

/// Everything the miniport needs to complete one SRB, from [`complete_command`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandOutcome {
    /// The SRB status to complete with.
    pub disposition: Disposition,
    /// The value for the SRB's `ScsiStatus`: the device's status byte exactly as written when
    /// the response is `VIRTIO_SCSI_S_OK`, otherwise GOOD (the spec fills the status byte only
    /// for `VIRTIO_SCSI_S_OK`, section 5.6.6.1.1, and QEMU leaves it 0 for the others).
    pub scsi_status: u8,
    /// Sense bytes the device wrote that the caller can take:
    /// `min(sense_len, SENSE_SIZE, sense capacity)`. Copy them ([`CommandOutcome::sense`])
    /// and report this length only when `autosense_valid`.
    pub sense_len: u8,
    /// Whether to copy the sense, set `SenseInfoBufferLength` to `sense_len` and add
    /// `SRB_STATUS_AUTOSENSE_VALID`: the response is `VIRTIO_SCSI_S_OK`, the status is
    /// CHECK CONDITION or COMMAND TERMINATED, and at least one sense byte fits.
    pub autosense_valid: bool,
    /// Bytes transferred, for `DataTransferLength`; never more than the posted length.
    pub transferred: u32,
}

impl CommandOutcome {
    /// The valid sense bytes of `resp` (the response this outcome was computed from).
    #[must_use]
    pub fn sense<'a>(&self, resp: &'a CmdResp) -> &'a [u8] {
        resp.sense.get(..usize::from(self.sense_len)).unwrap_or(&[])
    }

    const fn violation(violation: ProtocolViolation) -> Self {
        Self {
            disposition: Disposition::ProtocolViolation(violation),
            scsi_status: GOOD,
            sense_len: 0,
            autosense_valid: false,
            transferred: 0,
        }
    }
}

/// Maps a command response to the SRB completion: the one place that decides how an I/O ends.
///
/// | `response` | SCSI status | disposition (SRB status) | `ScsiStatus` | transferred |
/// |---|---|---|---|---|
/// | `OK` (0) | GOOD, residual 0 | `Success` | GOOD | length |
/// | `OK` (0) | GOOD, residual > 0 | `DataOverrun` (underrun) | GOOD | length - residual |
/// | `OK` (0) | anything else | `Error` | as sent | length - residual |
/// | `OVERRUN` (1) | - | `DataOverrun` | GOOD | 0 |
/// | `ABORTED` (2) | - | `Aborted` | GOOD | 0 |
/// | `BAD_TARGET` (3) | - | `InvalidTargetId` | GOOD | 0 |
/// | `RESET` (4) | - | `BusReset` | GOOD | 0 |
/// | `BUSY` (5) | - | `Busy` | GOOD | 0 |
/// | `TRANSPORT_FAILURE` (6) to `FAILURE` (9) | - | `Error` | GOOD | 0 |
/// | `INCORRECT_LUN` (12) | - | `InvalidLun` | GOOD | 0 |
/// | 10, 11, 13-255 | - | `ProtocolViolation` (reset) | GOOD | 0 |
/// | any, residual > length | - | `ProtocolViolation` (reset) | GOOD | 0 |
///
/// Sense: `min(sense_len, 96, capacity)` bytes; autosense valid only for `OK` with CHECK
/// CONDITION or COMMAND TERMINATED and at least one byte.
///
/// Responses other than `OK` report 0 bytes transferred: the command did not complete, and
/// QEMU leaves the residual 0 on several of those paths (it answers `BAD_TARGET` and
/// `OVERRUN` from a zeroed response), so the residual cannot say what moved. The residual is
/// still checked against the length for every response: a larger one is never valid.
///
/// Kept from vioscsi's `HandleResponse`: the SRB status for each defined response code, the
/// status byte passed through for `OK`, the underrun reported as `DATA_OVERRUN` with a reduced
/// length, and 0 bytes for `OVERRUN` (QEMU answers it before running the command and leaves the
/// residual 0, so trusting the residual would report a transfer that never happened).
///
/// Fixed here (vioscsi behaviour in parentheses):
/// - autosense is valid only for CHECK CONDITION / COMMAND TERMINATED with sense present (set
///   for every `SRB_STATUS_ERROR`, so a RESERVATION CONFLICT came with stale "valid" sense);
/// - the sense length is bounded by the 96-byte field and reported exactly (the device's
///   `sense_len` was trusted, reading past the field when the SRB buffer is larger, and
///   `SenseInfoBufferLength` was left unchanged);
/// - a residual equal to the length is a zero-byte underrun (reported as full success), and a
///   residual above it is a protocol violation with a device reset (silently ignored);
/// - `ERROR` keeps the transferred count (zeroed, which turns a RECOVERED ERROR read, whose
///   data is good, into a zero-length transfer);
/// - `INCORRECT_LUN` is `InvalidLun` (generic `ERROR`), and undefined codes reset the device
///   (generic `ERROR`).
#[must_use]
#[inline]
pub fn complete_command(resp: &CmdResp, transfer: &Transfer) -> CommandOutcome {
    complete_header(&resp.header(), transfer)
}

/// [`complete_command`] from the response's fixed head alone (the sense bytes are not needed to
/// decide how the command ended): what the miniport reads on every completion, before it reads
/// any sense.
#[must_use]
#[inline]
pub fn complete_header(resp: &CmdRespHeader, transfer: &Transfer) -> CommandOutcome {
    let Some(response) = Response::from_raw(resp.response) else {
        return CommandOutcome::violation(ProtocolViolation::InvalidResponse {
            response: resp.response,
        });
    };
    let length = transfer.length();
    let residual = resp.resid.get();
    let Some(moved) = length.checked_sub(residual) else {
        return CommandOutcome::violation(ProtocolViolation::ResidualExceedsTransfer {
            residual,
            length,
        });
    };
    let (disposition, scsi_status, transferred) = match response {
        Response::Ok => {
            let status = resp.status;
            let disposition = if status != GOOD {
                Disposition::Error
            } else if residual > 0 {
                Disposition::DataOverrun
            } else {
                Disposition::Success
            };
            (disposition, status, moved)
        }
        Response::Overrun => (Disposition::DataOverrun, GOOD, 0),
        Response::Aborted => (Disposition::Aborted, GOOD, 0),
        Response::BadTarget => (Disposition::InvalidTargetId, GOOD, 0),
        Response::IncorrectLun => (Disposition::InvalidLun, GOOD, 0),
        Response::Reset => (Disposition::BusReset, GOOD, 0),
        Response::Busy => (Disposition::Busy, GOOD, 0),
        Response::TransportFailure
        | Response::TargetFailure
        | Response::NexusFailure
        | Response::Failure => (Disposition::Error, GOOD, 0),
        Response::FunctionSucceeded | Response::FunctionRejected => {
            return CommandOutcome::violation(ProtocolViolation::InvalidResponse {
                response: resp.response,
            });
        }
    };
    // SENSE_SIZE is 96, so the minimum always fits a byte.
    let sense_len = resp
        .sense_len
        .get()
        .min(SENSE_SIZE as u32)
        .min(transfer.sense_capacity());
    let sense_len = sense_len as u8;
    let autosense_valid = matches!(response, Response::Ok)
        && matches!(scsi_status, CHECK_CONDITION | COMMAND_TERMINATED)
        && sense_len > 0;
    CommandOutcome {
        disposition,
        scsi_status,
        sense_len,
        autosense_valid,
        transferred,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use zerocopy::FromBytes;
    use zerocopy::little_endian::{U16, U32};

    use super::super::scsi_status::{BUSY, RESERVATION_CONFLICT, TASK_SET_FULL};
    use super::*;

    fn response(response: u8, status: u8, resid: u32, sense_len: u32) -> CmdResp {
        let mut sense = [0u8; SENSE_SIZE];
        for (i, byte) in sense.iter_mut().enumerate() {
            *byte = i as u8 ^ 0x5A;
        }
        CmdResp {
            sense_len: U32::new(sense_len),
            resid: U32::new(resid),
            status_qualifier: U16::new(0),
            status,
            response,
            sense,
        }
    }

    const READ_4K: Transfer = Transfer::new(DataDirection::FromDevice, 4096, 96);

    #[test]
    fn every_response_code_against_the_common_scsi_statuses() {
        use Disposition::{
            Aborted, BusReset, Busy, DataOverrun, Error, InvalidLun, InvalidTargetId,
        };
        let violation = |response| {
            Disposition::ProtocolViolation(ProtocolViolation::InvalidResponse { response })
        };
        // (response, status, disposition, ScsiStatus, sense_len, autosense, transferred), for a
        // 4096-byte read with residual 512, 18 sense bytes written and a 96-byte sense buffer.
        let rows: [(u8, u8, Disposition, u8, u8, bool, u32); 60] = [
            (0, GOOD, DataOverrun, GOOD, 18, false, 3584),
            (0, CHECK_CONDITION, Error, CHECK_CONDITION, 18, true, 3584),
            (
                0,
                RESERVATION_CONFLICT,
                Error,
                RESERVATION_CONFLICT,
                18,
                false,
                3584,
            ),
            (0, BUSY, Error, BUSY, 18, false, 3584),
            (1, GOOD, DataOverrun, GOOD, 18, false, 0),
            (1, CHECK_CONDITION, DataOverrun, GOOD, 18, false, 0),
            (1, RESERVATION_CONFLICT, DataOverrun, GOOD, 18, false, 0),
            (1, BUSY, DataOverrun, GOOD, 18, false, 0),
            (2, GOOD, Aborted, GOOD, 18, false, 0),
            (2, CHECK_CONDITION, Aborted, GOOD, 18, false, 0),
            (2, RESERVATION_CONFLICT, Aborted, GOOD, 18, false, 0),
            (2, BUSY, Aborted, GOOD, 18, false, 0),
            (3, GOOD, InvalidTargetId, GOOD, 18, false, 0),
            (3, CHECK_CONDITION, InvalidTargetId, GOOD, 18, false, 0),
            (3, RESERVATION_CONFLICT, InvalidTargetId, GOOD, 18, false, 0),
            (3, BUSY, InvalidTargetId, GOOD, 18, false, 0),
            (4, GOOD, BusReset, GOOD, 18, false, 0),
            (4, CHECK_CONDITION, BusReset, GOOD, 18, false, 0),
            (4, RESERVATION_CONFLICT, BusReset, GOOD, 18, false, 0),
            (4, BUSY, BusReset, GOOD, 18, false, 0),
            (5, GOOD, Busy, GOOD, 18, false, 0),
            (5, CHECK_CONDITION, Busy, GOOD, 18, false, 0),
            (5, RESERVATION_CONFLICT, Busy, GOOD, 18, false, 0),
            (5, BUSY, Busy, GOOD, 18, false, 0),
            (6, GOOD, Error, GOOD, 18, false, 0),
            (6, CHECK_CONDITION, Error, GOOD, 18, false, 0),
            (6, RESERVATION_CONFLICT, Error, GOOD, 18, false, 0),
            (6, BUSY, Error, GOOD, 18, false, 0),
            (7, GOOD, Error, GOOD, 18, false, 0),
            (7, CHECK_CONDITION, Error, GOOD, 18, false, 0),
            (7, RESERVATION_CONFLICT, Error, GOOD, 18, false, 0),
            (7, BUSY, Error, GOOD, 18, false, 0),
            (8, GOOD, Error, GOOD, 18, false, 0),
            (8, CHECK_CONDITION, Error, GOOD, 18, false, 0),
            (8, RESERVATION_CONFLICT, Error, GOOD, 18, false, 0),
            (8, BUSY, Error, GOOD, 18, false, 0),
            (9, GOOD, Error, GOOD, 18, false, 0),
            (9, CHECK_CONDITION, Error, GOOD, 18, false, 0),
            (9, RESERVATION_CONFLICT, Error, GOOD, 18, false, 0),
            (9, BUSY, Error, GOOD, 18, false, 0),
            (10, GOOD, violation(10), GOOD, 0, false, 0),
            (10, CHECK_CONDITION, violation(10), GOOD, 0, false, 0),
            (10, RESERVATION_CONFLICT, violation(10), GOOD, 0, false, 0),
            (10, BUSY, violation(10), GOOD, 0, false, 0),
            (11, GOOD, violation(11), GOOD, 0, false, 0),
            (11, CHECK_CONDITION, violation(11), GOOD, 0, false, 0),
            (11, RESERVATION_CONFLICT, violation(11), GOOD, 0, false, 0),
            (11, BUSY, violation(11), GOOD, 0, false, 0),
            (12, GOOD, InvalidLun, GOOD, 18, false, 0),
            (12, CHECK_CONDITION, InvalidLun, GOOD, 18, false, 0),
            (12, RESERVATION_CONFLICT, InvalidLun, GOOD, 18, false, 0),
            (12, BUSY, InvalidLun, GOOD, 18, false, 0),
            (13, GOOD, violation(13), GOOD, 0, false, 0),
            (13, CHECK_CONDITION, violation(13), GOOD, 0, false, 0),
            (13, RESERVATION_CONFLICT, violation(13), GOOD, 0, false, 0),
            (13, BUSY, violation(13), GOOD, 0, false, 0),
            (255, GOOD, violation(255), GOOD, 0, false, 0),
            (255, CHECK_CONDITION, violation(255), GOOD, 0, false, 0),
            (255, RESERVATION_CONFLICT, violation(255), GOOD, 0, false, 0),
            (255, BUSY, violation(255), GOOD, 0, false, 0),
        ];
        for (code, status, disposition, scsi_status, sense_len, autosense_valid, transferred) in
            rows
        {
            let resp = response(code, status, 512, 18);
            let expected = CommandOutcome {
                disposition,
                scsi_status,
                sense_len,
                autosense_valid,
                transferred,
            };
            assert_eq!(
                complete_command(&resp, &READ_4K),
                expected,
                "response {code} status {status:#x}"
            );
            assert_eq!(
                expected.disposition.requires_device_reset(),
                matches!(code, 10 | 11 | 13..)
            );
        }
    }

    #[test]
    fn good_without_residual_is_success_with_the_full_length() {
        let outcome = complete_command(&response(0, GOOD, 0, 0), &READ_4K);
        assert_eq!(outcome.disposition, Disposition::Success);
        assert_eq!(outcome.transferred, 4096);
        for direction in [DataDirection::ToDevice, DataDirection::Bidirectional] {
            let transfer = Transfer::new(direction, 512, 0);
            let outcome = complete_command(&response(0, GOOD, 0, 0), &transfer);
            assert_eq!(
                (outcome.disposition, outcome.transferred),
                (Disposition::Success, 512)
            );
        }
    }

    #[test]
    fn residual_equal_to_the_length_is_an_underrun_of_everything() {
        let outcome = complete_command(&response(0, GOOD, 4096, 0), &READ_4K);
        assert_eq!(outcome.disposition, Disposition::DataOverrun);
        assert_eq!(outcome.transferred, 0);
    }

    #[test]
    fn residual_above_the_length_is_a_protocol_violation_for_every_response() {
        for code in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12] {
            let outcome = complete_command(&response(code, CHECK_CONDITION, 4097, 18), &READ_4K);
            let violation = ProtocolViolation::ResidualExceedsTransfer {
                residual: 4097,
                length: 4096,
            };
            assert_eq!(
                outcome,
                CommandOutcome::violation(violation),
                "response {code}"
            );
            assert!(outcome.disposition.requires_device_reset());
        }
        // Without data, any residual is too large; the length passed is ignored.
        let none = Transfer::new(DataDirection::None, 4096, 96);
        assert_eq!(none.length(), 0);
        let outcome = complete_command(&response(0, GOOD, 1, 0), &none);
        assert_eq!(
            outcome.disposition,
            Disposition::ProtocolViolation(ProtocolViolation::ResidualExceedsTransfer {
                residual: 1,
                length: 0
            })
        );
        let outcome = complete_command(&response(0, GOOD, 0, 0), &none);
        assert_eq!(
            (outcome.disposition, outcome.transferred),
            (Disposition::Success, 0)
        );
    }

    #[test]
    fn sense_is_bounded_by_the_field_and_the_caller_buffer() {
        let cases: [(u32, u32, u8, bool); 7] = [
            // (sense_len written, caller capacity, sense_len reported, autosense)
            (18, 96, 18, true),
            (200, 255, 96, true),
            (u32::MAX, 255, 96, true),
            (96, 18, 18, true),
            (50, 14, 14, true),
            (18, 0, 0, false),
            (0, 96, 0, false),
        ];
        for (written, capacity, reported, autosense) in cases {
            let transfer = Transfer::new(DataDirection::FromDevice, 4096, capacity);
            let resp = response(0, CHECK_CONDITION, 0, written);
            let outcome = complete_command(&resp, &transfer);
            assert_eq!(outcome.disposition, Disposition::Error);
            assert_eq!(outcome.sense_len, reported, "{written} into {capacity}");
            assert_eq!(
                outcome.autosense_valid, autosense,
                "{written} into {capacity}"
            );
            assert_eq!(outcome.sense(&resp), &resp.sense[..usize::from(reported)]);
        }
    }

    #[test]
    fn command_terminated_carries_sense_and_other_statuses_pass_through_untouched() {
        let outcome = complete_command(&response(0, COMMAND_TERMINATED, 0, 18), &READ_4K);
        assert!(outcome.autosense_valid);
        for status in [TASK_SET_FULL, 0x04, 0x30, 0x40, 0xFF] {
            let outcome = complete_command(&response(0, status, 0, 18), &READ_4K);
            assert_eq!(outcome.disposition, Disposition::Error);
            assert_eq!(outcome.scsi_status, status);
            assert!(!outcome.autosense_valid);
            assert_eq!(outcome.transferred, 4096);
        }
    }

    #[test]
    fn command_requests_are_zero_padded_and_length_checked() {
        let lun = Lun::new(3, 300).unwrap();
        let req = CmdReq::new(lun, 0xDEAD_BEEF, &[0x12, 0, 0, 0, 36, 0]).unwrap();
        assert_eq!(req.lun, [1, 3, 0x41, 0x2C, 0, 0, 0, 0]);
        assert_eq!(req.tag.get(), 0xDEAD_BEEF);
        assert_eq!((req.task_attr, req.prio, req.crn), (0, 0, 0));
        assert_eq!(&req.cdb[..6], &[0x12, 0, 0, 0, 36, 0]);
        assert!(req.cdb[6..].iter().all(|&b| b == 0));
        assert_eq!(req.with_task_attr(TaskAttr::Head).task_attr, 2);

        let full: [u8; 32] = core::array::from_fn(|i| i as u8 + 1);
        assert_eq!(CmdReq::new(lun, 1, &full).unwrap().cdb, full);
        assert_eq!(
            CmdReq::new(lun, 1, &[0; 33]),
            Err(RequestError::CdbLength { len: 33 })
        );
        assert_eq!(
            CmdReq::new(lun, 1, &[]),
            Err(RequestError::CdbLength { len: 0 })
        );
    }

    fn direction(index: u8) -> DataDirection {
        match index % 4 {
            0 => DataDirection::None,
            1 => DataDirection::ToDevice,
            2 => DataDirection::FromDevice,
            _ => DataDirection::Bidirectional,
        }
    }

    fn check_bounds(resp: &CmdResp, transfer: &Transfer) -> Result<(), TestCaseError> {
        let outcome = complete_command(resp, transfer);
        prop_assert!(u32::from(outcome.sense_len) <= transfer.sense_capacity());
        prop_assert!(usize::from(outcome.sense_len) <= SENSE_SIZE);
        prop_assert!(outcome.transferred <= transfer.length());
        prop_assert_eq!(outcome.sense(resp).len(), usize::from(outcome.sense_len));
        if outcome.autosense_valid {
            prop_assert_eq!(resp.response, 0);
            prop_assert!(matches!(resp.status, CHECK_CONDITION | COMMAND_TERMINATED));
            prop_assert!(outcome.sense_len > 0);
        }
        let defined = matches!(resp.response, 0..=9 | 12);
        let violation = !defined || resp.resid.get() > transfer.length();
        prop_assert_eq!(outcome.disposition.requires_device_reset(), violation);
        if outcome.disposition == Disposition::Success {
            prop_assert_eq!(outcome.transferred, transfer.length());
        }
        if resp.response == 0 && !violation {
            prop_assert_eq!(outcome.scsi_status, resp.status);
            prop_assert_eq!(outcome.transferred, transfer.length() - resp.resid.get());
        } else {
            prop_assert_eq!(outcome.scsi_status, GOOD);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn random_responses_never_panic_and_respect_the_bounds(
            bytes in proptest::collection::vec(any::<u8>(), 108),
            dir in any::<u8>(),
            length in any::<u32>(),
            capacity in 0u32..=300,
        ) {
            let resp = CmdResp::read_from_bytes(&bytes).unwrap();
            check_bounds(&resp, &Transfer::new(direction(dir), length, capacity))?;
        }

        #[test]
        fn the_fixed_head_alone_decides_as_the_whole_response_does(
            bytes in proptest::collection::vec(any::<u8>(), 108),
            dir in any::<u8>(),
            length in any::<u32>(),
            capacity in 0u32..=300,
        ) {
            let resp = CmdResp::read_from_bytes(&bytes).unwrap();
            let head = CmdRespHeader::read_from_bytes(&bytes[..12]).unwrap();
            prop_assert_eq!(head, resp.header());
            let transfer = Transfer::new(direction(dir), length, capacity);
            prop_assert_eq!(complete_header(&head, &transfer), complete_command(&resp, &transfer));
        }

        #[test]
        fn plausible_responses_respect_the_bounds(
            bytes in proptest::collection::vec(any::<u8>(), 108),
            response in 0u8..=13,
            status in prop_oneof![Just(GOOD), Just(CHECK_CONDITION), any::<u8>()],
            length in 0u32..=1 << 20,
            resid_fraction in 0u32..=100,
            capacity in 0u32..=300,
        ) {
            let mut resp = CmdResp::read_from_bytes(&bytes).unwrap();
            resp.response = response;
            resp.status = status;
            resp.resid = U32::new(length / 100 * resid_fraction);
            check_bounds(&resp, &Transfer::new(DataDirection::FromDevice, length, capacity))?;
        }
    }
}
