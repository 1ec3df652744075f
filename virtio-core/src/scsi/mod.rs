//! virtio-scsi protocol (virtio 1.x section 5.6): wire formats, validation, response mapping.
//!
//! The module is pure: it never touches device memory itself. The miniport copies a request
//! header into DMA memory with [`zerocopy::IntoBytes::as_bytes`], and copies a response out
//! into one of these types with [`zerocopy::FromBytes::read_from_bytes`] before asking this
//! module what it means. Everything the device wrote is checked here and becomes either a typed
//! outcome or a typed error; nothing panics and nothing is indexed unchecked.
//!
//! - [`wire`]: the device-facing structures (`virtio_scsi_config`, `virtio_scsi_req_cmd`,
//!   TMF, AN, event) and the spec's enumerations;
//! - [`lun`]: the 8-byte LUN field, encoded and validated;
//! - [`config`]: the configuration read back from the device, checked and clamped into
//!   [`Limits`];
//! - [`command`]: building a command request and mapping a command response to an SRB
//!   disposition ([`complete_command`], the one place that decides how an I/O ends);
//! - [`control`]: task management and asynchronous notification requests on the controlq;
//! - [`event`]: decoding what the device posts on the eventq.
#![forbid(unsafe_code)]

pub mod command;
pub mod config;
pub mod control;
pub mod event;
pub mod lun;
pub mod wire;

pub use command::{
    CommandOutcome, DataDirection, Disposition, ProtocolViolation, RequestError, Transfer,
    complete_command, complete_header,
};
pub use config::{ConfigError, ConfigureError, Limits, configure, read_config};
pub use control::{AnOutcome, ControlFailure, TmfOutcome, complete_an, complete_tmf};
pub use event::{DecodedEvent, EventError, EventKind};
pub use lun::{Lun, LunError};
pub use wire::{
    AnEvents, AnReq, AnResp, CmdReq, CmdResp, CmdRespHeader, Config, ControlType, Event, EventType,
    ResetReason, Response, TaskAttr, TmfReq, TmfResp, TmfSubtype,
};

/// virtio device ID of the SCSI host device (virtio 1.x section 5.6.1).
pub const DEVICE_ID: u32 = 8;

/// Size of the `cdb` field in every command request we send (virtio 1.x section 5.6.4: the
/// device's default `cdb_size`, which the driver writes back to the configuration).
pub const CDB_SIZE: usize = 32;

/// Size of the `sense` field in every command response (virtio 1.x section 5.6.4: the
/// device's default `sense_size`, which the driver writes back to the configuration).
pub const SENSE_SIZE: usize = 96;

/// Virtqueue indices (virtio 1.x section 5.6.2).
pub mod queue_index {
    /// `controlq`: task management functions and asynchronous notification requests.
    pub const CONTROL: u16 = 0;
    /// `eventq`: buffers the device fills with hot-plug, reset and parameter-change events.
    pub const EVENT: u16 = 1;
    /// The first request queue; request queue `n` is at `REQUEST_BASE + n`.
    pub const REQUEST_BASE: u16 = 2;

    /// The virtqueue index of request queue `n` (0-based), or `None` if it does not fit the
    /// 16-bit queue index of the transport.
    #[must_use]
    pub const fn request(n: u16) -> Option<u16> {
        n.checked_add(REQUEST_BASE)
    }
}

/// Device feature bits (virtio 1.x section 5.6.3), as masks over the 64-bit feature word.
pub mod feature {
    /// `VIRTIO_SCSI_F_INOUT`: one request may carry both data-out and data-in buffers.
    pub const INOUT: u64 = 1 << 0;
    /// `VIRTIO_SCSI_F_HOTPLUG`: the device reports hot-plug and hot-unplug events.
    pub const HOTPLUG: u64 = 1 << 1;
    /// `VIRTIO_SCSI_F_CHANGE`: the device reports LUN parameter changes
    /// (`VIRTIO_SCSI_T_PARAM_CHANGE`).
    pub const CHANGE: u64 = 1 << 2;
    /// `VIRTIO_SCSI_F_T10_PI`: the request header carries T10 protection information fields.
    /// The structures in this module do not have them, so this bit must not be negotiated.
    pub const T10_PI: u64 = 1 << 3;
}

/// SCSI status codes (SAM-5 section 5.3) that this module and the miniport name. The device
/// writes the status byte as SAM defines it (virtio 1.x section 5.6.6.1.1); values are passed
/// through unchanged, so this list is for naming, not for filtering.
pub mod scsi_status {
    /// GOOD.
    pub const GOOD: u8 = 0x00;
    /// CHECK CONDITION: sense data describes the error (UNIT ATTENTION among others).
    pub const CHECK_CONDITION: u8 = 0x02;
    /// CONDITION MET.
    pub const CONDITION_MET: u8 = 0x04;
    /// BUSY.
    pub const BUSY: u8 = 0x08;
    /// RESERVATION CONFLICT: another initiator holds a reservation. Cluster arbitration
    /// depends on seeing this unchanged.
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    /// COMMAND TERMINATED (obsolete in SAM, still defined by Windows): carries sense data.
    pub const COMMAND_TERMINATED: u8 = 0x22;
    /// TASK SET FULL (Windows: `SCSISTAT_QUEUE_FULL`).
    pub const TASK_SET_FULL: u8 = 0x28;
    /// ACA ACTIVE.
    pub const ACA_ACTIVE: u8 = 0x30;
    /// TASK ABORTED.
    pub const TASK_ABORTED: u8 = 0x40;
}

/// A raw value that is not one of an enumeration's defined values. Returned by the `TryFrom`
/// conversions of the spec enumerations in [`wire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownValue {
    /// The raw value.
    pub value: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_queue_indices_start_after_control_and_event() {
        assert_eq!(queue_index::request(0), Some(2));
        assert_eq!(queue_index::request(65_533), Some(65_535));
        assert_eq!(queue_index::request(65_534), None);
    }
}
