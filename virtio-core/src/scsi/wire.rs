//! virtio-scsi wire formats (virtio 1.x section 5.6): device-facing structures and enumerations.
//!
//! Every structure is `#[repr(C)]` over byte arrays and little-endian integer types, so it has
//! alignment 1, no padding, and the exact size and field offsets of the spec's listing (checked
//! at compile time below). The spec's enumerations are Rust enums with `from_raw`/`raw` and a
//! `TryFrom` that returns [`UnknownValue`] for values the spec does not define.

use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{CDB_SIZE, SENSE_SIZE, UnknownValue};

/// Defines a spec enumeration: a `repr` enum plus `raw`, `from_raw`, `TryFrom` and `From`.
macro_rules! spec_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $raw:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr($raw)]
        pub enum $name {
            $( $(#[$variant_meta])* $variant = $value, )+
        }

        impl $name {
            /// The value as written on the wire.
            #[must_use]
            pub const fn raw(self) -> $raw {
                self as $raw
            }

            /// The variant for a wire value, or `None` if the spec defines no such value.
            #[must_use]
            pub const fn from_raw(raw: $raw) -> Option<Self> {
                match raw {
                    $( $value => Some(Self::$variant), )+
                    _ => None,
                }
            }
        }

        impl TryFrom<$raw> for $name {
            type Error = UnknownValue;

            fn try_from(raw: $raw) -> Result<Self, UnknownValue> {
                Self::from_raw(raw).ok_or(UnknownValue { value: u32::from(raw) })
            }
        }

        impl From<$name> for $raw {
            fn from(value: $name) -> $raw {
                value.raw()
            }
        }
    };
}

/// `struct virtio_scsi_config` (virtio 1.x section 5.6.4), read from the device-specific
/// configuration region. Validate it with [`super::Limits::from_config`] before use.
///
/// The driver may write only `sense_size` and `cdb_size` (section 5.6.4.1); their offsets are
/// [`Config::SENSE_SIZE_OFFSET`] and [`Config::CDB_SIZE_OFFSET`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct Config {
    /// Number of request virtqueues.
    pub num_queues: U32,
    /// Maximum number of data segments in one command.
    pub seg_max: U32,
    /// Hint: maximum transfer size, in 512-byte sectors.
    pub max_sectors: U32,
    /// Maximum number of linked commands per LUN.
    pub cmd_per_lun: U32,
    /// Maximum number of bytes the device writes into an eventq buffer.
    pub event_info_size: U32,
    /// Size of the `sense` field of command responses (the driver writes [`SENSE_SIZE`]).
    pub sense_size: U32,
    /// Size of the `cdb` field of command requests (the driver writes [`CDB_SIZE`]).
    pub cdb_size: U32,
    /// Hint: highest channel number (should be 0).
    pub max_channel: U16,
    /// Hint: highest target number (should be at most 255).
    pub max_target: U16,
    /// Hint: highest LUN (should be at most 16383).
    pub max_lun: U32,
}
const _: () = assert!(size_of::<Config>() == 36);

impl Config {
    /// Byte offset of `sense_size` in the device-specific configuration.
    pub const SENSE_SIZE_OFFSET: usize = offset_of!(Config, sense_size);
    /// Byte offset of `cdb_size` in the device-specific configuration.
    pub const CDB_SIZE_OFFSET: usize = offset_of!(Config, cdb_size);
}
const _: () = assert!(Config::SENSE_SIZE_OFFSET == 20 && Config::CDB_SIZE_OFFSET == 24);
const _: () = assert!(offset_of!(Config, max_channel) == 28 && offset_of!(Config, max_lun) == 32);

