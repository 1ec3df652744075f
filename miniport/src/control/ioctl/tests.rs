//! Unit tests of the `SRB_IO_CONTROL` checks and the CLUSDISK answers, over plain buffers.

use super::*;
use crate::storport::{
    IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE, IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE,
    SRB_STATUS_BAD_SRB_BLOCK_LENGTH, SRB_STATUS_ERROR, SRB_STATUS_INVALID_REQUEST,
    SRB_STATUS_SUCCESS, STATUS_INVALID_DEVICE_REQUEST, STATUS_NOT_SUPPORTED,
};

/// An `SRB_IO_CONTROL` header as a caller lays it out, followed by `payload`, with `ReturnCode`
/// preset to a marker so a write to it shows.
fn request(signature: [u8; 8], control_code: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&28u32.to_ne_bytes());
    bytes.extend_from_slice(&signature);
    bytes.extend_from_slice(&30u32.to_ne_bytes()); // Timeout
    bytes.extend_from_slice(&control_code.to_ne_bytes());
    bytes.extend_from_slice(&0xDEAD_BEEFu32.to_ne_bytes()); // ReturnCode
    bytes.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn put(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
}

fn return_code(bytes: &[u8]) -> u32 {
    u32::from_ne_bytes(bytes[20..24].try_into().unwrap())
}

#[test]
fn the_header_offsets_are_the_wdk_ones() {
    assert_eq!(offset_of!(SrbIoControl, header_length), 0);
    assert_eq!(offset_of!(SrbIoControl, signature), 4);
    assert_eq!(offset_of!(SrbIoControl, control_code), 16);
    assert_eq!(offset_of!(SrbIoControl, return_code), 20);
    assert_eq!(offset_of!(SrbIoControl, length), 24);
}

#[test]
fn the_quorum_probe_fails_with_error_so_the_cluster_reads_capable() {
    let mut bytes = request(
        CLUSDISK_SIGNATURE,
        IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE,
        &[],
    );
    let before = bytes.clone();
    let answer = answer(&mut bytes);
    assert_eq!(answer.outcome, Ok(ClusterProbe::NotQuorumCapable));
    assert_eq!(answer.srb_status, SRB_STATUS_ERROR);
    assert_ne!(answer.srb_status, SRB_STATUS_SUCCESS);
    assert_eq!(answer.returned, 28);
    assert_eq!(return_code(&bytes), STATUS_NOT_SUPPORTED.cast_unsigned());
    // Nothing but ReturnCode changed.
    assert_eq!(bytes[..20], before[..20]);
    assert_eq!(bytes[24..], before[24..]);
}

#[test]
fn the_cluster_probe_fails_with_invalid_request_even_with_a_payload() {
    let mut bytes = request(
        CLUSDISK_SIGNATURE,
        IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE,
        &[7; 12],
    );
    let answer = answer(&mut bytes);
    assert_eq!(answer.outcome, Ok(ClusterProbe::NotClusterCapable));
    assert_eq!(answer.srb_status, SRB_STATUS_INVALID_REQUEST);
    assert_eq!(answer.returned, 28);
    assert_eq!(return_code(&bytes), STATUS_NOT_SUPPORTED.cast_unsigned());
    assert_eq!(bytes[28..], [7; 12]);
}

#[test]
fn an_unknown_clusdisk_code_is_refused_and_says_so_in_return_code() {
    let code = IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE + 1;
    let mut bytes = request(CLUSDISK_SIGNATURE, code, &[]);
    let answer = answer(&mut bytes);
    assert_eq!(
        answer.outcome,
        Err(IoctlError::ControlCode { control_code: code })
    );
    assert_eq!(answer.srb_status, SRB_STATUS_INVALID_REQUEST);
    assert_eq!(answer.returned, 28);
    assert_eq!(
        return_code(&bytes),
        STATUS_INVALID_DEVICE_REQUEST.cast_unsigned()
    );
}

