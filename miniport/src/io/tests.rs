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

#[test]
fn a_used_token_completes_only_the_request_recorded_in_flight_with_it() {
    // The context's first three words, as the completion loads them, with `token` and
    // `state` recorded and every other byte set, so a compare that reaches past the two fields
    // fails.
    let words = |token: u16, state: u8| -> [u64; 3] {
        let mut bytes = [0xFFu8; 24];
        bytes[RequestContext::TOKEN_OFFSET..][..2].copy_from_slice(&token.to_le_bytes());
        bytes[RequestContext::STATE_OFFSET] = state;
        core::array::from_fn(|i| {
            u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        })
    };
    let in_flight = RequestState::InFlight as u8;
    assert!(is_on_ring_as(&words(7, in_flight), 7));
    assert!(is_on_ring_as(&words(0xFFFF, in_flight), 0xFFFF));
    assert_eq!(Completing::from_words(&words(7, in_flight)).token, 7);
    // Another token's request (the device named a slot whose context is not this one's).
    assert!(!is_on_ring_as(&words(7, in_flight), 8));
    assert!(!is_on_ring_as(&words(7, in_flight), 7 | 0x100));
    assert!(!is_on_ring_as(&words(7 | 0x100, in_flight), 7));
    // Completed already, never put on a ring, or no state at all.
    for state in [RequestState::Done as u8, RequestState::Built as u8, 0, 0xFF] {
        assert!(!is_on_ring_as(&words(7, state), 7), "{state}");
    }
}

proptest::proptest! {
    /// The completion's shortcut for the common answer (`plain_success`) decides exactly as
    /// the full decoding (`complete_header`) wherever it answers: a success that moved the whole
    /// transfer with no sense taken; and it answers only for OK, GOOD and no residual. The
    /// values are drawn near the edges (small residuals, lengths and sense lengths) as often as
    /// anywhere.
    #[test]
    fn the_plain_success_shortcut_decides_as_the_full_decoding(
        response in proptest::prop_oneof![0u8..14, proptest::num::u8::ANY],
        status in proptest::prop_oneof![proptest::strategy::Just(0u8), 0u8..0x50, proptest::num::u8::ANY],
        resid in proptest::prop_oneof![0u32..3, proptest::num::u32::ANY],
        sense_len in proptest::prop_oneof![0u32..100, proptest::num::u32::ANY],
        direction in 0u8..4,
        length in proptest::prop_oneof![0u32..3, proptest::num::u32::ANY],
        sense_capacity in 0u32..256,
    ) {
        use virtio_core::scsi::{CmdRespHeader, Transfer, complete_header};
        let head = CmdRespHeader {
            sense_len: sense_len.into(),
            resid: resid.into(),
            // A qualifier with every bit pattern the shortcut must not read.
            status_qualifier: 0xA55A.into(),
            status,
            response,
        };
        let direction = [
            DataDirection::None,
            DataDirection::ToDevice,
            DataDirection::FromDevice,
            DataDirection::Bidirectional,
        ][usize::from(direction)];
        let transfer = Transfer::new(direction, length, sense_capacity);
        let full = complete_header(&head, &transfer);
        // The response's last word as the device wrote it (little-endian).
        let last = u32::from_le_bytes([0x5A, 0xA5, status, response]);
        let shortcut = plain_success([resid, last], &transfer);
        proptest::prop_assert_eq!(shortcut.is_some(), response == 0 && status == 0 && resid == 0);
        if let Some(shortcut) = shortcut {
            proptest::prop_assert_eq!(shortcut.disposition, Disposition::Success);
            proptest::prop_assert_eq!(shortcut.disposition, full.disposition);
            proptest::prop_assert_eq!(shortcut.scsi_status, full.scsi_status);
            proptest::prop_assert_eq!(shortcut.transferred, full.transferred);
            proptest::prop_assert_eq!(shortcut.transferred, transfer.length());
            // No sense is taken either way, so its length is not read.
            proptest::prop_assert!(!shortcut.autosense_valid && !full.autosense_valid);
            proptest::prop_assert!(!full.disposition.requires_device_reset());
        }
    }
}