/// Device-readable header of `struct virtio_scsi_req_cmd` (virtio 1.x section 5.6.6.1) with
/// `cdb_size` = [`CDB_SIZE`] and without the T10 PI fields. Build it with [`CmdReq::new`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct CmdReq {
    /// The addressed logical unit ([`super::Lun::encode`]).
    pub lun: [u8; 8],
    /// Command identifier (the spec's `id`, SAM's tag); TMFs refer to it.
    pub tag: U64,
    /// Task attribute ([`TaskAttr`]); should be SIMPLE.
    pub task_attr: u8,
    /// Command priority; should be 0.
    pub prio: u8,
    /// Command reference number; should be 0.
    pub crn: u8,
    /// The CDB, zero-padded to [`CDB_SIZE`].
    pub cdb: [u8; CDB_SIZE],
}
const _: () = assert!(size_of::<CmdReq>() == 51);
const _: () = assert!(offset_of!(CmdReq, tag) == 8 && offset_of!(CmdReq, cdb) == 19);

/// Device-writable header of `struct virtio_scsi_req_cmd` (virtio 1.x section 5.6.6.1) with
/// `sense_size` = [`SENSE_SIZE`]. Interpret it with [`super::complete_command`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct CmdResp {
    /// Number of sense bytes the device wrote.
    pub sense_len: U32,
    /// The spec's `residual`: data length minus bytes transferred.
    pub resid: U32,
    /// SAM status qualifier.
    pub status_qualifier: U16,
    /// SAM status byte; meaningful only when `response` is `VIRTIO_SCSI_S_OK`.
    pub status: u8,
    /// Transport outcome ([`Response`]).
    pub response: u8,
    /// Sense data; the first `sense_len` bytes are valid.
    pub sense: [u8; SENSE_SIZE],
}
const _: () = assert!(size_of::<CmdResp>() == 108);
const _: () = assert!(offset_of!(CmdResp, status) == 10 && offset_of!(CmdResp, sense) == 12);

/// The fixed head of [`CmdResp`], everything before the sense bytes: what every completion
/// reads (the sense bytes are read only when there are some). Interpret it with
/// [`super::complete_header`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct CmdRespHeader {
    /// Number of sense bytes the device wrote.
    pub sense_len: U32,
    /// The spec's `residual`: data length minus bytes transferred.
    pub resid: U32,
    /// SAM status qualifier.
    pub status_qualifier: U16,
    /// SAM status byte; meaningful only when `response` is `VIRTIO_SCSI_S_OK`.
    pub status: u8,
    /// Transport outcome ([`Response`]).
    pub response: u8,
}
const _: () = assert!(size_of::<CmdRespHeader>() == offset_of!(CmdResp, sense));
const _: () = assert!(
    offset_of!(CmdRespHeader, resid) == offset_of!(CmdResp, resid)
        && offset_of!(CmdRespHeader, status_qualifier) == offset_of!(CmdResp, status_qualifier)
        && offset_of!(CmdRespHeader, status) == offset_of!(CmdResp, status)
        && offset_of!(CmdRespHeader, response) == offset_of!(CmdResp, response)
);

impl CmdResp {
    /// The response's fixed head.
    #[must_use]
    pub const fn header(&self) -> CmdRespHeader {
        CmdRespHeader {
            sense_len: self.sense_len,
            resid: self.resid,
            status_qualifier: self.status_qualifier,
            status: self.status,
            response: self.response,
        }
    }
}

/// Device-readable part of `struct virtio_scsi_ctrl_tmf` (virtio 1.x section 5.6.6.2). Build
/// it with [`TmfReq::new`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct TmfReq {
    /// [`ControlType::Tmf`].
    pub control_type: U32,
    /// The task management function ([`TmfSubtype`]).
    pub subtype: U32,
    /// The addressed logical unit.
    pub lun: [u8; 8],
    /// The tag of the command the function refers to (ABORT TASK, QUERY TASK).
    pub tag: U64,
}
const _: () = assert!(size_of::<TmfReq>() == 24);

/// Device-writable part of `struct virtio_scsi_ctrl_tmf` (virtio 1.x section 5.6.6.2).
/// Interpret it with [`super::complete_tmf`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct TmfResp {
    /// The outcome ([`Response`]).
    pub response: u8,
}
const _: () = assert!(size_of::<TmfResp>() == 1);

