//! Unit tests of `wmi_provider`.
use std::vec;
use std::vec::Vec;

use rvscsi_wmi::hba::TargetInfo;
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

/// A VPD page 0x83 with one target port NAA designator (IEEE registered, 8 bytes) ending in
/// `tag`.
fn target_port_page(tag: u8) -> [u8; 16] {
    [
        0, 0x83, 0, 12, // header: 12 bytes of descriptors
        0x61, 0x93, 0, 8, // SAS, binary; PIV, target port, NAA; 8 bytes
        0x50, 0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, tag,
    ]
}

fn inquiry(tag: u8) -> [u8; 36] {
    let mut data = [tag; 36];
    data[0] = 0;
    data[4] = 31;
    data
}

/// The targets and logical units `source` reports, through the `TargetSource` methods only.
fn listing(source: &dyn TargetSource) -> Vec<(TargetPort, Vec<LunInfo<'_>>)> {
    (0..source.target_count())
        .map(|target| {
            let port = source.target(target).expect("every target below the count");
            let luns = (0..source.lun_count(target))
                .map(|index| {
                    source
                        .lun(target, index)
                        .expect("every LUN below the count")
                })
                .collect();
            (port, luns)
        })
        .collect()
}

#[test]
fn copied_targets_list_the_table_in_target_and_lun_order_as_the_views_did() {
    let seed = 0x1234_5678_9ABC_DEF0;
    let table: LunTable<Vec<LunSlot>> = LunTable::new((0..8).map(|_| LunSlot::new()).collect());
    // Inserted out of order, and one target without LUN 0.
    for (target, lun, tag) in [
        (2u8, 1u16, 0x21),
        (0, 3, 0x03),
        (5, 7, 0x57),
        (2, 0, 0x20),
        (0, 0, 0x00),
    ] {
        table.record(target, lun, Answer::Inquiry, &inquiry(tag));
    }
    let lun0_page = target_port_page(0x22);
    table.record(2, 0, Answer::DeviceIdentification, &lun0_page);
    // A target port designator on a LUN other than 0 does not name the target.
    table.record(5, 7, Answer::DeviceIdentification, &target_port_page(0x55));
    let capacity = [0, 0, 0x0F, 0xFF, 0, 0, 2, 0];
    table.record(0, 3, Answer::ReadCapacity10, &capacity);

    let (mut copies, mut order, mut starts) =
        (vec![LunCopy::EMPTY; 8], vec![0u16; 8], vec![0u16; 9]);
    let source = CopiedTargets::copy(&table, seed, &mut copies, &mut order, &mut starts);

    // What the scratch's view tables held before: one TargetInfo per target with its LUNs.
    let inquiries = [0x00u8, 0x03, 0x20, 0x21, 0x57].map(inquiry);
    let lun = |index: usize, number: u16| LunInfo {
        lun: number,
        inquiry: Some(&inquiries[index][..]),
        ..LunInfo::default()
    };
    let target0 = [
        lun(0, 0),
        LunInfo {
            read_capacity_10: Some(&capacity[..]),
            ..lun(1, 3)
        },
    ];
    let target2 = [
        LunInfo {
            device_identification: Some(&lun0_page[..]),
            ..lun(2, 0)
        },
        lun(3, 1),
    ];
    let page5 = target_port_page(0x55);
    let target5 = [LunInfo {
        device_identification: Some(&page5[..]),
        ..lun(4, 7)
    }];
    let views = [
        TargetInfo {
            sas_address: SasAddress::for_target(None, seed, 0),
            bus: 0,
            target: 0,
            luns: &target0,
        },
        TargetInfo {
            sas_address: SasAddress::for_target(Some(&lun0_page), seed, 2),
            bus: 0,
            target: 2,
            luns: &target2,
        },
        TargetInfo {
            sas_address: SasAddress::for_target(None, seed, 5),
            bus: 0,
            target: 5,
            luns: &target5,
        },
    ];
    assert_eq!(
        views[1].sas_address.0[7], 0x22,
        "LUN 0's target port names target 2"
    );
    assert_eq!(listing(&source), listing(&&views[..]));
    assert_eq!(source.target(3), None);
    assert_eq!(source.lun_count(3), 0);
    assert_eq!(source.lun(0, 2), None);
    assert_eq!(source.lun(3, 0), None);
}

#[test]
fn an_empty_table_or_scratch_lists_no_target() {
    let table: LunTable<Vec<LunSlot>> = LunTable::new((0..4).map(|_| LunSlot::new()).collect());
    let (mut copies, mut order, mut starts) =
        (vec![LunCopy::EMPTY; 4], vec![0u16; 4], vec![0u16; 5]);
    let source = CopiedTargets::copy(&table, 1, &mut copies, &mut order, &mut starts);
    assert_eq!(source.target_count(), 0);
    assert_eq!(source.target(0), None);

    // The dump-mode scratch has no slot: a present LUN is not listed.
    table.record(0, 0, Answer::Inquiry, &inquiry(1));
    let mut end = [0u16];
    let source = CopiedTargets::copy(&table, 1, &mut [], &mut [], &mut end);
    assert_eq!(source.target_count(), 0);
    assert_eq!(source.lun(0, 0), None);
}
