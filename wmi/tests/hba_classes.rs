//! Golden-buffer tests of the `MS_SM` HBA classes and rvscsi's own classes, through the
//! dispatcher. Expected bytes are written at the offsets of `layout/mod.rs` (hand-computed
//! from hbapiwmi.h's field lists and confirmed against C by `c_layout.rs`), never by the
//! crate's encoder.

#[path = "layout/mod.rs"]
mod layout;

use rvscsi_wmi::dispatch::{Reply, dispatch};
use rvscsi_wmi::guid::Guid;
use rvscsi_wmi::hba::rvscsi::{RVSCSI_ADAPTER_LIMITS_GUID, RVSCSI_QUEUE_STATISTICS_GUID};
use rvscsi_wmi::hba::sm::{
    MS_SM_ADAPTER_INFORMATION_QUERY_GUID, MS_SM_PORT_INFORMATION_METHODS_GUID,
    MS_SM_SCSI_INFORMATION_METHODS_GUID, MS_SM_TARGET_INFORMATION_METHODS_GUID, PortState,
    sas_speed,
};
use rvscsi_wmi::hba::{
    AdapterLimits, HbaInfo, HbaProvider, LunInfo, PhyInfo, PhyStatistics, PortInfo,
    ProtocolStatistics, QueueStatistics, TargetInfo, TargetPort, TargetSource,
};
use rvscsi_wmi::sas::{PciLocation, SasAddress, unique_adapter_id};
use rvscsi_wmi::status::{WmiError, WmiStatus};
use rvscsi_wmi::wnode::{
    WNODE_FLAG_FIXED_INSTANCE_SIZE, WNODE_FLAG_STATIC_INSTANCE_NAMES, WnodeHeader, WnodeMethodItem,
    WnodeSingleInstance,
};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

/// The offset or size `expr` has in the layout table.
fn at(expr: &str) -> usize {
    layout::HBA_LAYOUT
        .iter()
        .find(|(name, _)| *name == expr)
        .unwrap_or_else(|| panic!("{expr} not in the layout table"))
        .1
}

/// An expected buffer, written field by field.
struct Golden(Vec<u8>);