/// Device-readable part of `struct virtio_scsi_ctrl_an` (virtio 1.x section 5.6.6.2), for
/// both AN QUERY and AN SUBSCRIBE. Build it with [`AnReq::query`] or [`AnReq::subscribe`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct AnReq {
    /// [`ControlType::AnQuery`] or [`ControlType::AnSubscribe`].
    pub control_type: U32,
    /// The addressed logical unit.
    pub lun: [u8; 8],
    /// The events asked about ([`AnEvents`]).
    pub event_requested: U32,
}
const _: () = assert!(size_of::<AnReq>() == 16);

/// Device-writable part of `struct virtio_scsi_ctrl_an` (virtio 1.x section 5.6.6.2).
/// Interpret it with [`super::complete_an`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct AnResp {
    /// The events the device supports ([`AnEvents`]).
    pub event_actual: U32,
    /// The outcome ([`Response`]).
    pub response: u8,
}
const _: () = assert!(size_of::<AnResp>() == 5);

/// `struct virtio_scsi_event` (virtio 1.x section 5.6.6.3), written by the device into eventq
/// buffers. Interpret it with [`Event::decode`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct Event {
    /// The event type ([`EventType`]), with [`Event::EVENTS_MISSED`] possibly set.
    pub event: U32,
    /// The logical unit the event is about.
    pub lun: [u8; 8],
    /// Event-specific detail.
    pub reason: U32,
}
const _: () = assert!(size_of::<Event>() == 16);

impl Event {
    /// `VIRTIO_SCSI_T_EVENTS_MISSED`: bit 31 of `event`, set when the device dropped events for
    /// lack of buffers (virtio 1.x section 5.6.6.3).
    pub const EVENTS_MISSED: u32 = 0x8000_0000;
}

spec_enum! {
    /// `response` values `VIRTIO_SCSI_S_*` (virtio 1.x sections 5.6.6.1 and 5.6.6.2). Values
    /// 0 to 9 are defined for commands; the controlq uses 0, 3 and 5 to 9, adds 12 for all
    /// requests and 10 and 11 for TMFs. QEMU also answers commands with 12 (`INCORRECT_LUN`).
    pub enum Response: u8 {
        /// `VIRTIO_SCSI_S_OK` (also `VIRTIO_SCSI_S_FUNCTION_COMPLETE` for TMFs): the request
        /// completed; for commands the status byte holds a SCSI status, not necessarily GOOD.
        Ok = 0,
        /// `VIRTIO_SCSI_S_OVERRUN`: the CDB needs more data than the buffers hold.
        Overrun = 1,
        /// `VIRTIO_SCSI_S_ABORTED`: cancelled by ABORT TASK or ABORT TASK SET.
        Aborted = 2,
        /// `VIRTIO_SCSI_S_BAD_TARGET`: the addressed target does not exist.
        BadTarget = 3,
        /// `VIRTIO_SCSI_S_RESET`: cancelled by a bus or device reset.
        Reset = 4,
        /// `VIRTIO_SCSI_S_BUSY`: retrying on the same path is likely to work.
        Busy = 5,
        /// `VIRTIO_SCSI_S_TRANSPORT_FAILURE`: the link between host and target failed.
        TransportFailure = 6,
        /// `VIRTIO_SCSI_S_TARGET_FAILURE`: the target failed; do not retry on other paths.
        TargetFailure = 7,
        /// `VIRTIO_SCSI_S_NEXUS_FAILURE`: the nexus failed; other paths might work.
        NexusFailure = 8,
        /// `VIRTIO_SCSI_S_FAILURE`: any other host or driver error.
        Failure = 9,
        /// `VIRTIO_SCSI_S_FUNCTION_SUCCEEDED` (TMF only).
        FunctionSucceeded = 10,
        /// `VIRTIO_SCSI_S_FUNCTION_REJECTED` (TMF only).
        FunctionRejected = 11,
        /// `VIRTIO_SCSI_S_INCORRECT_LUN`: the addressed logical unit does not exist.
        IncorrectLun = 12,
    }
}

impl Response {
    /// `VIRTIO_SCSI_S_FUNCTION_COMPLETE`, the TMF name of `VIRTIO_SCSI_S_OK`.
    pub const FUNCTION_COMPLETE: Self = Self::Ok;
}

