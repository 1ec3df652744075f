//! WMI through the real miniport: SRB_FUNCTION_WMI requests (classic and SRB_EX) sent by the
//! StorPort simulator must come back byte for byte as `rvscsi_wmi::dispatch` answers them for an
//! `HbaInfo` built here, independently, from what the device and the platform say.

use rvscsi::storport::{
    SRB_STATUS_DATA_OVERRUN, SRB_STATUS_ERROR, SRB_STATUS_INVALID_REQUEST, SRB_STATUS_SUCCESS,
};
use rvscsi_tests::device::DeviceOptions;
use rvscsi_tests::device::target::{Lun, LunIdentity};
use rvscsi_tests::harness::{Machine, boot};
use rvscsi_tests::scenario::anonymous_disk;
use rvscsi_tests::sim::{
    AdapterKey, Completion, FIRST_REGINFO_BUFFER, Request, SimOptions, WMI_GUARD_BYTE,
    WMI_GUARD_LEN, WmiRequest,
};
use rvscsi_wmi::dispatch::{Provider, dispatch, stamp_reply_time};
use rvscsi_wmi::guid::Guid;
use rvscsi_wmi::hba::methods::sam_lun;
use rvscsi_wmi::hba::rvscsi::{RVSCSI_ADAPTER_LIMITS_GUID, RVSCSI_QUEUE_STATISTICS_GUID};
use rvscsi_wmi::hba::sm::{
    GetAdapterPortAttributesIn, GetDiscoveredPortAttributesIn, GetPortAttributesByWwnIn,
    MS_SM_ADAPTER_INFORMATION_QUERY_GUID, MS_SM_PORT_INFORMATION_METHODS_GUID,
    MS_SM_SCSI_INFORMATION_METHODS_GUID, MS_SM_TARGET_INFORMATION_METHODS_GUID,
    PORT_ATTRIBUTES_FIXED_SIZE, PortState, ScsiInquiryIn, ScsiReadCapacityIn, ScsiReportLunsIn,
    WwnPairCountIn, hba_status, port_method, sas_speed, scsi_method, target_method,
};
use rvscsi_wmi::hba::{
    AdapterLimits, HbaInfo, HbaProvider, LunInfo, PhyInfo, PhyStatistics, PortInfo,
    ProtocolStatistics, QueueStatistics, TargetInfo,
};
use rvscsi_wmi::sas::SasAddress;
use rvscsi_wmi::status::WmiStatus;
use rvscsi_wmi::wnode::{
    MinorFunction, WNODE_FLAG_STATIC_INSTANCE_NAMES, WnodeAllData, WnodeHeader, WnodeMethodItem,
    WnodeSingleInstance,
};
use virtio_core::hal::PciConfig;
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

const BLOCKS: u64 = 1 << 12;

fn machine(classic: bool, pci_location: (u32, u32)) -> Machine {
    let disk = || anonymous_disk(BLOCKS).unwrap();
    boot(
        SimOptions {
            force_scsi_request_block: classic,
            pci_location,
            ..SimOptions::default()
        },
        DeviceOptions::default(),
        vec![(0, 0, disk()), (1, 0, disk())],
    )
    .unwrap()
}

/// The owned parts of the `HbaInfo` this test expects for `machine`.
struct Expected {
    id: u64,
    vendor: u32,
    serial: String,
    hardware_version: String,
    queues: Vec<QueueStatistics>,
    limits: AdapterLimits,
}

/// What the adapter must report, from the identifier in the device's hardware key, the
/// device's configuration space and options, and the features the device saw the driver
/// accept.
fn expected(machine: &Machine) -> Expected {
    // The identifier the miniport created on its first start and keeps in the device's
    // hardware key (REG_BINARY, 8 bytes).
    let (value_type, stored) = machine
        .adapter
        .adapter_key()
        .value("RvscsiAdapterId")
        .expect("the adapter identifier is kept in the hardware key");
    assert_eq!(value_type, 3, "REG_BINARY");
    let id = u64::from_le_bytes(stored.try_into().unwrap());
    let config = machine.device.pci_config();
    let options = DeviceOptions::default();
    let features = machine.device.registers().driver_features();
    let found = machine.adapter.found_adapter().config;
    Expected {
        id,
        vendor: config.read32(0),
        serial: format!("{:016X}", SasAddress::for_adapter(id).to_u64()),
        hardware_version: format!("rev {:02X}", config.read8(8)),
        queues: (0..u32::from(options.request_queues))
            .map(|queue_index| QueueStatistics {
                queue_index,
                queue_size: u32::from(options.queue_size),
                ..QueueStatistics::default()
            })
            .collect(),
        limits: AdapterLimits {
            request_queues: u32::from(options.request_queues),
            queue_size: u32::from(options.queue_size),
            seg_max: options.seg_max,
            max_sectors: options.max_sectors,
            cmd_per_lun: options.cmd_per_lun,
            max_channel: 0,
            max_target: u32::from(options.max_target),
            max_lun: options.max_lun,
            max_transfer_length: found.maximum_transfer_length,
            physical_breaks: found.number_of_physical_breaks,
            features: features.bits(),
            packed_ring: features.contains(virtio_core::features::Features::RING_PACKED),
            indirect_descriptors: features.contains(virtio_core::features::Features::INDIRECT_DESC),
            event_index: features.contains(virtio_core::features::Features::EVENT_IDX),
        },
    }
}

