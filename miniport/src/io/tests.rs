//! Unit tests of `io`.
use virtio_core::scsi::{DataDirection, Disposition, ProtocolViolation};
use zerocopy::IntoBytes;

use super::*;
use crate::storport::{
    SRB_STATUS_ABORTED, SRB_STATUS_BUS_RESET, SRB_STATUS_BUSY, SRB_STATUS_DATA_OVERRUN,
    SRB_STATUS_ERROR, SRB_STATUS_INVALID_LUN, SRB_STATUS_INVALID_TARGET_ID, SRB_STATUS_NO_DEVICE,
    SRB_STATUS_SUCCESS,
};

#[test]
fn an_unspecified_direction_follows_the_cdb_and_is_otherwise_a_read() {
    let cases: [(&[u8], DataDirection); 10] = [
        (&[0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0], DataDirection::ToDevice), // WRITE(10)
        (&[0x8A; 16], DataDirection::ToDevice),                        // WRITE(16)
        (
            &[0x55, 0x10, 0, 0, 0, 0, 0, 0, 24, 0],
            DataDirection::ToDevice,
        ), // MODE SELECT(10)
        (&[0x5F, 1, 0, 0, 0, 0, 0, 0, 24, 0], DataDirection::ToDevice), // PR OUT
        (
            &[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0],
            DataDirection::FromDevice,
        ), // READ(10)
        (&[0x12, 0, 0, 0, 96, 0], DataDirection::FromDevice),          // INQUIRY
        (&[0xC7, 1, 2, 3], DataDirection::FromDevice),                 // vendor: a read
        (&[0x85, 0x08, 0x0E, 0, 0, 0, 1], DataDirection::FromDevice),  // ATA PT, T_DIR 1
        (&[0x85, 0x0A, 0x06, 0, 0, 0, 1], DataDirection::ToDevice),    // ATA PT, T_DIR 0
        (&[], DataDirection::FromDevice),
    ];
    for (cdb, direction) in cases {
        assert_eq!(unspecified_direction(cdb), direction, "{cdb:02X?}");
    }
}

#[test]
fn a_removed_unit_fails_with_no_device_whatever_the_device_said() {
    let failures = [
        (Disposition::Error, SRB_STATUS_ERROR),
        (
            Disposition::ProtocolViolation(ProtocolViolation::InvalidResponse { response: 99 }),
            SRB_STATUS_ERROR,
        ),
        (Disposition::Aborted, SRB_STATUS_ABORTED),
        (Disposition::InvalidTargetId, SRB_STATUS_INVALID_TARGET_ID),
        (Disposition::InvalidLun, SRB_STATUS_INVALID_LUN),
        (Disposition::BusReset, SRB_STATUS_BUS_RESET),
        (Disposition::Busy, SRB_STATUS_BUSY),
    ];
    for (disposition, status) in failures {
        assert_eq!(srb_status(disposition, false), status, "{disposition:?}");
        assert_eq!(
            srb_status(disposition, true),
            SRB_STATUS_NO_DEVICE,
            "{disposition:?}"
        );
    }
    // What the device did complete stays as it was: the data moved before the removal.
    for gone in [false, true] {
        assert_eq!(srb_status(Disposition::Success, gone), SRB_STATUS_SUCCESS);
        assert_eq!(
            srb_status(Disposition::DataOverrun, gone),
            SRB_STATUS_DATA_OVERRUN
        );
    }
}

#[test]
fn the_completion_reads_each_context_field_from_its_own_bytes() {
    // Every field a distinct value with no zero byte, so a field cut from the wrong bytes or
    // with the wrong width reads something else.
    let context = RequestContext {
        data_length: 0x8877_6655.into(),
        sense_capacity: 0x0000_00F1.into(),
        queue: 0x1A2B.into(),
        token: 0x3C4D.into(),
        state: RequestState::InFlight as u8,
        direction: 2,
        target: 0xE5,
        opcode: 0x9E,
        lun: 0x0307.into(),
        vpd_page: 0x0083.into(),
        readable: 0x1111.into(),
        writable: 0x2222.into(),
        table_writable: 0x0000_1060.into(),
        table_posted: 0x0000_1093.into(),
        bus: 0xDEAD_BEEF.into(),
        sequence: 0x0102_0304.into(),
    };
    let bytes = context.as_bytes();
    let words: [u64; 3] = core::array::from_fn(|i| {
        u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
    });
    assert_eq!(
        Completing::from_words(&words),
        Completing {
            data_length: 0x8877_6655,
            sense_capacity: 0xF1,
            token: 0x3C4D,
            state: RequestState::InFlight as u8,
            direction: 2,
            target: 0xE5,
            opcode: 0x9E,
            lun: 0x0307,
            vpd_page: 0x0083,
        }
    );
}