spec_enum! {
    /// `task_attr` values (virtio 1.x section 5.6.6.1); the device may treat all as SIMPLE.
    pub enum TaskAttr: u8 {
        /// `VIRTIO_SCSI_S_SIMPLE`.
        Simple = 0,
        /// `VIRTIO_SCSI_S_ORDERED`.
        Ordered = 1,
        /// `VIRTIO_SCSI_S_HEAD`: head of queue.
        Head = 2,
        /// `VIRTIO_SCSI_S_ACA`.
        Aca = 3,
    }
}

spec_enum! {
    /// controlq request `type` values (virtio 1.x section 5.6.6.2).
    pub enum ControlType: u32 {
        /// `VIRTIO_SCSI_T_TMF`: task management function.
        Tmf = 0,
        /// `VIRTIO_SCSI_T_AN_QUERY`: which asynchronous events can a LUN report.
        AnQuery = 1,
        /// `VIRTIO_SCSI_T_AN_SUBSCRIBE`: subscribe to asynchronous events of a LUN.
        AnSubscribe = 2,
    }
}

spec_enum! {
    /// Task management functions, `VIRTIO_SCSI_T_TMF_*` (virtio 1.x section 5.6.6.2).
    pub enum TmfSubtype: u32 {
        /// `ABORT_TASK`: abort the command with the given tag.
        AbortTask = 0,
        /// `ABORT_TASK_SET`: abort all commands of this initiator on the LUN.
        AbortTaskSet = 1,
        /// `CLEAR_ACA`.
        ClearAca = 2,
        /// `CLEAR_TASK_SET`: abort all commands on the LUN.
        ClearTaskSet = 3,
        /// `I_T_NEXUS_RESET`: reset the nexus with the target (LUN bytes 2-3 ignored).
        ITNexusReset = 4,
        /// `LOGICAL_UNIT_RESET`.
        LogicalUnitReset = 5,
        /// `QUERY_TASK`: is the command with the given tag still in the task set.
        QueryTask = 6,
        /// `QUERY_TASK_SET`: are there commands of this initiator on the LUN.
        QueryTaskSet = 7,
    }
}

spec_enum! {
    /// eventq `event` values without the [`Event::EVENTS_MISSED`] bit
    /// (virtio 1.x section 5.6.6.3).
    pub enum EventType: u32 {
        /// `VIRTIO_SCSI_T_NO_EVENT`: a dummy event (short buffer, or only to report missed
        /// events).
        NoEvent = 0,
        /// `VIRTIO_SCSI_T_TRANSPORT_RESET`: a LUN was reset, appeared or disappeared.
        TransportReset = 1,
        /// `VIRTIO_SCSI_T_ASYNC_NOTIFY`: an asynchronous event the driver subscribed to.
        AsyncNotify = 2,
        /// `VIRTIO_SCSI_T_PARAM_CHANGE`: a LUN's parameters (capacity, mode) changed.
        ParamChange = 3,
    }
}

spec_enum! {
    /// `reason` of a `VIRTIO_SCSI_T_TRANSPORT_RESET` event (virtio 1.x section 5.6.6.3).
    pub enum ResetReason: u32 {
        /// `VIRTIO_SCSI_EVT_RESET_HARD`: the LUN was reset but is still present.
        Hard = 0,
        /// `VIRTIO_SCSI_EVT_RESET_RESCAN`: a target or LUN appeared (rescan it).
        Rescan = 1,
        /// `VIRTIO_SCSI_EVT_RESET_REMOVED`: the target or LUN can no longer receive commands.
        Removed = 2,
    }
}