impl Golden {
    fn new(len: usize) -> Self {
        Self(vec![0; len])
    }
    fn u8(&mut self, offset: usize, value: u8) {
        self.0[offset] = value;
    }
    fn u32(&mut self, offset: usize, value: u32) {
        self.0[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }
    fn u64(&mut self, offset: usize, value: u64) {
        self.0[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }
    fn bytes(&mut self, offset: usize, value: &[u8]) {
        self.0[offset..offset + value.len()].copy_from_slice(value);
    }
    /// A `MaxLen(max)` WMI string in its fixed buffer: count = whole buffer, zero padded.
    fn string_max(&mut self, offset: usize, value: &str, max: usize) {
        self.0[offset..offset + 2].copy_from_slice(&((max * 2) as u16).to_le_bytes());
        for (i, unit) in value.encode_utf16().take(max).enumerate() {
            self.0[offset + 2 + 2 * i..offset + 4 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }
    /// `HBAScsiID.OSDeviceName`: a `uint16[257]`, element 0 the string's byte length.
    fn string_in_array(&mut self, offset: usize, value: &str) {
        let units: Vec<u16> = value.encode_utf16().collect();
        self.0[offset..offset + 2].copy_from_slice(&((units.len() * 2) as u16).to_le_bytes());
        for (i, unit) in units.iter().enumerate() {
            self.0[offset + 2 + 2 * i..offset + 4 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }
}

// LU 0 of target 0: an NAA 6 LU name and an NAA 5 target port name (PIV, SAS, association
// target port: byte 1 = 0x93, the value vioscsi compares whole bytes against).
const LU0_VPD83: [u8; 36] = [
    0x00, 0x83, 0x00, 0x20, //
    0x01, 0x03, 0x00, 0x10, 0x60, 0x01, 0x40, 0x5a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, //
    0x61, 0x93, 0x00, 0x08, 0x50, 0x01, 0x40, 0x5a, 0xaa, 0xbb, 0xcc, 0xdd,
];
const LU0_VPD80: [u8; 8] = [0x00, 0x80, 0x00, 0x04, b'S', b'N', b'4', b'2'];
const TARGET0_PORT: [u8; 8] = [0x50, 0x01, 0x40, 0x5a, 0xaa, 0xbb, 0xcc, 0xdd];
const READ_CAPACITY_10: [u8; 8] = [0x00, 0x0f, 0xff, 0xff, 0x00, 0x00, 0x02, 0x00];

fn inquiry_data() -> [u8; 36] {
    let mut data = [0x20u8; 36];
    data[..8].copy_from_slice(&[0x00, 0x00, 0x05, 0x02, 31, 0, 0, 0x02]);
    data[8..16].copy_from_slice(b"QEMU    ");
    data
}

fn read_capacity_16() -> [u8; 32] {
    let mut data = [0u8; 32];
    data[..8].copy_from_slice(&0x000f_ffffu64.to_be_bytes());
    data[8..12].copy_from_slice(&512u32.to_be_bytes());
    data[13] = 0x03; // 8 logical blocks per physical block
    data
}

struct Fixture {
    inquiry: [u8; 36],
    rc16: [u8; 32],
    queues: [QueueStatistics; 3],
}

impl Fixture {
    fn new() -> Self {
        let queue = |i: u32| QueueStatistics {
            queue_index: i,
            queue_size: 256,
            requests: 1000 + u64::from(i),
            kicks: 900,
            interrupts: 800,
            queue_full: u64::from(i),
            resets: 0,
        };
        Self {
            inquiry: inquiry_data(),
            rc16: read_capacity_16(),
            queues: [queue(0), queue(1), queue(2)],
        }
    }
}

const SEED: u64 = unique_adapter_id(PciLocation {
    segment: 0,
    bus: 0,
    device: 5,
    function: 0,
});

fn lun_stats(base: i64) -> ProtocolStatistics {
    ProtocolStatistics {
        seconds_since_last_reset: base,
        input_requests: base + 1,
        output_requests: base + 2,
        control_requests: base + 3,
        input_megabytes: base + 4,
        output_megabytes: base + 5,
    }
}

/// Runs `test` with an adapter: target 0 (LUNs 0 and 300, VPD-derived address), target 1
/// (LUN 0, synthesised address), three queues.
fn with_info(test: impl FnOnce(&HbaInfo<'_>)) {
    let fixture = Fixture::new();
    let target0_luns = [
        LunInfo {
            lun: 0,
            os_device_name: "\\\\.\\PhysicalDrive1",
            statistics: lun_stats(10),
            inquiry: Some(&fixture.inquiry),
            unit_serial_number: Some(&LU0_VPD80),
            device_identification: Some(&LU0_VPD83),
            read_capacity_10: Some(&READ_CAPACITY_10),
            read_capacity_16: Some(&fixture.rc16),
        },
        LunInfo {
            lun: 300,
            statistics: lun_stats(20),
            ..LunInfo::default()
        },
    ];
    let target1_luns = [LunInfo {
        lun: 0,
        os_device_name: "Disk2",
        ..LunInfo::default()
    }];
    let targets = [
        TargetInfo {
            sas_address: SasAddress::for_target(Some(&LU0_VPD83), SEED, 0),
            bus: 0,
            target: 0,
            luns: &target0_luns,
        },
        TargetInfo {
            sas_address: SasAddress::for_target(None, SEED, 1),
            bus: 0,
            target: 1,
            luns: &target1_luns,
        },
    ];
    let info = HbaInfo {
        unique_adapter_id: SEED,
        vendor_specific_id: 0x1048_1af4,
        manufacturer: "rvscsi project",
        serial_number: &"S".repeat(70),
        model: "rvscsi",
        model_description: "virtio-scsi StorPort miniport",
        hardware_version: "1",
        driver_version: "0.1.0",
        option_rom_version: "",
        firmware_version: "QEMU 9.2",
        driver_name: "rvscsi.sys",
        hba_symbolic_name: "rvscsi virtio-scsi HBA",
        redundant_option_rom_version: "",
        redundant_firmware_version: "",
        mfg_domain: "example.invalid",
        port: PortInfo {
            os_device_name: "\\\\.\\Scsi2:",
            state: PortState::Online,
            local_sas_address: SasAddress::for_adapter(SEED),
            attached_sas_address: SasAddress::synthesize(SEED, 0xFFFF),
            phy: PhyInfo {
                negotiated_link_rate: sas_speed::GBIT_12,
                programmed_min_link_rate: sas_speed::GBIT_1_5,
                hardware_min_link_rate: sas_speed::GBIT_1_5,
                programmed_max_link_rate: sas_speed::GBIT_12,
                hardware_max_link_rate: sas_speed::GBIT_12,
            },
            protocol_statistics: lun_stats(100),
            phy_statistics: PhyStatistics {
                seconds_since_last_reset: 60,
                tx_frames: 1,
                tx_words: 2,
                rx_frames: 3,
                rx_words: 4,
                invalid_dword_count: 5,
                running_disparity_error_count: 6,
                loss_of_dword_sync_count: 7,
                phy_reset_problem_count: 8,
            },
        },
        targets: &targets,
        queues: &fixture.queues,
        limits: AdapterLimits {
            request_queues: 3,
            queue_size: 256,
            ..AdapterLimits::default()
        },
    };
    test(&info);
}

fn header(guid: Guid, buffer_size: u32, flags: u32) -> WnodeHeader {
    WnodeHeader {
        buffer_size: U32::new(buffer_size),
        provider_id: U32::new(0),
        historical_context: U64::new(0),
        timestamp: U64::new(0),
        guid,
        client_context: U32::new(0),
        flags: U32::new(flags),
    }
}

/// Queries one instance with the data at offset 64; the reply and the data bytes.
fn query_instance(info: &HbaInfo<'_>, guid: Guid, instance: u32, room: usize) -> (Reply, Vec<u8>) {
    let mut buffer = vec![0xCC; 64 + room];
    WnodeSingleInstance {
        header: header(guid, 64, WNODE_FLAG_STATIC_INSTANCE_NAMES),
        offset_instance_name: U32::new(0),
        instance_index: U32::new(instance),
        data_block_offset: U32::new(64),
        size_data_block: U32::new(0),
    }
    .write_to_prefix(&mut buffer)
    .unwrap();
    let reply = dispatch(1, &mut buffer, &mut HbaProvider::new(info));
    let size = u32::from_le_bytes(buffer[60..64].try_into().unwrap()) as usize;
    let data = if reply.bytes_returned > 56 {
        buffer[64..64 + size].to_vec()
    } else {
        buffer
    };
    (reply, data)
}

/// `info`'s targets as a flat list of logical units, each tagged with its target's index: a
/// [`TargetSource`] that is not a slice, reading each target and logical unit by index as the
/// miniport's copies do.
struct FlatTargets<'a> {
    ports: Vec<TargetPort>,
    luns: Vec<(usize, LunInfo<'a>)>,
}

impl<'a> FlatTargets<'a> {
    fn of(targets: &[TargetInfo<'a>]) -> Self {
        Self {
            ports: targets.iter().map(TargetInfo::port).collect(),
            luns: targets
                .iter()
                .enumerate()
                .flat_map(|(index, target)| target.luns.iter().map(move |lun| (index, *lun)))
                .collect(),
        }
    }

    fn of_target(&self, target: usize) -> impl Iterator<Item = LunInfo<'a>> + '_ {
        self.luns
            .iter()
            .filter(move |(owner, _)| *owner == target)
            .map(|(_, lun)| *lun)
    }
}

impl TargetSource for FlatTargets<'_> {
    fn target_count(&self) -> usize {
        self.ports.len()
    }

    fn target(&self, index: usize) -> Option<TargetPort> {
        self.ports.get(index).copied()
    }

    fn lun_count(&self, target: usize) -> usize {
        self.of_target(target).count()
    }

    fn lun(&self, target: usize, index: usize) -> Option<LunInfo<'_>> {
        self.of_target(target).nth(index)
    }
}

/// Executes a method with `input`, room for 8 KiB of output; the reply and the output bytes.
/// The provider reading the targets from a [`FlatTargets`] (and none from `info`) must answer
/// byte for byte the same.
fn call(info: &HbaInfo<'_>, guid: Guid, method: u32, input: &[u8]) -> (Reply, Vec<u8>) {
    let mut buffer = vec![0xCC; 72 + 8192];
    WnodeMethodItem {
        header: header(
            guid,
            (72 + input.len()) as u32,
            WNODE_FLAG_STATIC_INSTANCE_NAMES,
        ),
        offset_instance_name: U32::new(0),
        instance_index: U32::new(0),
        method_id: U32::new(method),
        data_block_offset: U32::new(72),
        size_data_block: U32::new(input.len() as u32),
    }
    .write_to_prefix(&mut buffer)
    .unwrap();
    buffer[72..72 + input.len()].copy_from_slice(input);
    let mut through_source = buffer.clone();
    let reply = dispatch(9, &mut buffer, &mut HbaProvider::new(info));
    let flat = FlatTargets::of(info.targets);
    let without_targets = HbaInfo {
        targets: &[],
        ..*info
    };
    let source_reply = dispatch(
        9,
        &mut through_source,
        &mut HbaProvider::with_targets(&without_targets, &flat),
    );
    assert_eq!(source_reply, reply, "method {method}");
    assert!(
        through_source == buffer,
        "method {method}: the source answered differently"
    );
    let size = u32::from_le_bytes(buffer[64..68].try_into().unwrap()) as usize;
    (reply, buffer[72..72 + size].to_vec())
}

/// A successful method call's output; it must also be what the reply reports.
fn output(info: &HbaInfo<'_>, guid: Guid, method: u32, input: &[u8]) -> Vec<u8> {
    let (reply, data) = call(info, guid, method, input);
    assert_eq!(reply.status, WmiStatus::Success, "{reply:?}");
    assert_eq!(reply.error, None);
    assert_eq!(reply.bytes_returned as usize, 72 + data.len());
    data
}

fn port_method(info: &HbaInfo<'_>, method: u32, input: &[u8]) -> Vec<u8> {
    output(info, MS_SM_PORT_INFORMATION_METHODS_GUID, method, input)
}

fn words(values: &[u32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

#[test]
fn adapter_information_query_golden() {
    with_info(|info| {
        let (reply, data) = query_instance(info, MS_SM_ADAPTER_INFORMATION_QUERY_GUID, 0, 6000);
        assert_eq!(reply.status, WmiStatus::Success);
        let size = at("offsetof(MS_SM_AdapterInformationQuery, MfgDomain)") + 2 + 512;
        assert_eq!(size, 5934);
        assert_eq!(reply.bytes_returned as usize, 64 + size);
        let field = |name: &str| at(&format!("offsetof(MS_SM_AdapterInformationQuery, {name})"));
        let mut expected = Golden::new(size);
        expected.u64(0, SEED);
        expected.u32(field("HBAStatus"), 0);
        expected.u32(field("NumberOfPorts"), 1);
        expected.u32(field("VendorSpecificID"), 0x1048_1af4);
        expected.string_max(field("Manufacturer"), "rvscsi project", 64);
        // 70 characters do not fit MaxLen(64): cut to 64.
        expected.string_max(field("SerialNumber"), &"S".repeat(64), 64);
        for (name, value) in [
            ("Model", "rvscsi"),
            ("ModelDescription", "virtio-scsi StorPort miniport"),
            ("HardwareVersion", "1"),
            ("DriverVersion", "0.1.0"),
            ("OptionROMVersion", ""),
            ("FirmwareVersion", "QEMU 9.2"),
            ("DriverName", "rvscsi.sys"),
            ("HBASymbolicName", "rvscsi virtio-scsi HBA"),
            ("RedundantOptionROMVersion", ""),
            ("RedundantFirmwareVersion", ""),
            ("MfgDomain", "example.invalid"),
        ] {
            expected.string_max(field(name), value, 256);
        }
        assert_eq!(data, expected.0);

        // One byte short: WNODE_TOO_SMALL with the size needed.
        let (reply, buffer) = query_instance(info, MS_SM_ADAPTER_INFORMATION_QUERY_GUID, 0, 5933);
        assert_eq!(
            reply.error,
            Some(WmiError::BufferTooSmall { needed: 64 + 5934 })
        );
        assert_eq!(u32::from_le_bytes(buffer[48..52].try_into().unwrap()), 5998);
        // Only one instance.
        let (reply, _) = query_instance(info, MS_SM_ADAPTER_INFORMATION_QUERY_GUID, 1, 6000);
        assert_eq!(reply.status, WmiStatus::InstanceNotFound);
    });
}

#[test]
fn unique_adapter_id_differs_between_adapters() {
    let ids: Vec<u64> = (0..4u8)
        .map(|device| {
            unique_adapter_id(PciLocation {
                segment: 0,
                bus: 0,
                device,
                function: 0,
            })
        })
        .collect();
    for (i, a) in ids.iter().enumerate() {
        assert!(ids[i + 1..].iter().all(|b| a != b));
    }
    with_info(|info| {
        let mut other = *info;
        other.unique_adapter_id = ids[1];
        let (_, first) = query_instance(info, MS_SM_ADAPTER_INFORMATION_QUERY_GUID, 0, 6000);
        let (_, second) = query_instance(&other, MS_SM_ADAPTER_INFORMATION_QUERY_GUID, 0, 6000);
        assert_eq!(&first[..8], &SEED.to_le_bytes());
        assert_eq!(&second[..8], &ids[1].to_le_bytes());
    });
}

#[test]
fn reginfo_registers_six_blocks_and_the_mof_resource() {
    with_info(|info| {
        let mut buffer = vec![0u8; 512];
        let reply = dispatch(8, &mut buffer, &mut HbaProvider::new(info));
        // 24 + 6 * 32 = 216, then MofResourceName as a counted string: the image carries the
        // binary MOF of wmi/mof/rvscsi.mof under that name (the PE check requires it).
        let name: Vec<u8> = "MofResource"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(reply.bytes_returned as usize, 216 + 2 + name.len());
        assert_eq!(&buffer[12..20], &[216, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(&buffer[216..218], &[22, 0]);
        assert_eq!(&buffer[218..240], &name[..]);
        assert_eq!(
            &buffer[24..40],
            &[
                0xfa, 0x7e, 0xc6, 0xbd, 0xe7, 0xe5, 0x77, 0x47, 0xb1, 0x3c, 0x62, 0x14, 0x59, 0x65,
                0x70, 0x99
            ]
        );
        let guids = [
            MS_SM_ADAPTER_INFORMATION_QUERY_GUID,
            MS_SM_PORT_INFORMATION_METHODS_GUID,
            MS_SM_TARGET_INFORMATION_METHODS_GUID,
            MS_SM_SCSI_INFORMATION_METHODS_GUID,
            RVSCSI_QUEUE_STATISTICS_GUID,
            RVSCSI_ADAPTER_LIMITS_GUID,
        ];
        let counts = [1u32, 1, 1, 1, 3, 1];
        for (i, (guid, count)) in guids.iter().zip(counts).enumerate() {
            assert_eq!(&buffer[24 + 32 * i..40 + 32 * i], guid.as_bytes());
            assert_eq!(&buffer[44 + 32 * i..48 + 32 * i], &count.to_le_bytes());
        }
    });
}

#[test]
fn get_port_type() {
    with_info(|info| {
        assert_eq!(port_method(info, 1, &words(&[0])), words(&[0, 30]));
        assert_eq!(port_method(info, 1, &words(&[1])), words(&[6, 0]));
        let (reply, _) = call(info, MS_SM_PORT_INFORMATION_METHODS_GUID, 1, &[]);
        assert_eq!(
            reply.error,
            Some(WmiError::MethodInputTooShort {
                method_id: 1,
                needed: 4,
                available: 0
            })
        );
        assert_eq!(reply.status, WmiStatus::InvalidParameter);
    });
}

/// `HBA_PORTTYPE_SASEXPANDER`, `HBA_SASPORTPROTOCOL_SMP` (hbaapi.h).
const SAS_EXPANDER: (u32, u32) = (32, 4);

/// Expected `HBAStatus` + `MS_SMHBA_PORTATTRIBUTES` (+ `MS_SMHBA_SAS_Port`) of a SAS device
/// port (`HBA_PORTTYPE_SASDEVICE`, `HBA_SASPORTPROTOCOL_SSP`).
fn port_attributes_golden(
    status: u32,
    port: Option<(u32, &str)>,
    sas: Option<([u8; 8], [u8; 8], u32, u32)>,
) -> Vec<u8> {
    typed_port_attributes_golden(status, port, sas, (30, 1))
}

/// As [`port_attributes_golden`] for a port of `(PortType, PortProtocol)`.
fn typed_port_attributes_golden(
    status: u32,
    port: Option<(u32, &str)>,
    sas: Option<([u8; 8], [u8; 8], u32, u32)>,
    (port_type, protocol): (u32, u32),
) -> Vec<u8> {
    let base = at("offsetof(SM_GetAdapterPortAttributes_OUT, PortAttributes)");
    let specific = base + at("offsetof(MS_SMHBA_PORTATTRIBUTES, PortSpecificAttributes)");
    let mut g = Golden::new(specific + if sas.is_some() { 28 } else { 0 });
    g.u32(0, status);
    if let Some((state, _)) = port {
        g.u32(base, port_type);
        g.u32(
            base + at("offsetof(MS_SMHBA_PORTATTRIBUTES, PortState)"),
            state,
        );
    }
    g.string_max(
        base + at("offsetof(MS_SMHBA_PORTATTRIBUTES, OSDeviceName)"),
        port.map_or("", |p| p.1),
        256,
    );
    g.u64(base + at("offsetof(MS_SMHBA_PORTATTRIBUTES, Reserved)"), 0);
    if let Some((local, attached, discovered, phys)) = sas {
        g.u32(
            base + at("offsetof(MS_SMHBA_PORTATTRIBUTES, PortSpecificAttributesSize)"),
            28,
        );
        g.u32(specific, protocol);
        g.bytes(
            specific + at("offsetof(MS_SMHBA_SAS_Port, LocalSASAddress)"),
            &local,
        );
        g.bytes(
            specific + at("offsetof(MS_SMHBA_SAS_Port, AttachedSASAddress)"),
            &attached,
        );
        g.u32(
            specific + at("offsetof(MS_SMHBA_SAS_Port, NumberofDiscoveredPorts)"),
            discovered,
        );
        g.u32(
            specific + at("offsetof(MS_SMHBA_SAS_Port, NumberofPhys)"),
            phys,
        );
    }
    g.0
}

#[test]
fn get_adapter_port_attributes() {
    with_info(|info| {
        let local = info.port.local_sas_address.0;
        // Two targets: the port attaches to the virtual expander, a third discovered port.
        let expander = info.port.attached_sas_address.0;
        let data = port_method(info, 2, &words(&[0, 28]));
        assert_eq!(data.len(), 572);
        assert_eq!(
            data,
            port_attributes_golden(0, Some((2, "\\\\.\\Scsi2:")), Some((local, expander, 3, 1)))
        );
        // No room for the SAS attributes: MORE_DATA and none included.
        let data = port_method(info, 2, &words(&[0, 27]));
        assert_eq!(
            data,
            port_attributes_golden(7, Some((2, "\\\\.\\Scsi2:")), None)
        );
        let data = port_method(info, 2, &words(&[1, 28]));
        assert_eq!(data, port_attributes_golden(6, None, None));
    });
}

#[test]
fn get_discovered_port_attributes_and_by_wwn() {
    with_info(|info| {
        let local = info.port.local_sas_address.0;
        let expander = info.port.attached_sas_address.0;
        // Two targets, each attached to the expander; the expander, after them, attached to
        // the adapter's port with a phy towards it and one per target.
        let target1 = info.targets[1].sas_address.0;
        let data = port_method(info, 3, &words(&[0, 1, 64]));
        assert_eq!(
            data,
            port_attributes_golden(0, Some((2, "")), Some((target1, expander, 0, 1)))
        );
        let expander_port = typed_port_attributes_golden(
            0,
            Some((2, "")),
            Some((expander, local, 0, 3)),
            SAS_EXPANDER,
        );
        assert_eq!(port_method(info, 3, &words(&[0, 2, 64])), expander_port);
        assert_eq!(
            port_method(info, 3, &words(&[0, 3, 64])),
            port_attributes_golden(6, None, None)
        );
        assert_eq!(
            port_method(info, 3, &words(&[1, 0, 64])),
            port_attributes_golden(6, None, None)
        );

        // By WWN: target 0's port address comes from its VPD 0x83 target-port NAA designator,
        // in wire order.
        let mut input = TARGET0_PORT.to_vec();
        input.extend_from_slice(&[0; 8]);
        input.extend_from_slice(&28u32.to_le_bytes());
        let data = port_method(info, 4, &input);
        assert_eq!(
            data,
            port_attributes_golden(0, Some((2, "")), Some((TARGET0_PORT, expander, 0, 1)))
        );
        input[..8].copy_from_slice(&local);
        let data = port_method(info, 4, &input);
        assert_eq!(
            data,
            port_attributes_golden(0, Some((2, "\\\\.\\Scsi2:")), Some((local, expander, 3, 1)))
        );
        // Every attached address is a port that can be looked up: the expander too.
        input[..8].copy_from_slice(&expander);
        assert_eq!(port_method(info, 4, &input), expander_port);
        input[..8].copy_from_slice(&[9; 8]);
        assert_eq!(
            port_method(info, 4, &input),
            port_attributes_golden(5, None, None)
        );
    });
}

#[test]
fn one_target_is_attached_directly_and_none_leaves_the_port_unattached() {
    with_info(|info| {
        let local = info.port.local_sas_address.0;
        let direct = HbaInfo {
            targets: &info.targets[..1],
            ..*info
        };
        // Port to port: the adapter's port attaches to the target's and the target's to it;
        // no expander.
        assert_eq!(
            port_method(&direct, 2, &words(&[0, 28])),
            port_attributes_golden(
                0,
                Some((2, "\\\\.\\Scsi2:")),
                Some((local, TARGET0_PORT, 1, 1))
            )
        );
        assert_eq!(
            port_method(&direct, 3, &words(&[0, 0, 64])),
            port_attributes_golden(0, Some((2, "")), Some((TARGET0_PORT, local, 0, 1)))
        );
        assert_eq!(
            port_method(&direct, 3, &words(&[0, 1, 64])),
            port_attributes_golden(6, None, None)
        );
        let empty = HbaInfo {
            targets: &[],
            ..*info
        };
        assert_eq!(
            port_method(&empty, 2, &words(&[0, 28])),
            port_attributes_golden(0, Some((2, "\\\\.\\Scsi2:")), Some((local, [0; 8], 0, 1)))
        );
        assert_eq!(
            port_method(&empty, 3, &words(&[0, 0, 64])),
            port_attributes_golden(6, None, None)
        );
    });
}

#[test]
fn get_protocol_statistics() {
    with_info(|info| {
        let base = at("offsetof(SM_GetProtocolStatistics_OUT, ProtocolStatistics)");
        let mut expected = Golden::new(at("sizeof(SM_GetProtocolStatistics_OUT)"));
        for i in 0..6 {
            expected.u64(base + 8 * i, 100 + i as u64);
        }
        assert_eq!(port_method(info, 5, &words(&[0, 1])), expected.0);
        let mut zeros = Golden::new(56);
        zeros.u32(0, 35);
        assert_eq!(
            port_method(info, 5, &words(&[0, 2])),
            zeros.0,
            "STP: invalid protocol"
        );
        zeros.u32(0, 6);
        assert_eq!(
            port_method(info, 5, &words(&[1, 1])),
            zeros.0,
            "bad port index"
        );
    });
}

#[test]
fn get_phy_statistics() {
    with_info(|info| {
        let counters = at("offsetof(SM_GetPhyStatistics_OUT, PhyCounter)");
        let mut expected = Golden::new(counters + 72);
        expected.u32(
            at("offsetof(SM_GetPhyStatistics_OUT, TotalNumOfPhyCounters)"),
            9,
        );
        expected.u32(
            at("offsetof(SM_GetPhyStatistics_OUT, OutNumOfPhyCounters)"),
            9,
        );
        for (i, value) in [60u64, 1, 2, 3, 4, 5, 6, 7, 8].into_iter().enumerate() {
            expected.u64(counters + 8 * i, value);
        }
        assert_eq!(port_method(info, 6, &words(&[0, 0, 9])), expected.0);
        // Room for 4: MORE_DATA, the first 4.
        let mut partial = Golden::new(counters + 32);
        partial.0.copy_from_slice(&expected.0[..counters + 32]);
        partial.u32(0, 7);
        partial.u32(8, 4);
        assert_eq!(port_method(info, 6, &words(&[0, 0, 4])), partial.0);
        assert_eq!(port_method(info, 6, &words(&[0, 1, 9])), words(&[6, 0, 0]));
    });
}

#[test]
fn get_sas_and_fc_phy_attributes() {
    with_info(|info| {
        let phy = at("offsetof(SM_GetSASPhyAttributes_OUT, PhyType)");
        let mut expected = Golden::new(at("sizeof(SM_GetSASPhyAttributes_OUT)"));
        expected.u8(phy, 0);
        expected.u32(
            phy + at("offsetof(MS_SMHBA_SAS_PHY, NegotiatedLinkRate)"),
            0x0b,
        );
        expected.u32(
            phy + at("offsetof(MS_SMHBA_SAS_PHY, ProgrammedMinLinkRate)"),
            0x08,
        );
        expected.u32(
            phy + at("offsetof(MS_SMHBA_SAS_PHY, HardwareMinLinkRate)"),
            0x08,
        );
        expected.u32(
            phy + at("offsetof(MS_SMHBA_SAS_PHY, ProgrammedMaxLinkRate)"),
            0x0b,
        );
        expected.u32(
            phy + at("offsetof(MS_SMHBA_SAS_PHY, HardwareMaxLinkRate)"),
            0x0b,
        );
        expected.bytes(
            phy + at("offsetof(MS_SMHBA_SAS_PHY, domainPortWWN)"),
            &info.port.local_sas_address.0,
        );
        assert_eq!(port_method(info, 8, &words(&[0, 0])), expected.0);
        let mut bad = Golden::new(36);
        bad.u32(0, 6);
        assert_eq!(port_method(info, 8, &words(&[0, 1])), bad.0);
        // FC phy on a SAS port: not supported, a zeroed MS_SMHBA_FC_PHY.
        let mut fc = Golden::new(at("sizeof(SM_GetFCPhyAttributes_OUT)"));
        fc.u32(0, 2);
        assert_eq!(port_method(info, 7, &words(&[0, 0])), fc.0);
    });
}

#[test]
fn refresh_and_unknown_port_methods() {
    with_info(|info| {
        assert_eq!(port_method(info, 10, &[]), Vec::<u8>::new());
        for method in [0u32, 9, 11, 0xFFFF_FFFF] {
            let (reply, _) = call(info, MS_SM_PORT_INFORMATION_METHODS_GUID, method, &[0; 32]);
            assert_eq!(reply.error, Some(WmiError::MethodNotFound(method)));
            assert_eq!(reply.status, WmiStatus::ItemIdNotFound);
        }
        // The data-only classes have no methods.
        let (reply, _) = call(info, MS_SM_ADAPTER_INFORMATION_QUERY_GUID, 1, &[0; 4]);
        assert_eq!(reply.status, WmiStatus::ItemIdNotFound);
        // The method classes have empty instances.
        let (reply, data) = query_instance(info, MS_SM_PORT_INFORMATION_METHODS_GUID, 0, 16);
        assert_eq!(
            (reply.status, reply.bytes_returned, data.len()),
            (WmiStatus::Success, 64, 0)
        );
    });
}

/// `SM_GetTargetMapping_IN` for this adapter.
fn mapping_input(info: &HbaInfo<'_>, count: u32) -> Vec<u8> {
    let mut input = info.port.local_sas_address.0.to_vec();
    input.extend_from_slice(&[0; 8]);
    input.extend_from_slice(&count.to_le_bytes());
    input
}

#[test]
fn get_target_mapping_golden() {
    with_info(|info| {
        let data = output(
            info,
            MS_SM_TARGET_INFORMATION_METHODS_GUID,
            1,
            &mapping_input(info, 8),
        );
        let first = at("offsetof(SM_GetTargetMapping_OUT, Entry)");
        let entry = at("sizeof(MS_SMHBA_SCSIENTRY)");
        let mut expected = Golden::new(first + 3 * entry);
        expected.u32(at("offsetof(SM_GetTargetMapping_OUT, TotalEntryCount)"), 3);
        expected.u32(at("offsetof(SM_GetTargetMapping_OUT, OutEntryCount)"), 3);
        let local = info.port.local_sas_address.0;
        let entries = [
            (
                info.targets[0].sas_address.0,
                0u32,
                [0u8, 0],
                0u32,
                &LU0_VPD83[4..24],
                "\\\\.\\PhysicalDrive1",
            ),
            (
                info.targets[0].sas_address.0,
                0,
                [0x41, 0x2C],
                300,
                &[][..],
                "",
            ),
            (
                info.targets[1].sas_address.0,
                1,
                [0, 0],
                0,
                &[][..],
                "Disk2",
            ),
        ];
        for (i, (port, target, sam, lun, luid, name)) in entries.into_iter().enumerate() {
            let base = first + i * entry;
            expected.bytes(base, &port);
            expected.bytes(
                base + at("offsetof(MS_SMHBA_PORTLUN, domainPortWWN)"),
                &local,
            );
            expected.bytes(base + at("offsetof(MS_SMHBA_PORTLUN, TargetLun)"), &sam);
            expected.bytes(base + at("offsetof(MS_SMHBA_SCSIENTRY, LUID)"), luid);
            let id = base + at("offsetof(MS_SMHBA_SCSIENTRY, ScsiId)");
            expected.u32(id + at("offsetof(HBAScsiID, ScsiTargetNumber)"), target);
            expected.u32(id + at("offsetof(HBAScsiID, ScsiOSLun)"), lun);
            expected.string_in_array(id + at("offsetof(HBAScsiID, OSDeviceName)"), name);
        }
        assert_eq!(data, expected.0);

        // Room for one entry: MORE_DATA, the first entry.
        let data = output(
            info,
            MS_SM_TARGET_INFORMATION_METHODS_GUID,
            1,
            &mapping_input(info, 1),
        );
        let mut partial = expected.0[..first + entry].to_vec();
        partial[..4].copy_from_slice(&7u32.to_le_bytes());
        partial[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(data, partial);

        let mut wrong = mapping_input(info, 8);
        wrong[0] ^= 1;
        let data = output(info, MS_SM_TARGET_INFORMATION_METHODS_GUID, 1, &wrong);
        assert_eq!(data, words(&[5, 0, 0]));
    });
}

#[test]
fn persistent_binding_is_not_supported() {
    with_info(|info| {
        let guid = MS_SM_TARGET_INFORMATION_METHODS_GUID;
        let input = mapping_input(info, 0);
        assert_eq!(output(info, guid, 2, &input[..16]), words(&[2, 0]));
        assert_eq!(output(info, guid, 3, &input[..16]), words(&[2, 0]));
        assert_eq!(output(info, guid, 4, &input), words(&[2]));
        assert_eq!(output(info, guid, 5, &input), words(&[2, 0, 0]));
        assert_eq!(output(info, guid, 6, &input), words(&[2, 0]));
        assert_eq!(output(info, guid, 7, &input), words(&[2]));
        let (reply, _) = call(info, guid, 6, &input[..19]);
        assert_eq!(reply.status, WmiStatus::InvalidParameter);
        let (reply, _) = call(info, guid, 9, &input);
        assert_eq!(reply.status, WmiStatus::ItemIdNotFound);
    });
}

#[test]
fn get_lun_statistics() {
    with_info(|info| {
        let scsi_id = |bus: u32, target: u32, lun: u32| {
            let mut id = vec![0u8; at("sizeof(SM_GetLUNStatistics_IN)")];
            id[..12].copy_from_slice(&words(&[bus, target, lun]));
            id
        };
        let base = at("offsetof(SM_GetLUNStatistics_OUT, ProtocolStatistics)");
        let mut expected = Golden::new(at("sizeof(SM_GetLUNStatistics_OUT)"));
        for i in 0..6 {
            expected.u64(base + 8 * i, 20 + i as u64);
        }
        let guid = MS_SM_TARGET_INFORMATION_METHODS_GUID;
        assert_eq!(output(info, guid, 8, &scsi_id(0, 0, 300)), expected.0);
        let mut missing = Golden::new(56);
        missing.u32(0, 14);
        assert_eq!(output(info, guid, 8, &scsi_id(0, 1, 300)), missing.0);
        assert_eq!(output(info, guid, 8, &scsi_id(1, 0, 0)), missing.0);
        // The MOF's items end at 526: what a client going through WMI's COM layer sends,
        // without the C struct's 2 bytes of tail padding. The same answer as with 528.
        let items = at("offsetof(HBAScsiID, OSDeviceName)") + 2 * 257;
        assert_eq!(items, 526);
        assert_eq!(
            output(info, guid, 8, &scsi_id(0, 0, 300)[..items]),
            expected.0
        );
        assert_eq!(
            output(info, guid, 8, &scsi_id(0, 1, 300)[..=items]),
            missing.0
        );
        // One byte short of the items: refused.
        let (reply, _) = call(info, guid, 8, &scsi_id(0, 0, 0)[..items - 1]);
        assert_eq!(reply.status, WmiStatus::InvalidParameter);
    });
}

/// `SM_ScsiInquiry_IN` / `SM_ScsiReadCapacity_IN` (they share the prefix up to the CDB).
fn scsi_input(
    info: &HbaInfo<'_>,
    target: [u8; 8],
    lun: [u8; 8],
    cdb: &[u8],
    room: u32,
    size: usize,
) -> Vec<u8> {
    let mut input = vec![0u8; size];
    input[..8].copy_from_slice(&info.port.local_sas_address.0);
    input[8..16].copy_from_slice(&target);
    input[24..32].copy_from_slice(&lun);
    input[32..32 + cdb.len()].copy_from_slice(cdb);
    let room_at = if size == 48 {
        at("offsetof(SM_ScsiInquiry_IN, InRespBufferMaxSize)")
    } else {
        at("offsetof(SM_ScsiReadCapacity_IN, InRespBufferMaxSize)")
    };
    input[room_at..room_at + 4].copy_from_slice(&room.to_le_bytes());
    input
}

/// Expected `SM_ScsiInquiry_OUT` / `SM_ScsiReadCapacity_OUT`.
fn scsi_out(status: u32, response: &[u8]) -> Vec<u8> {
    let resp = at("offsetof(SM_ScsiInquiry_OUT, RespBuffer)");
    let mut g = Golden::new(resp + response.len());
    g.u32(0, status);
    g.u32(
        at("offsetof(SM_ScsiInquiry_OUT, OutRespBufferSize)"),
        response.len() as u32,
    );
    g.bytes(resp, response);
    g.0
}

#[test]
fn scsi_inquiry_from_cached_data() {
    with_info(|info| {
        let guid = MS_SM_SCSI_INFORMATION_METHODS_GUID;
        let lun0 = [0u8; 8];
        let inquiry = |cdb: &[u8], room: u32| scsi_input(info, TARGET0_PORT, lun0, cdb, room, 48);
        let standard = inquiry_data();
        assert_eq!(
            output(info, guid, 1, &inquiry(&[0x12, 0, 0, 0, 36, 0], 255)),
            scsi_out(0, &standard)
        );
        // Cut to ALLOCATION LENGTH, and to InRespBufferMaxSize.
        assert_eq!(
            output(info, guid, 1, &inquiry(&[0x12, 0, 0, 0, 5, 0], 255)),
            scsi_out(0, &standard[..5])
        );
        assert_eq!(
            output(info, guid, 1, &inquiry(&[0x12, 0, 0, 0, 36, 0], 3)),
            scsi_out(0, &standard[..3])
        );
        assert_eq!(
            output(info, guid, 1, &inquiry(&[0x12, 1, 0x83, 1, 0, 0], 255)),
            scsi_out(0, &LU0_VPD83)
        );
        assert_eq!(
            output(info, guid, 1, &inquiry(&[0x12, 1, 0x80, 1, 0, 0], 255)),
            scsi_out(0, &LU0_VPD80)
        );
        // Not cached: not supported (never made up).
        assert_eq!(
            output(info, guid, 1, &inquiry(&[0x12, 1, 0xB0, 1, 0, 0], 255)),
            scsi_out(2, &[])
        );
        // Not an INQUIRY CDB, or a page code without EVPD: bad argument.
        assert_eq!(
            output(info, guid, 1, &inquiry(&[0x28, 0, 0, 0, 36, 0], 255)),
            scsi_out(4, &[])
        );
        assert_eq!(
            output(info, guid, 1, &inquiry(&[0x12, 0, 0x83, 0, 36, 0], 255)),
            scsi_out(4, &[])
        );
        // LUN 300 (flat addressing) exists but has nothing cached; LUN 5 does not exist.
        let lun300 = scsi_input(
            info,
            TARGET0_PORT,
            [0x41, 0x2C, 0, 0, 0, 0, 0, 0],
            &[0x12, 0, 0, 0, 36, 0],
            255,
            48,
        );
        assert_eq!(output(info, guid, 1, &lun300), scsi_out(2, &[]));
        let lun5 = scsi_input(
            info,
            TARGET0_PORT,
            [0, 5, 0, 0, 0, 0, 0, 0],
            &[0x12, 0, 0, 0, 36, 0],
            255,
            48,
        );
        assert_eq!(output(info, guid, 1, &lun5), scsi_out(14, &[]));
        let two_level = scsi_input(
            info,
            TARGET0_PORT,
            [0, 0, 0, 1, 0, 0, 0, 0],
            &[0x12, 0, 0, 0, 36, 0],
            255,
            48,
        );
        assert_eq!(output(info, guid, 1, &two_level), scsi_out(14, &[]));
        let stranger = scsi_input(info, [7; 8], lun0, &[0x12, 0, 0, 0, 36, 0], 255, 48);
        assert_eq!(output(info, guid, 1, &stranger), scsi_out(5, &[]));
    });
}

#[test]
fn scsi_report_luns_golden() {
    with_info(|info| {
        let guid = MS_SM_SCSI_INFORMATION_METHODS_GUID;
        let report = |target: [u8; 8], allocation: u32, room: u32| {
            let mut input = vec![0u8; at("sizeof(SM_ScsiReportLuns_IN)")];
            input[..8].copy_from_slice(&info.port.local_sas_address.0);
            input[8..16].copy_from_slice(&target);
            let cdb = at("offsetof(SM_ScsiReportLuns_IN, Cdb)");
            input[cdb] = 0xA0;
            input[cdb + 6..cdb + 10].copy_from_slice(&allocation.to_be_bytes());
            let room_at = at("offsetof(SM_ScsiReportLuns_IN, InRespBufferMaxSize)");
            input[room_at..room_at + 4].copy_from_slice(&room.to_le_bytes());
            output(info, guid, 2, &input)
        };
        let luns = [
            0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x41, 0x2C, 0, 0, 0, 0, 0, 0,
        ];
        let expected = |status: u32, total: u32, response: &[u8]| {
            let resp = at("offsetof(SM_ScsiReportLuns_OUT, RespBuffer)");
            let mut g = Golden::new(resp + response.len());
            g.u32(0, status);
            g.u32(
                at("offsetof(SM_ScsiReportLuns_OUT, TotalRespBufferSize)"),
                total,
            );
            g.u32(
                at("offsetof(SM_ScsiReportLuns_OUT, OutRespBufferSize)"),
                response.len() as u32,
            );
            g.bytes(resp, response);
            g.0
        };
        assert_eq!(report(TARGET0_PORT, 4096, 4096), expected(0, 24, &luns));
        assert_eq!(report(TARGET0_PORT, 16, 4096), expected(0, 24, &luns[..16]));
        assert_eq!(report(TARGET0_PORT, 4096, 11), expected(0, 24, &luns[..11]));
        assert_eq!(report([3; 8], 4096, 4096), expected(5, 0, &[]));
    });
}

#[test]
fn scsi_read_capacity_from_cached_data() {
    with_info(|info| {
        let guid = MS_SM_SCSI_INFORMATION_METHODS_GUID;
        let size = at("sizeof(SM_ScsiReadCapacity_IN)");
        let read = |lun: [u8; 8], cdb: &[u8], room: u32| {
            output(
                info,
                guid,
                3,
                &scsi_input(info, TARGET0_PORT, lun, cdb, room, size),
            )
        };
        let rc16 = read_capacity_16();
        let mut cdb16 = [0u8; 16];
        cdb16[0] = 0x9E;
        cdb16[1] = 0x10;
        cdb16[10..14].copy_from_slice(&32u32.to_be_bytes());
        assert_eq!(read([0; 8], &[0x25], 255), scsi_out(0, &READ_CAPACITY_10));
        assert_eq!(read([0; 8], &cdb16, 255), scsi_out(0, &rc16));
        cdb16[10..14].copy_from_slice(&12u32.to_be_bytes());
        assert_eq!(read([0; 8], &cdb16, 255), scsi_out(0, &rc16[..12]));
        assert_eq!(
            read([0x41, 0x2C, 0, 0, 0, 0, 0, 0], &[0x25], 255),
            scsi_out(2, &[])
        );
        assert_eq!(read([0; 8], &[0x28], 255), scsi_out(4, &[]));
    });
}

#[test]
fn queue_statistics_all_data_golden() {
    with_info(|info| {
        let mut buffer = vec![0xCC; 256];
        header(RVSCSI_QUEUE_STATISTICS_GUID, 72, 0)
            .write_to_prefix(&mut buffer)
            .unwrap();
        let reply = dispatch(0, &mut buffer, &mut HbaProvider::new(info));
        // Three 48-byte instances, fixed size, from 64.
        assert_eq!(reply.bytes_returned, 64 + 3 * 48);
        let mut expected = Golden::new(64 + 3 * 48);
        expected.bytes(
            0,
            header(
                RVSCSI_QUEUE_STATISTICS_GUID,
                208,
                WNODE_FLAG_FIXED_INSTANCE_SIZE,
            )
            .as_bytes(),
        );
        expected.u32(48, 64);
        expected.u32(52, 3);
        expected.u32(60, 48);
        for i in 0..3usize {
            let base = 64 + 48 * i;
            expected.u32(base, i as u32);
            expected.u32(base + 4, 256);
            expected.u64(base + 8, 1000 + i as u64);
            expected.u64(base + 16, 900);
            expected.u64(base + 24, 800);
            expected.u64(base + 32, i as u64);
            expected.u64(base + 40, 0);
        }
        assert_eq!(&buffer[..208], &expected.0[..]);

        let (reply, data) = query_instance(info, RVSCSI_ADAPTER_LIMITS_GUID, 0, 64);
        assert_eq!(reply.bytes_returned, 64 + 51);
        assert_eq!(&data[..8], &words(&[3, 256]));
        let (reply, _) = query_instance(info, RVSCSI_QUEUE_STATISTICS_GUID, 3, 64);
        assert_eq!(reply.status, WmiStatus::InstanceNotFound);
    });
}

#[test]
fn every_class_is_read_only_and_collection_control_is_accepted() {
    with_info(|info| {
        let mut provider = HbaProvider::new(info);
        let mut buffer = vec![0u8; 128];
        WnodeSingleInstance {
            header: header(
                RVSCSI_QUEUE_STATISTICS_GUID,
                72,
                WNODE_FLAG_STATIC_INSTANCE_NAMES,
            ),
            offset_instance_name: U32::new(0),
            instance_index: U32::new(0),
            data_block_offset: U32::new(64),
            size_data_block: U32::new(8),
        }
        .write_to_prefix(&mut buffer)
        .unwrap();
        let reply = dispatch(2, &mut buffer, &mut provider);
        assert_eq!(reply.error, Some(WmiError::ReadOnly { guid_index: 4 }));
        assert_eq!(reply.status.ntstatus(), 0xC000_02C6);

        let mut item = vec![0u8; 128];
        let item_request = |id: u32, item: &mut Vec<u8>| {
            header(
                MS_SM_ADAPTER_INFORMATION_QUERY_GUID,
                76,
                WNODE_FLAG_STATIC_INSTANCE_NAMES,
            )
            .write_to_prefix(item.as_mut_slice())
            .unwrap();
            item[56..60].copy_from_slice(&id.to_le_bytes());
            item[60..64].copy_from_slice(&72u32.to_le_bytes());
            item[64..68].copy_from_slice(&4u32.to_le_bytes());
        };
        item_request(17, &mut item);
        assert_eq!(
            dispatch(3, &mut item, &mut provider).status,
            WmiStatus::ReadOnly
        );
        item_request(18, &mut item);
        assert_eq!(
            dispatch(3, &mut item, &mut provider).error,
            Some(WmiError::ItemIdNotFound(18))
        );

        let mut control = vec![0u8; 48];
        header(RVSCSI_QUEUE_STATISTICS_GUID, 48, 0)
            .write_to_prefix(&mut control)
            .unwrap();
        assert_eq!(
            dispatch(6, &mut control, &mut provider).status,
            WmiStatus::Success
        );
        assert_eq!(
            dispatch(7, &mut control, &mut provider).status,
            WmiStatus::Success
        );
        assert_eq!(
            dispatch(4, &mut control, &mut provider).status,
            WmiStatus::InvalidDeviceRequest
        );
    });
}
