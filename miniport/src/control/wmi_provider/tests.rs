//! Unit tests of `wmi_provider`.
use rvscsi_wmi::status::WmiError;

use super::*;

fn reply(status: WmiStatus, bytes_returned: u32) -> Reply {
    Reply {
        status,
        bytes_returned,
        error: Some(WmiError::NotImplemented),
    }
}

#[test]
fn replies_map_to_srb_status_and_length_as_post_process_does() {
    let table = [
        (WmiStatus::Success, 120, (SRB_STATUS_SUCCESS, 120)),
        (WmiStatus::Success, 56, (SRB_STATUS_SUCCESS, 56)),
        (WmiStatus::BufferTooSmall, 4, (SRB_STATUS_DATA_OVERRUN, 4)),
        (WmiStatus::BufferTooSmall, 0, (SRB_STATUS_DATA_OVERRUN, 0)),
        (
            WmiStatus::InvalidParameter,
            9,
            (SRB_STATUS_INVALID_REQUEST, 0),
        ),
        (
            WmiStatus::InvalidDeviceRequest,
            0,
            (SRB_STATUS_INVALID_REQUEST, 0),
        ),
        (WmiStatus::GuidNotFound, 0, (SRB_STATUS_ERROR, 0)),
        (WmiStatus::InstanceNotFound, 0, (SRB_STATUS_ERROR, 0)),
        (WmiStatus::ItemIdNotFound, 0, (SRB_STATUS_ERROR, 0)),
        (WmiStatus::ReadOnly, 0, (SRB_STATUS_ERROR, 0)),
        (WmiStatus::Unsuccessful, 3, (SRB_STATUS_ERROR, 0)),
    ];
    for (status, bytes, expected) in table {
        assert_eq!(
            srb_completion(&reply(status, bytes), 4096),
            expected,
            "{status:?}"
        );
    }
    // Never more than the buffer holds, whatever the reply says.
    assert_eq!(
        srb_completion(&reply(WmiStatus::Success, 500), 100),
        (SRB_STATUS_SUCCESS, 100)
    );
}

#[test]
fn unique_adapter_id_separates_slot_function_bus_and_bar() {
    let base = unique_adapter_id(0, 3, Some(0xE0_0000_0000));
    assert_eq!(base >> 32, u64::from(u32::from_be_bytes(*b"RVSC")));
    // Bus 0, device 3, function 0; the BAR folds to 0x00E0.
    assert_eq!(base & 0xFFFF_FFFF, 0x00E0_0018);
    let others = [
        unique_adapter_id(0, 4, Some(0xE0_0000_0000)),
        unique_adapter_id(0, 3 | (1 << 5), Some(0xE0_0000_0000)),
        unique_adapter_id(1, 3, Some(0xE0_0000_0000)),
        unique_adapter_id(0, 3, Some(0xE1_0000_0000)),
        unique_adapter_id(0, 3, None),
    ];
    for (index, other) in others.iter().enumerate() {
        assert_ne!(*other, base, "{index}");
        assert!(!others[..index].contains(other), "{index}");
    }
}

#[test]
fn texts_are_the_sas_address_and_revision_in_hex() {
    let facts = AdapterFacts {
        unique_adapter_id: 0x5256_5343_00E0_0018,
        revision: 0x1F,
        ..AdapterFacts::default()
    };
    let texts = Texts::new(&facts);
    assert_eq!(texts.hardware_version(), "rev 1F");
    let expected = std::format!(
        "{:016X}",
        SasAddress::for_adapter(facts.unique_adapter_id).to_u64()
    );
    assert_eq!(texts.serial_number(), expected);
}