bitflags::bitflags! {
    /// Asynchronous notification event classes, `VIRTIO_SCSI_EVT_ASYNC_*` (virtio 1.x section
    /// 5.6.6.2; the classes of SCSI MMC GET EVENT STATUS NOTIFICATION). Used in AN requests,
    /// AN responses and `VIRTIO_SCSI_T_ASYNC_NOTIFY` events.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct AnEvents: u32 {
        /// `VIRTIO_SCSI_EVT_ASYNC_OPERATIONAL_CHANGE`.
        const OPERATIONAL_CHANGE = 1 << 1;
        /// `VIRTIO_SCSI_EVT_ASYNC_POWER_MGMT`.
        const POWER_MGMT = 1 << 2;
        /// `VIRTIO_SCSI_EVT_ASYNC_EXTERNAL_REQUEST`.
        const EXTERNAL_REQUEST = 1 << 3;
        /// `VIRTIO_SCSI_EVT_ASYNC_MEDIA_CHANGE`.
        const MEDIA_CHANGE = 1 << 4;
        /// `VIRTIO_SCSI_EVT_ASYNC_MULTI_HOST`.
        const MULTI_HOST = 1 << 5;
        /// `VIRTIO_SCSI_EVT_ASYNC_DEVICE_BUSY`.
        const DEVICE_BUSY = 1 << 6;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_a_hand_written_little_endian_image() {
        // QEMU's defaults for a 4-queue device: num_queues 4, seg_max 126, max_sectors 0xFFFF,
        // cmd_per_lun 128, event_info_size 16, sense 96, cdb 32, channel 0, target 255,
        // max_lun 16383.
        let image: [u8; 36] = [
            0x04, 0x00, 0x00, 0x00, // num_queues
            0x7E, 0x00, 0x00, 0x00, // seg_max
            0xFF, 0xFF, 0x00, 0x00, // max_sectors
            0x80, 0x00, 0x00, 0x00, // cmd_per_lun
            0x10, 0x00, 0x00, 0x00, // event_info_size
            0x60, 0x00, 0x00, 0x00, // sense_size
            0x20, 0x00, 0x00, 0x00, // cdb_size
            0x00, 0x00, // max_channel
            0xFF, 0x00, // max_target
            0xFF, 0x3F, 0x00, 0x00, // max_lun
        ];
        let config = Config::read_from_bytes(&image).unwrap();
        assert_eq!(config.num_queues.get(), 4);
        assert_eq!(config.seg_max.get(), 126);
        assert_eq!(config.max_sectors.get(), 0xFFFF);
        assert_eq!(config.cmd_per_lun.get(), 128);
        assert_eq!(config.event_info_size.get(), 16);
        assert_eq!(config.sense_size.get(), 96);
        assert_eq!(config.cdb_size.get(), 32);
        assert_eq!(config.max_channel.get(), 0);
        assert_eq!(config.max_target.get(), 255);
        assert_eq!(config.max_lun.get(), 16383);
        assert_eq!(config.as_bytes(), &image);
        assert!(Config::read_from_bytes(&image[..35]).is_err());
    }

    #[test]
    fn cmd_req_writes_the_spec_layout() {
        let mut cdb = [0u8; CDB_SIZE];
        cdb[..10].copy_from_slice(&[0x28, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0x08, 0]);
        let req = CmdReq {
            lun: [1, 3, 0x40, 0x05, 0, 0, 0, 0],
            tag: U64::new(0x0102_0304_0506_0708),
            task_attr: 2,
            prio: 0xAA,
            crn: 0xBB,
            cdb,
        };
        let mut expected = [0u8; 51];
        expected[..8].copy_from_slice(&[1, 3, 0x40, 0x05, 0, 0, 0, 0]);
        expected[8..16].copy_from_slice(&[0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01]);
        expected[16] = 2;
        expected[17] = 0xAA;
        expected[18] = 0xBB;
        expected[19..29].copy_from_slice(&[0x28, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0x08, 0]);
        assert_eq!(req.as_bytes(), &expected);
        assert_eq!(CmdReq::read_from_bytes(&expected).unwrap(), req);
    }

    #[test]
    fn cmd_resp_reads_the_spec_layout() {
        let mut image = [0u8; 108];
        image[..4].copy_from_slice(&[0x12, 0, 0, 0]); // sense_len 18
        image[4..8].copy_from_slice(&[0x00, 0x02, 0x01, 0x00]); // resid 0x0001_0200
        image[8..10].copy_from_slice(&[0x34, 0x12]); // status_qualifier 0x1234
        image[10] = 0x02; // CHECK CONDITION
        image[11] = 0x00; // VIRTIO_SCSI_S_OK
        image[12..15].copy_from_slice(&[0x70, 0x00, 0x06]); // fixed sense, UNIT ATTENTION
        image[107] = 0xEE;
        let resp = CmdResp::read_from_bytes(&image).unwrap();
        assert_eq!(resp.sense_len.get(), 18);
        assert_eq!(resp.resid.get(), 0x0001_0200);
        assert_eq!(resp.status_qualifier.get(), 0x1234);
        assert_eq!(resp.status, 0x02);
        assert_eq!(resp.response, 0);
        assert_eq!(&resp.sense[..3], &[0x70, 0x00, 0x06]);
        assert_eq!(resp.sense[95], 0xEE);
        assert_eq!(resp.as_bytes(), &image);
    }

    #[test]
    fn control_structures_have_the_spec_layout() {
        let tmf = TmfReq {
            control_type: U32::new(0),
            subtype: U32::new(5),
            lun: [1, 7, 0, 2, 0, 0, 0, 0],
            tag: U64::new(0x1122_3344_5566_7788),
        };
        let expected_tmf: [u8; 24] = [
            0, 0, 0, 0, // type TMF
            5, 0, 0, 0, // LOGICAL_UNIT_RESET
            1, 7, 0, 2, 0, 0, 0, 0, // lun
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // tag
        ];
        assert_eq!(tmf.as_bytes(), &expected_tmf);
        assert_eq!(TmfResp::read_from_bytes(&[10]).unwrap().response, 10);

        let an = AnReq {
            control_type: U32::new(2),
            lun: [1, 0, 0, 0, 0, 0, 0, 0],
            event_requested: U32::new(0x12),
        };
        let expected_an: [u8; 16] = [2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x12, 0, 0, 0];
        assert_eq!(an.as_bytes(), &expected_an);
        let an_resp = AnResp::read_from_bytes(&[0x10, 0, 0, 0, 9]).unwrap();
        assert_eq!(an_resp.event_actual.get(), 0x10);
        assert_eq!(an_resp.response, 9);
    }

    #[test]
    fn event_reads_the_spec_layout() {
        let image: [u8; 16] = [
            0x01, 0x00, 0x00, 0x80, // TRANSPORT_RESET | EVENTS_MISSED
            1, 4, 0x40, 0x10, 0, 0, 0, 0, // target 4, LUN 0x0010 flat
            0x02, 0x00, 0x00, 0x00, // REMOVED
        ];
        let event = Event::read_from_bytes(&image).unwrap();
        assert_eq!(event.event.get(), 0x8000_0001);
        assert_eq!(event.lun, [1, 4, 0x40, 0x10, 0, 0, 0, 0]);
        assert_eq!(event.reason.get(), 2);
        assert_eq!(event.as_bytes(), &image);
    }

    #[test]
    fn enumerations_round_trip_and_reject_undefined_values() {
        for raw in 0..=u8::MAX {
            match Response::try_from(raw) {
                Ok(response) => {
                    assert!(raw <= 12);
                    assert_eq!(response.raw(), raw);
                }
                Err(error) => {
                    assert!(raw > 12);
                    assert_eq!(
                        error,
                        UnknownValue {
                            value: u32::from(raw)
                        }
                    );
                }
            }
            assert_eq!(TaskAttr::from_raw(raw).is_some(), raw <= 3);
        }
        assert_eq!(Response::FUNCTION_COMPLETE.raw(), 0);
        for raw in 0..=9u32 {
            assert_eq!(
                TmfSubtype::from_raw(raw).map(u32::from),
                (raw <= 7).then_some(raw)
            );
            assert_eq!(
                ControlType::from_raw(raw).map(u32::from),
                (raw <= 2).then_some(raw)
            );
            assert_eq!(
                EventType::from_raw(raw).map(u32::from),
                (raw <= 3).then_some(raw)
            );
            assert_eq!(
                ResetReason::from_raw(raw).map(u32::from),
                (raw <= 2).then_some(raw)
            );
        }
        assert_eq!(
            TmfSubtype::try_from(u32::MAX),
            Err(UnknownValue { value: u32::MAX })
        );
        assert_eq!(AnEvents::all().bits(), 0x7E);
    }
}