fn info(expected: &Expected) -> HbaInfo<'_> {
    let unknown = sas_speed::UNKNOWN;
    HbaInfo {
        unique_adapter_id: expected.id,
        vendor_specific_id: expected.vendor,
        manufacturer: "Red Hat, Inc.",
        serial_number: &expected.serial,
        model: "virtio-scsi",
        model_description: "virtio SCSI host bus adapter",
        hardware_version: &expected.hardware_version,
        driver_version: env!("CARGO_PKG_VERSION"),
        option_rom_version: "",
        firmware_version: "",
        driver_name: "rvscsi.sys",
        hba_symbolic_name: "rvscsi virtio-scsi HBA",
        redundant_option_rom_version: "",
        redundant_firmware_version: "",
        mfg_domain: "com.redhat",
        port: PortInfo {
            os_device_name: "",
            state: PortState::Online,
            local_sas_address: SasAddress::for_adapter(expected.id),
            attached_sas_address: SasAddress::synthesize(expected.id, 257),
            phy: PhyInfo {
                negotiated_link_rate: unknown,
                programmed_min_link_rate: unknown,
                hardware_min_link_rate: unknown,
                programmed_max_link_rate: unknown,
                hardware_max_link_rate: unknown,
            },
            protocol_statistics: ProtocolStatistics::default(),
            phy_statistics: PhyStatistics::default(),
        },
        targets: &[],
        queues: &expected.queues,
        limits: expected.limits,
    }
}

fn header(guid: Guid, buffer_size: usize) -> WnodeHeader {
    WnodeHeader {
        buffer_size: U32::new(buffer_size as u32),
        provider_id: U32::new(0),
        historical_context: U64::new(0),
        timestamp: U64::new(0),
        guid,
        client_context: U32::new(0),
        flags: U32::new(WNODE_FLAG_STATIC_INSTANCE_NAMES),
    }
}

fn all_data(guid: Guid, room: usize) -> Vec<u8> {
    let mut buffer = vec![0; room];
    let request = WnodeAllData {
        header: header(guid, 72),
        data_block_offset: U32::new(0),
        instance_count: U32::new(0),
        offset_instance_name_offsets: U32::new(0),
    };
    buffer[..60].copy_from_slice(request.as_bytes());
    buffer
}

fn single(guid: Guid, instance: u32, room: usize) -> Vec<u8> {
    let mut buffer = vec![0; room];
    let request = WnodeSingleInstance {
        header: header(guid, 64),
        offset_instance_name: U32::new(0),
        instance_index: U32::new(instance),
        data_block_offset: U32::new(64),
        size_data_block: U32::new(0),
    };
    buffer[..request.as_bytes().len()].copy_from_slice(request.as_bytes());
    buffer
}

fn method(guid: Guid, method_id: u32, input: &[u8], room: usize) -> Vec<u8> {
    let mut buffer = vec![0; room];
    let request = WnodeMethodItem {
        header: header(guid, 72 + input.len()),
        offset_instance_name: U32::new(0),
        instance_index: U32::new(0),
        method_id: U32::new(method_id),
        data_block_offset: U32::new(72),
        size_data_block: U32::new(input.len() as u32),
    };
    buffer[..request.as_bytes().len()].copy_from_slice(request.as_bytes());
    buffer[72..72 + input.len()].copy_from_slice(input);
    buffer
}