#[test]
fn malformed_or_foreign_requests_are_refused_without_touching_the_buffer() {
    type Case = (&'static str, fn(&mut Vec<u8>), IoctlError, u8);
    let cases: [Case; 8] = [
        (
            "empty",
            |b| b.clear(),
            IoctlError::ShortBuffer { length: 0 },
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
        ),
        (
            "one byte short of the header",
            |b| b.truncate(27),
            IoctlError::ShortBuffer { length: 27 },
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
        ),
        (
            "header length too small",
            |b| put(b, 0, 24),
            IoctlError::HeaderLength { header_length: 24 },
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
        ),
        (
            "header length too large",
            |b| put(b, 0, 32),
            IoctlError::HeaderLength { header_length: 32 },
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
        ),
        (
            "payload longer than the buffer",
            |b| put(b, 24, 5),
            IoctlError::PayloadLength {
                length: 5,
                available: 32,
            },
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
        ),
        (
            "payload length that overflows with the header",
            |b| put(b, 24, u32::MAX - 27),
            IoctlError::PayloadLength {
                length: u32::MAX - 27,
                available: 32,
            },
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
        ),
        (
            "another miniport's signature",
            |b| b[4..12].copy_from_slice(b"SCSIDISK"),
            IoctlError::Signature {
                signature: *b"SCSIDISK",
            },
            SRB_STATUS_INVALID_REQUEST,
        ),
        (
            "a signature one letter off",
            |b| b[11] = b'k',
            IoctlError::Signature {
                signature: *b"CLUSDISk",
            },
            SRB_STATUS_INVALID_REQUEST,
        ),
    ];
    for (name, corrupt, error, status) in cases {
        // A 4-byte payload, so "Length 5" lies by one byte.
        let mut bytes = request(
            CLUSDISK_SIGNATURE,
            IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE,
            &[1, 2, 3, 4],
        );
        corrupt(&mut bytes);
        let before = bytes.clone();
        let answer = answer(&mut bytes);
        assert_eq!(answer.outcome, Err(error), "{name}");
        assert_eq!(answer.srb_status, status, "{name}");
        assert_eq!(answer.returned, 0, "{name}");
        assert_eq!(bytes, before, "{name}: the buffer must not be written");
    }
}

#[test]
fn a_payload_that_fits_exactly_is_accepted_and_one_byte_more_is_not() {
    let mut bytes = request(
        CLUSDISK_SIGNATURE,
        IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE,
        &[0; 8],
    );
    assert_eq!(parse(&bytes), Ok(ClusterProbe::NotQuorumCapable));
    put(&mut bytes, 24, 9);
    assert_eq!(
        parse(&bytes),
        Err(IoctlError::PayloadLength {
            length: 9,
            available: 36
        })
    );
    // A buffer longer than the header and payload claim is fine (StorPort may round it up).
    put(&mut bytes, 24, 0);
    assert_eq!(parse(&bytes), Ok(ClusterProbe::NotQuorumCapable));
}

#[test]
fn every_refusal_and_probe_maps_to_its_documented_status() {
    let table: [(Result<ClusterProbe, IoctlError>, u8, Option<u32>); 8] = [
        (
            Ok(ClusterProbe::NotQuorumCapable),
            SRB_STATUS_ERROR,
            Some(STATUS_NOT_SUPPORTED.cast_unsigned()),
        ),
        (
            Ok(ClusterProbe::NotClusterCapable),
            SRB_STATUS_INVALID_REQUEST,
            Some(STATUS_NOT_SUPPORTED.cast_unsigned()),
        ),
        (
            Err(IoctlError::ShortBuffer { length: 3 }),
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
            None,
        ),
        (Err(IoctlError::NoBuffer), SRB_STATUS_INVALID_REQUEST, None),
        (
            Err(IoctlError::HeaderLength { header_length: 0 }),
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
            None,
        ),
        (
            Err(IoctlError::PayloadLength {
                length: 1,
                available: 28,
            }),
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
            None,
        ),
        (
            Err(IoctlError::Signature { signature: [0; 8] }),
            SRB_STATUS_INVALID_REQUEST,
            None,
        ),
        (
            Err(IoctlError::ControlCode { control_code: 0 }),
            SRB_STATUS_INVALID_REQUEST,
            Some(STATUS_INVALID_DEVICE_REQUEST.cast_unsigned()),
        ),
    ];
    for (outcome, status, code) in table {
        match outcome {
            Ok(probe) => {
                assert_eq!(probe.srb_status(), status, "{probe:?}");
                assert_eq!(Some(probe.return_code()), code, "{probe:?}");
            }
            Err(error) => {
                assert_eq!(error.srb_status(), status, "{error:?}");
                assert_eq!(error.return_code(), code, "{error:?}");
            }
        }
    }
}

proptest::proptest! {
    /// Any buffer of any length: no panic, never a success, the status agrees with the outcome,
    /// only ReturnCode is ever written and only for a header that validated, and the answer
    /// depends on nothing past the buffer (the same bytes inside a longer slice answer alike
    /// when the header's lengths say so).
    #[test]
    fn arbitrary_buffers_are_answered_without_panic_or_stray_writes(
        mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..96),
        header_length in proptest::sample::select(vec![0u32, 27, 28, 29, 56, u32::MAX]),
        use_header_length in proptest::bool::ANY,
        clusdisk in proptest::bool::ANY,
        code in proptest::sample::select(vec![
            IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE,
            IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE,
            0x001B_0500,
            0,
        ]),
        length in proptest::prop_oneof![0u32..80, proptest::num::u32::ANY],
    ) {
        // Make the structured fields likely to validate, so every branch is reached.
        if bytes.len() >= 28 {
            if use_header_length {
                put(&mut bytes, 0, header_length);
            }
            if clusdisk {
                bytes[4..12].copy_from_slice(&CLUSDISK_SIGNATURE);
            }
            put(&mut bytes, 16, code);
            put(&mut bytes, 24, length);
        }
        let before = bytes.clone();
        let answer = answer(&mut bytes);
        proptest::prop_assert_ne!(answer.srb_status, SRB_STATUS_SUCCESS);
        match answer.outcome {
            Ok(probe) => proptest::prop_assert_eq!(answer.srb_status, probe.srb_status()),
            Err(error) => proptest::prop_assert_eq!(answer.srb_status, error.srb_status()),
        }
        if answer.returned == 0 {
            proptest::prop_assert_eq!(&bytes, &before);
        } else {
            proptest::prop_assert_eq!(answer.returned, 28);
            proptest::prop_assert_eq!(&before[4..12], &CLUSDISK_SIGNATURE[..]);
            proptest::prop_assert_eq!(u32::from_ne_bytes(before[..4].try_into().unwrap()), 28);
            let claimed = 28 + u64::from(u32::from_ne_bytes(before[24..28].try_into().unwrap()));
            proptest::prop_assert!(claimed <= before.len() as u64);
            proptest::prop_assert_eq!(&bytes[..20], &before[..20]);
            proptest::prop_assert_eq!(&bytes[24..], &before[24..]);
        }
        // Extending the buffer by bytes the header does not claim changes a refusal only
        // from "too short" to something else, never the answer to a request that validated.
        if answer.outcome.is_ok() {
            let mut longer = before.clone();
            longer.extend_from_slice(&[0xA5; 16]);
            proptest::prop_assert_eq!(parse(&longer), answer.outcome);
        }
    }
}