fn words(values: &[u32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

fn srb_status(status: WmiStatus) -> u8 {
    match status {
        WmiStatus::Success => SRB_STATUS_SUCCESS,
        WmiStatus::BufferTooSmall => SRB_STATUS_DATA_OVERRUN,
        WmiStatus::InvalidParameter | WmiStatus::InvalidDeviceRequest => SRB_STATUS_INVALID_REQUEST,
        _ => SRB_STATUS_ERROR,
    }
}

fn send(
    machine: &Machine,
    minor: MinorFunction,
    guid: Option<Guid>,
    buffer: Vec<u8>,
) -> Completion {
    let path = guid.map(|guid| {
        let mut bytes = [0; 16];
        bytes.copy_from_slice(guid.as_bytes());
        bytes
    });
    machine
        .adapter
        .wmi(0, &WmiRequest::adapter(minor as u8, path, buffer))
        .unwrap()
}

/// The system time as StorPortQuerySystemTime reports it: 100 ns units since 1601.
fn system_time() -> u64 {
    const EPOCH_DIFFERENCE: u64 = 116_444_736_000_000_000;
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    EPOCH_DIFFERENCE + u64::try_from(since_unix.as_nanos() / 100).unwrap()
}

fn guard_intact(completion: &Completion, len: usize) {
    assert_eq!(completion.data.len(), len + WMI_GUARD_LEN);
    assert!(
        completion.data[len..].iter().all(|&b| b == WMI_GUARD_BYTE),
        "guard overwritten"
    );
}

/// Sends `buffer` through the miniport and through `dispatch` on the expected info; both must
/// agree on status, length and every byte.
fn same_as_direct(
    machine: &Machine,
    info: &HbaInfo<'_>,
    minor: MinorFunction,
    guid: Option<Guid>,
    buffer: Vec<u8>,
) -> Completion {
    let mut direct = buffer.clone();
    let reply = dispatch(minor as u8, &mut direct, &mut HbaProvider::new(info));
    let before = system_time();
    let completion = send(machine, minor, guid, buffer);
    let after = system_time();
    // A data reply carries the system time it was made (as WMILIB stamps it): between the
    // send and the completion. Stamped the same, the direct reply must match byte for byte.
    let stamped = completion
        .data
        .get(16..24)
        .map_or(0, |bytes| u64::from_le_bytes(bytes.try_into().unwrap()));
    if stamp_reply_time(minor as u8, &mut direct, &reply, stamped) {
        assert!(
            (before..=after).contains(&stamped),
            "{minor:?} {guid:?}: TimeStamp {stamped} outside {before}..={after}"
        );
    }
    assert_eq!(
        completion.srb_status,
        srb_status(reply.status),
        "{minor:?} {guid:?} {reply:?}"
    );
    let returned =
        if reply.status == WmiStatus::Success || reply.status == WmiStatus::BufferTooSmall {
            reply.bytes_returned
        } else {
            0
        };
    assert_eq!(
        completion.data_transfer_length, returned,
        "{minor:?} {guid:?}"
    );
    assert_eq!(
        &completion.data[..direct.len()],
        &direct[..],
        "{minor:?} {guid:?}"
    );
    guard_intact(&completion, direct.len());
    completion
}

#[test]
fn every_class_answers_exactly_as_the_dispatcher_in_both_srb_shapes() {
    for classic in [false, true] {
        let location = (0, 3);
        let machine = machine(classic, location);
        let expected = expected(&machine);
        let info = info(&expected);
        let reginfo = same_as_direct(&machine, &info, MinorFunction::RegInfo, None, vec![0; 1024]);
        assert_eq!(reginfo.srb_status, SRB_STATUS_SUCCESS);
        for guid in [
            MS_SM_ADAPTER_INFORMATION_QUERY_GUID,
            RVSCSI_QUEUE_STATISTICS_GUID,
            RVSCSI_ADAPTER_LIMITS_GUID,
        ] {
            let all = same_as_direct(
                &machine,
                &info,
                MinorFunction::QueryAllData,
                Some(guid),
                all_data(guid, 16384),
            );
            assert_eq!(all.srb_status, SRB_STATUS_SUCCESS);
            assert!(all.data_transfer_length > 72);
            let one = same_as_direct(
                &machine,
                &info,
                MinorFunction::QuerySingleInstance,
                Some(guid),
                single(guid, 0, 2048),
            );
            assert_eq!(one.srb_status, SRB_STATUS_SUCCESS);
        }
        // The last queue's instance, and one past it.
        let guid = RVSCSI_QUEUE_STATISTICS_GUID;
        same_as_direct(
            &machine,
            &info,
            MinorFunction::QuerySingleInstance,
            Some(guid),
            single(guid, 3, 256),
        );
        let missing = same_as_direct(
            &machine,
            &info,
            MinorFunction::QuerySingleInstance,
            Some(guid),
            single(guid, 4, 256),
        );
        assert_eq!(missing.srb_status, SRB_STATUS_ERROR);
        let port = MS_SM_PORT_INFORMATION_METHODS_GUID;
        // Each method's bytes must match; the status too (a short input fails the same way
        // on both sides, and the first three must succeed).
        for (id, input, succeeds) in [
            (port_method::GET_PORT_TYPE, words(&[0]), true),
            (
                port_method::GET_ADAPTER_PORT_ATTRIBUTES,
                words(&[0, 28]),
                true,
            ),
            (port_method::GET_PROTOCOL_STATISTICS, words(&[0, 1]), true),
            (port_method::GET_PHY_STATISTICS, words(&[0, 0]), false),
            (port_method::GET_SAS_PHY_ATTRIBUTES, words(&[0, 0]), false),
            (
                port_method::GET_DISCOVERED_PORT_ATTRIBUTES,
                words(&[0, 0, 28]),
                false,
            ),
        ] {
            let completion = same_as_direct(
                &machine,
                &info,
                MinorFunction::ExecuteMethod,
                Some(port),
                method(port, id, &input, 4096),
            );
            if succeeds {
                assert_eq!(completion.srb_status, SRB_STATUS_SUCCESS, "method {id}");
            }
        }
        // Unknown GUID: an error, no data.
        let unknown = Guid::from_fields(1, 2, 3, [4; 8]);
        let completion = same_as_direct(
            &machine,
            &info,
            MinorFunction::QueryAllData,
            Some(unknown),
            all_data(unknown, 256),
        );
        assert_eq!(
            (completion.srb_status, completion.data_transfer_length),
            (SRB_STATUS_ERROR, 0)
        );
        machine.finish();
    }
}

#[test]
fn a_small_buffer_gets_the_size_needed() {
    for classic in [false, true] {
        let machine = machine(classic, (0, 3));
        let expected = expected(&machine);
        let info = info(&expected);
        // WNODE_TOO_SMALL: success, 56 bytes, SizeNeeded at 48.
        let guid = MS_SM_ADAPTER_INFORMATION_QUERY_GUID;
        let small = same_as_direct(
            &machine,
            &info,
            MinorFunction::QueryAllData,
            Some(guid),
            all_data(guid, 72),
        );
        assert_eq!(
            (small.srb_status, small.data_transfer_length),
            (SRB_STATUS_SUCCESS, 56)
        );
        let needed = u32::from_le_bytes(small.data[48..52].try_into().unwrap());
        let fits = same_as_direct(
            &machine,
            &info,
            MinorFunction::QueryAllData,
            Some(guid),
            all_data(guid, needed as usize),
        );
        // WMI's retry with the size asked for gets the data.
        assert_eq!(fits.srb_status, SRB_STATUS_SUCCESS);
        assert!(fits.data_transfer_length > 56 && fits.data_transfer_length <= needed);
        // REGINFO: DATA_OVERRUN with the needed size as a ULONG.
        let reginfo = same_as_direct(&machine, &info, MinorFunction::RegInfo, None, vec![0; 16]);
        assert_eq!(
            (reginfo.srb_status, reginfo.data_transfer_length),
            (SRB_STATUS_DATA_OVERRUN, 4)
        );
        let needed = u32::from_le_bytes(reginfo.data[..4].try_into().unwrap());
        let full = same_as_direct(
            &machine,
            &info,
            MinorFunction::RegInfo,
            None,
            vec![0; needed as usize],
        );
        assert_eq!(
            (full.srb_status, full.data_transfer_length),
            (SRB_STATUS_SUCCESS, needed)
        );
        machine.finish();
    }
}

#[test]
fn lying_lengths_are_refused_without_overrun() {
    for classic in [false, true] {
        let machine = machine(classic, (0, 3));
        let guid = MS_SM_ADAPTER_INFORMATION_QUERY_GUID;
        // The WNODE claims 4096 bytes; DataTransferLength says 100 (the buffer has 4096, but
        // only the first 100 are the miniport's): refused, nothing past 100 touched.
        let mut buffer = all_data(guid, 4096);
        buffer[..4].copy_from_slice(&4096u32.to_le_bytes());
        let original = buffer.clone();
        let mut request = WmiRequest::adapter(MinorFunction::QueryAllData as u8, None, buffer);
        request.data_transfer_length = 100;
        let completion = machine.adapter.wmi(1, &request).unwrap();
        assert_eq!(
            (completion.srb_status, completion.data_transfer_length),
            (SRB_STATUS_INVALID_REQUEST, 0)
        );
        assert_eq!(&completion.data[..4096], &original[..]);
        guard_intact(&completion, 4096);
        // A buffer shorter than the WNODE header itself.
        let mut request = WmiRequest::adapter(
            MinorFunction::QuerySingleInstance as u8,
            None,
            vec![0x5A; 20],
        );
        request.data_transfer_length = 20;
        let completion = machine.adapter.wmi(0, &request).unwrap();
        assert_eq!(completion.srb_status, SRB_STATUS_INVALID_REQUEST);
        assert!(completion.data[..20].iter().all(|&b| b == 0x5A));
        guard_intact(&completion, 20);
        // An unknown minor function.
        let completion = machine
            .adapter
            .wmi(0, &WmiRequest::adapter(12, None, vec![0; 128]))
            .unwrap();
        assert_eq!(completion.srb_status, SRB_STATUS_INVALID_REQUEST);
        machine.finish();
    }
}

#[test]
fn a_logical_unit_request_succeeds_with_no_data() {
    // The miniport registers no unit-level blocks: a request for a logical unit (WMIFlags 0,
    // the SRB addressed to the unit) completes SUCCESS with no data and the buffer untouched,
    // as the WDK's SCSIWMI samples and vioscsi answer it.
    for classic in [false, true] {
        let machine = machine(classic, (0, 3));
        let guid = MS_SM_ADAPTER_INFORMATION_QUERY_GUID;
        let mut path = [0; 16];
        path.copy_from_slice(guid.as_bytes());
        for (minor, buffer) in [
            (MinorFunction::QueryAllData, all_data(guid, 4096)),
            (MinorFunction::QuerySingleInstance, single(guid, 0, 4096)),
            (MinorFunction::RegInfoEx, vec![0x3C; 1024]),
        ] {
            let original = buffer.clone();
            let request = WmiRequest::logical_unit(1, 0, minor as u8, Some(path), buffer);
            let completion = machine.adapter.wmi(0, &request).unwrap();
            assert_eq!(
                (completion.srb_status, completion.data_transfer_length),
                (SRB_STATUS_SUCCESS, 0),
                "{minor:?}"
            );
            assert_eq!(
                &completion.data[..original.len()],
                &original[..],
                "{minor:?}"
            );
            guard_intact(&completion, original.len());
        }
        machine.finish();
    }
}

#[test]
fn windows_registers_with_reginfo_ex_and_finds_every_class() {
    // WMI on Windows XP and later asks for the registration with IRP_MN_REGINFO_EX; a driver
    // that answers only IRP_MN_REGINFO registers nothing and every class is empty.
    for classic in [false, true] {
        let location = (0, 3);
        let machine = machine(classic, location);
        let expected = expected(&machine);
        let info = info(&expected);
        let provider = HbaProvider::new(&info);
        let registration = machine.adapter.wmi_register(0).unwrap();
        let registered: Vec<_> = registration
            .guids
            .iter()
            .map(|row| (row.guid, row.flags, row.instance_count))
            .collect();
        let table: Vec<_> = provider
            .guids()
            .iter()
            .map(|row| {
                let mut guid = [0; 16];
                guid.copy_from_slice(row.guid.as_bytes());
                (guid, row.flags, row.instance_count)
            })
            .collect();
        assert_eq!(registered, table);
        assert!(registered.iter().any(|(guid, _, count)| {
            guid == MS_SM_ADAPTER_INFORMATION_QUERY_GUID.as_bytes() && *count == 1
        }));
        assert_eq!(
            registration.mof_resource_name.as_deref(),
            provider.query_reginfo().mof_resource_name
        );
        // The first buffer was too small; the retry had exactly the size the driver asked for.
        assert_eq!(registration.buffer_sizes.len(), 2, "{registration:?}");
        assert_eq!(registration.buffer_sizes[0], FIRST_REGINFO_BUFFER);
        assert!(registration.buffer_sizes[1] > FIRST_REGINFO_BUFFER);
        machine.finish();
    }
}

fn adapter_id(machine: &Machine) -> u64 {
    let guid = MS_SM_ADAPTER_INFORMATION_QUERY_GUID;
    let completion = send(
        machine,
        MinorFunction::QuerySingleInstance,
        Some(guid),
        single(guid, 0, 4096),
    );
    assert_eq!(completion.srb_status, SRB_STATUS_SUCCESS);
    u64::from_le_bytes(completion.data[64..72].try_into().unwrap())
}

/// A one-disk machine at `pci_location` whose device's hardware key is `key`.
fn machine_with_key(pci_location: (u32, u32), key: AdapterKey) -> Machine {
    boot(
        SimOptions {
            pci_location,
            adapter_key: key,
            ..SimOptions::default()
        },
        DeviceOptions::default(),
        vec![(0, 0, anonymous_disk(BLOCKS).unwrap())],
    )
    .unwrap()
}

#[test]
fn the_adapter_identity_is_kept_across_boots_and_differs_between_cloned_machines() {
    let location = (0, 3);
    let key = AdapterKey::default();
    let first = machine_with_key(location, key.clone());
    let id = adapter_id(&first);
    assert_eq!(id, expected(&first).id);
    first.finish();
    // The same machine booted again (its hardware key kept): the same identity.
    let rebooted = machine_with_key(location, key.clone());
    assert_eq!(adapter_id(&rebooted), id);
    rebooted.finish();
    // Another VM cloned from the same template, in the same slot, its device instance reset
    // by sysprep's generalize pass (an empty hardware key): another identity, and so another
    // serial number and SAS address.
    let clone = machine_with_key(location, AdapterKey::default());
    let clone_id = adapter_id(&clone);
    assert_ne!(clone_id, id);
    assert_ne!(
        expected(&clone).serial,
        format!("{:016X}", SasAddress::for_adapter(id).to_u64())
    );
    clone.finish();
    // A disk copied without generalize copies the hardware key, and with it the identity
    // (documented in `rvscsi::identity`; deleting the value makes a new one).
    let copied = machine_with_key(location, key.copied());
    assert_eq!(adapter_id(&copied), id);
    copied.finish();
}

#[test]
fn two_adapters_have_different_unique_ids() {
    let first = machine(false, (0, 3));
    let second = machine(false, (0, 4));
    let third = machine(true, (2, 3));
    let ids = [adapter_id(&first), adapter_id(&second), adapter_id(&third)];
    assert_eq!(ids[0], expected(&first).id);
    assert_eq!(ids[1], expected(&second).id);
    assert_ne!(ids[0], ids[1]);
    assert_ne!(ids[0], ids[2]);
    assert_ne!(ids[1], ids[2]);
    // Stable: asked again, the same.
    assert_eq!(adapter_id(&first), ids[0]);
    first.finish();
    second.finish();
    third.finish();
}

/// Decodes the Rvscsi_QueueStatistics instances of a QUERY_ALL_DATA reply (fixed size 48).
fn queue_statistics(machine: &Machine) -> Vec<[u64; 5]> {
    let guid = RVSCSI_QUEUE_STATISTICS_GUID;
    let completion = send(
        machine,
        MinorFunction::QueryAllData,
        Some(guid),
        all_data(guid, 4096),
    );
    assert_eq!(completion.srb_status, SRB_STATUS_SUCCESS);
    let data = &completion.data;
    let count = u32::from_le_bytes(data[52..56].try_into().unwrap()) as usize;
    let offset = u32::from_le_bytes(data[48..52].try_into().unwrap()) as usize;
    (0..count)
        .map(|index| {
            let at = offset + index * 48;
            let mut values = [0; 5];
            for (slot, value) in values.iter_mut().enumerate() {
                let start = at + 8 + slot * 8;
                *value = u64::from_le_bytes(data[start..start + 8].try_into().unwrap());
            }
            values
        })
        .collect()
}

#[test]
fn counters_move_after_io_and_match_the_device() {
    let machine = machine(false, (0, 3));
    let before = queue_statistics(&machine);
    assert_eq!(before.len(), 4);
    assert!(before.iter().all(|queue| queue[0] == 0));
    let (reads, writes) = (6u64, 4u64);
    for index in 0..writes {
        let cdb = vec![0x2A, 0, 0, 0, 0, index as u8, 0, 0, 8, 0];
        let done = machine
            .adapter
            .execute(
                index as u32 % 2,
                &Request::new(0, 0, &cdb).writing(&[7; 4096]),
            )
            .unwrap();
        assert_eq!(done.srb_status, SRB_STATUS_SUCCESS);
    }
    for index in 0..reads {
        let cdb = vec![0x28, 0, 0, 0, 0, index as u8, 0, 0, 8, 0];
        let done = machine
            .adapter
            .execute(index as u32 % 2, &Request::new(1, 0, &cdb).reading(4096))
            .unwrap();
        assert_eq!(done.srb_status, SRB_STATUS_SUCCESS);
    }
    let after = queue_statistics(&machine);
    let total: u64 = after.iter().map(|queue| queue[0]).sum();
    assert_eq!(total, reads + writes);
    let stats = machine.device.stats();
    for (index, queue) in after.iter().enumerate() {
        // Requests and kicks as the device counted them on virtqueue 2 + index.
        let device = &stats.queues[2 + index];
        assert_eq!(queue[0], device.requests, "queue {index}");
        assert_eq!(queue[1], device.notifications, "queue {index}");
    }
    assert!(
        after.iter().map(|queue| queue[2]).sum::<u64>() >= 1,
        "interrupts"
    );
    // SM_GetProtocolStatistics: reads and writes, split by direction.
    let port = MS_SM_PORT_INFORMATION_METHODS_GUID;
    let completion = send(
        &machine,
        MinorFunction::ExecuteMethod,
        Some(port),
        method(
            port,
            port_method::GET_PROTOCOL_STATISTICS,
            &words(&[0, 1]),
            4096,
        ),
    );
    assert_eq!(completion.srb_status, SRB_STATUS_SUCCESS);
    // Output: HBAStatus (4), then MS_SMHBA_PROTOCOLSTATISTICS (8-aligned at 8): seconds, in, out.
    let field = |index: usize| {
        i64::from_le_bytes(
            completion.data[72 + 8 + 8 * index..80 + 8 * index + 8]
                .try_into()
                .unwrap(),
        )
    };
    assert_eq!(
        (field(1), field(2)),
        (reads.cast_signed(), writes.cast_signed())
    );
    machine.finish();
}

/// What the device answered one logical unit, as the miniport's LUN table should keep it.
struct DeviceAnswers {
    target: u8,
    lun: u8,
    inquiry: Vec<u8>,
    serial: Vec<u8>,
    identification: Vec<u8>,
    capacity_10: Vec<u8>,
    capacity_16: Vec<u8>,
}

fn read(machine: &Machine, target: u8, lun: u8, cdb: &[u8], len: u32) -> Vec<u8> {
    let done = machine
        .adapter
        .execute(1, &Request::new(target, lun, cdb).reading(len))
        .unwrap();
    assert!(
        matches!(
            done.srb_status & 0x3F,
            SRB_STATUS_SUCCESS | SRB_STATUS_DATA_OVERRUN
        ),
        "{cdb:02X?}: {:#x}",
        done.srb_status
    );
    done.data[..done.data_transfer_length as usize].to_vec()
}

fn scsi_in(info: &HbaInfo<'_>, target: &TargetInfo<'_>, lun: u8) -> ([u8; 8], [u8; 8], U64) {
    (
        info.port.local_sas_address.0,
        target.sas_address.0,
        U64::new(u64::from_le_bytes(sam_lun(u16::from(lun)))),
    )
}

#[test]
fn target_mapping_and_scsi_methods_answer_what_the_device_said_after_a_bus_scan() {
    let location = (0, 5);
    let machine = three_disk_machine(location);
    let expected = expected(&machine);
    let target_guid = MS_SM_TARGET_INFORMATION_METHODS_GUID;
    let local = SasAddress::for_adapter(expected.id).0;
    let mapping_in = |entries: u32| {
        WwnPairCountIn {
            hba_port_wwn: local,
            domain_port_wwn: [0; 8],
            entry_count: U32::new(entries),
        }
        .as_bytes()
        .to_vec()
    };

    // Before any scan the adapter knows no logical unit.
    let empty = info(&expected);
    let before = same_as_direct(
        &machine,
        &empty,
        MinorFunction::ExecuteMethod,
        Some(target_guid),
        method(
            target_guid,
            target_method::GET_TARGET_MAPPING,
            &mapping_in(8),
            8192,
        ),
    );
    assert_eq!(before.srb_status, SRB_STATUS_SUCCESS);

    let answers = scan_and_read(&machine);
    // The synthesised designator is in the page 0x83 Windows saw, for the LUN without one.
    assert!(answers.iter().all(|lun| lun.identification.len() > 4));

    let lun_infos: Vec<LunInfo<'_>> = answers
        .iter()
        .map(|answer| LunInfo {
            lun: u16::from(answer.lun),
            os_device_name: "",
            statistics: ProtocolStatistics::default(),
            inquiry: Some(&answer.inquiry),
            unit_serial_number: Some(&answer.serial),
            device_identification: Some(&answer.identification),
            read_capacity_10: Some(&answer.capacity_10),
            read_capacity_16: Some(&answer.capacity_16),
        })
        .collect();
    let mut targets = Vec::new();
    for target in [0u8, 2] {
        let first = answers.iter().position(|a| a.target == target).unwrap();
        let count = answers.iter().filter(|a| a.target == target).count();
        let lun0 = answers
            .iter()
            .find(|a| a.target == target && a.lun == 0)
            .map(|a| &a.identification[..]);
        targets.push(TargetInfo {
            sas_address: SasAddress::for_target(lun0, expected.id, target),
            bus: 0,
            target,
            luns: &lun_infos[first..first + count],
        });
    }
    let mut info = info(&expected);
    info.targets = &targets;

    let mapping = same_as_direct(
        &machine,
        &info,
        MinorFunction::ExecuteMethod,
        Some(target_guid),
        method(
            target_guid,
            target_method::GET_TARGET_MAPPING,
            &mapping_in(8),
            8192,
        ),
    );
    assert_eq!(mapping.srb_status, SRB_STATUS_SUCCESS);
    // HBAStatus OK, three entries in all, three returned.
    assert_eq!(&mapping.data[72..84], &words(&[0, 3, 3])[..]);
    // Too little room: ERROR_MORE_DATA with what fits.
    same_as_direct(
        &machine,
        &info,
        MinorFunction::ExecuteMethod,
        Some(target_guid),
        method(
            target_guid,
            target_method::GET_TARGET_MAPPING,
            &mapping_in(1),
            8192,
        ),
    );
    port_methods_agree(&machine, &info, &targets, local);
    scsi_methods_agree(&machine, &info, &targets, &answers);
    machine.finish();
}

/// The port driver's bus scan, then what the class driver reads of each disk: VPD pages 0x80
/// and 0x83 (whole, then the header alone), READ CAPACITY (10) and (16).
fn scan_and_read(machine: &Machine) -> Vec<DeviceAnswers> {
    let disks = machine.adapter.scan_bus().unwrap();
    assert_eq!(disks.len(), 3);
    disks
        .iter()
        .map(|disk| {
            let (target, lun) = (disk.target, disk.lun);
            DeviceAnswers {
                target,
                lun,
                inquiry: disk.inquiry.clone(),
                // A later read of only the page's header must not replace the whole page.
                serial: {
                    let page = read(machine, target, lun, &[0x12, 1, 0x80, 0, 255, 0], 255);
                    read(machine, target, lun, &[0x12, 1, 0x80, 0, 4, 0], 4);
                    page
                },
                identification: {
                    let page = read(machine, target, lun, &[0x12, 1, 0x83, 0, 255, 0], 255);
                    read(machine, target, lun, &[0x12, 1, 0x83, 0, 4, 0], 4);
                    page
                },
                capacity_10: read(machine, target, lun, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8),
                capacity_16: read(
                    machine,
                    target,
                    lun,
                    &[0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
                    32,
                ),
            }
        })
        .collect()
}

/// The port and REPORT LUNS methods agree with the dispatcher on `info` for every target.
/// `LocalSASAddress` and `AttachedSASAddress` of the `MS_SMHBA_SAS_Port` in a port-attributes
/// method reply: output at 72, `HBAStatus`, the 8-aligned `MS_SMHBA_PORTATTRIBUTES`, whose
/// port-specific attributes start at `PORT_ATTRIBUTES_FIXED_SIZE`.
fn sas_port(reply: &Completion) -> ([u8; 8], [u8; 8]) {
    let sas = 72 + 8 + PORT_ATTRIBUTES_FIXED_SIZE;
    (
        reply.data[sas + 4..sas + 12].try_into().unwrap(),
        reply.data[sas + 12..sas + 20].try_into().unwrap(),
    )
}

fn port_methods_agree(
    machine: &Machine,
    info: &HbaInfo<'_>,
    targets: &[TargetInfo<'_>],
    local: [u8; 8],
) {
    let port_guid = MS_SM_PORT_INFORMATION_METHODS_GUID;
    let scsi_guid = MS_SM_SCSI_INFORMATION_METHODS_GUID;
    let adapter_port = GetAdapterPortAttributesIn {
        port_index: U32::new(0),
        port_specific_attributes_max_size: U32::new(64),
    };
    let reply = same_as_direct(
        machine,
        info,
        MinorFunction::ExecuteMethod,
        Some(port_guid),
        method(
            port_guid,
            port_method::GET_ADAPTER_PORT_ATTRIBUTES,
            adapter_port.as_bytes(),
            4096,
        ),
    );
    let adapter = sas_port(&reply);
    assert_eq!(adapter.0, local);
    let mut discovered = Vec::new();
    // Two targets and, after them, the virtual expander they attach through.
    for index in 0..4 {
        let input = GetDiscoveredPortAttributesIn {
            port_index: U32::new(0),
            discovered_port_index: U32::new(index),
            port_specific_attributes_max_size: U32::new(64),
        };
        let reply = same_as_direct(
            machine,
            info,
            MinorFunction::ExecuteMethod,
            Some(port_guid),
            method(
                port_guid,
                port_method::GET_DISCOVERED_PORT_ATTRIBUTES,
                input.as_bytes(),
                4096,
            ),
        );
        let status = u32::from_le_bytes(reply.data[72..76].try_into().unwrap());
        let wanted = if index < 3 {
            discovered.push(sas_port(&reply));
            hba_status::OK
        } else {
            hba_status::ERROR_ILLEGAL_INDEX
        };
        assert_eq!(status, wanted, "discovered port {index}");
    }
    // A consistent topology: what the adapter's port attaches to is a discovered port, and
    // every discovered port attaches to the adapter's port or to another discovered port.
    let locals: Vec<[u8; 8]> = discovered.iter().map(|port| port.0).collect();
    assert!(
        locals.contains(&adapter.1),
        "adapter attached to {:02X?}",
        adapter.1
    );
    for (port_local, attached) in &discovered {
        assert!(
            *attached == local || (locals.contains(attached) && attached != port_local),
            "{port_local:02X?} attached to {attached:02X?}"
        );
    }
    for target in targets {
        let input = GetPortAttributesByWwnIn {
            port_wwn: target.sas_address.0,
            domain_port_wwn: local,
            port_specific_attributes_max_size: U32::new(64),
        };
        same_as_direct(
            machine,
            info,
            MinorFunction::ExecuteMethod,
            Some(port_guid),
            method(
                port_guid,
                port_method::GET_PORT_ATTRIBUTES_BY_WWN,
                input.as_bytes(),
                4096,
            ),
        );
        let report = ScsiReportLunsIn {
            hba_port_wwn: local,
            discovered_port_wwn: target.sas_address.0,
            domain_port_wwn: [0; 8],
            cdb: [0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            in_resp_buffer_max_size: U32::new(256),
            in_sense_buffer_max_size: U32::new(32),
        };
        same_as_direct(
            machine,
            info,
            MinorFunction::ExecuteMethod,
            Some(scsi_guid),
            method(
                scsi_guid,
                scsi_method::SCSI_REPORT_LUNS,
                report.as_bytes(),
                4096,
            ),
        );
    }
}

/// SM_ScsiInquiry and SM_ScsiReadCapacity agree with the dispatcher on `info` and return the
/// bytes the device returned for every logical unit.
fn scsi_methods_agree(
    machine: &Machine,
    info: &HbaInfo<'_>,
    targets: &[TargetInfo<'_>],
    answers: &[DeviceAnswers],
) {
    let scsi_guid = MS_SM_SCSI_INFORMATION_METHODS_GUID;
    for answer in answers {
        let target = targets.iter().find(|t| t.target == answer.target).unwrap();
        let (hba, discovered, lun) = scsi_in(info, target, answer.lun);
        let inquiries: [([u8; 6], Option<&[u8]>); 4] = [
            ([0x12, 0, 0, 0, 255, 0], Some(&answer.inquiry)),
            ([0x12, 1, 0x80, 0, 255, 0], Some(&answer.serial)),
            ([0x12, 1, 0x83, 0, 255, 0], Some(&answer.identification)),
            // A page nothing cached: HBA_STATUS_ERROR_NOT_SUPPORTED, no bytes.
            ([0x12, 1, 0xB0, 0, 255, 0], None),
        ];
        for (cdb, device) in inquiries {
            let input = ScsiInquiryIn {
                hba_port_wwn: hba,
                discovered_port_wwn: discovered,
                domain_port_wwn: [0; 8],
                smhba_lun: lun,
                cdb,
                padding: [0; 2],
                in_resp_buffer_max_size: U32::new(512),
                in_sense_buffer_max_size: U32::new(32),
            };
            let reply = same_as_direct(
                machine,
                info,
                MinorFunction::ExecuteMethod,
                Some(scsi_guid),
                method(scsi_guid, scsi_method::SCSI_INQUIRY, input.as_bytes(), 4096),
            );
            assert_eq!(reply.srb_status, SRB_STATUS_SUCCESS);
            let returned = &reply.data[72..reply.data_transfer_length as usize];
            match device {
                Some(bytes) => assert!(
                    returned.windows(bytes.len()).any(|window| window == bytes),
                    "{cdb:02X?} of {}:{}",
                    answer.target,
                    answer.lun
                ),
                None => assert_eq!(
                    &returned[..4],
                    &hba_status::ERROR_NOT_SUPPORTED.to_le_bytes()
                ),
            }
        }
        let mut rc16 = [0u8; 16];
        rc16[..2].copy_from_slice(&[0x9E, 0x10]);
        rc16[13] = 32;
        let mut rc10 = [0u8; 16];
        rc10[0] = 0x25;
        for (cdb, device) in [(rc10, &answer.capacity_10), (rc16, &answer.capacity_16)] {
            let input = ScsiReadCapacityIn {
                hba_port_wwn: hba,
                discovered_port_wwn: discovered,
                domain_port_wwn: [0; 8],
                smhba_lun: lun,
                cdb,
                in_resp_buffer_max_size: U32::new(64),
                in_sense_buffer_max_size: U32::new(32),
            };
            let reply = same_as_direct(
                machine,
                info,
                MinorFunction::ExecuteMethod,
                Some(scsi_guid),
                method(
                    scsi_guid,
                    scsi_method::SCSI_READ_CAPACITY,
                    input.as_bytes(),
                    4096,
                ),
            );
            let returned = &reply.data[72..reply.data_transfer_length as usize];
            assert!(
                returned
                    .windows(device.len())
                    .any(|window| window == &device[..])
            );
        }
    }
}

/// Three disks: LUNs 0 and 1 of target 0 (LUN 0 without a designator of its own, so page 0x83
/// is synthesised), LUN 0 of target 2.
fn three_disk_machine(pci_location: (u32, u32)) -> Machine {
    let disk = |naa_id| {
        Lun::memory(BLOCKS, 512)
            .unwrap()
            .with_identity(LunIdentity {
                naa_id,
                ..LunIdentity::default()
            })
    };
    boot(
        SimOptions {
            pci_location,
            ..SimOptions::default()
        },
        DeviceOptions::default(),
        vec![
            (0, 0, disk(None)),
            (0, 1, disk(Some(0x6001_4055_0000_0001))),
            (2, 0, disk(Some(0x6001_4055_0000_0002))),
        ],
    )
    .unwrap()
}
