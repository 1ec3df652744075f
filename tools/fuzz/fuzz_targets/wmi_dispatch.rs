//! Fuzzes the WMI dispatcher (`rvscsi_wmi::dispatch`) with any minor function and request
//! buffer against the real HBA provider: no panic, no byte written outside the buffer, never
//! more bytes returned than the buffer holds, the same answer twice.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rvscsi_wmi::dispatch::dispatch;
use rvscsi_wmi::guid::Guid;
use rvscsi_wmi::hba::rvscsi::{RVSCSI_ADAPTER_LIMITS_GUID, RVSCSI_QUEUE_STATISTICS_GUID};
use rvscsi_wmi::hba::sm::{
    MS_SM_ADAPTER_INFORMATION_QUERY_GUID, MS_SM_PORT_INFORMATION_METHODS_GUID,
    MS_SM_SCSI_INFORMATION_METHODS_GUID, MS_SM_TARGET_INFORMATION_METHODS_GUID, PortState,
};
use rvscsi_wmi::hba::{
    AdapterLimits, HbaInfo, HbaProvider, LunInfo, PhyInfo, PhyStatistics, PortInfo,
    ProtocolStatistics, QueueStatistics, TargetInfo,
};
use rvscsi_wmi::sas::SasAddress;
use zerocopy::IntoBytes;

/// The GUIDs the provider registers; a header usually names one of them.
const GUIDS: [Guid; 6] = [
    MS_SM_ADAPTER_INFORMATION_QUERY_GUID,
    MS_SM_PORT_INFORMATION_METHODS_GUID,
    MS_SM_TARGET_INFORMATION_METHODS_GUID,
    MS_SM_SCSI_INFORMATION_METHODS_GUID,
    RVSCSI_QUEUE_STATISTICS_GUID,
    RVSCSI_ADAPTER_LIMITS_GUID,
];

/// A VPD page 0x83 with one NAA-5 designator, so the SAS addresses come from a real page.
const VPD83: [u8; 16] = [
    0x00, 0x83, 0x00, 0x0c, 0x61, 0x93, 0x00, 0x08, 0x50, 0x01, 0x40, 0x5a, 0x11, 0x22, 0x33, 0x44,
];

/// Bytes on each side of the request buffer that must stay untouched.
const CANARY: usize = 64;

#[derive(Arbitrary, Debug)]
struct Input {
    minor: u8,
    /// Overlay a WNODE header (GUID, declared size, flags) on the payload when set.
    header: Option<Header>,
    /// Zero bytes appended after the payload, so replies that need large buffers are reached.
    padding: u16,
    payload: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Header {
    guid: u8,
    declared_is_length: bool,
    declared: u32,
    flags: u32,
    /// The fields after the 48-byte header (instance index, item or method id, data offset,
    /// sizes).
    fields: [u32; 6],
}

fn request(input: &Input) -> Vec<u8> {
    let mut buffer = input.payload.clone();
    buffer.resize(buffer.len() + usize::from(input.padding), 0);
    if let Some(header) = &input.header {
        let len = buffer.len();
        let guid = GUIDS
            .get(usize::from(header.guid))
            .copied()
            .unwrap_or_else(|| Guid::from_fields(u32::from(header.guid), 0, 0, [0; 8]));
        let declared = if header.declared_is_length {
            len as u32
        } else {
            header.declared
        };
        let mut overlay = Vec::with_capacity(72);
        overlay.extend_from_slice(&declared.to_le_bytes());
        overlay.extend_from_slice(&[0; 20]);
        overlay.extend_from_slice(guid.as_bytes());
        overlay.extend_from_slice(&[0; 4]);
        overlay.extend_from_slice(&header.flags.to_le_bytes());
        for field in header.fields {
            overlay.extend_from_slice(&field.to_le_bytes());
        }
        let n = overlay.len().min(len);
        buffer[..n].copy_from_slice(&overlay[..n]);
    }
    buffer
}

fn check(
    provider: &mut HbaProvider<'_>,
    minor: u8,
    request: &[u8],
) -> (rvscsi_wmi::dispatch::Reply, Vec<u8>) {
    let mut backing = vec![0xa5u8; request.len() + 2 * CANARY];
    backing[CANARY..CANARY + request.len()].copy_from_slice(request);
    let reply = dispatch(
        minor,
        &mut backing[CANARY..CANARY + request.len()],
        provider,
    );
    assert!(
        backing[..CANARY].iter().all(|b| *b == 0xa5),
        "wrote before the buffer"
    );
    assert!(
        backing[CANARY + request.len()..].iter().all(|b| *b == 0xa5),
        "wrote after the buffer"
    );
    assert!(
        reply.bytes_returned as usize <= request.len(),
        "{reply:?} for a buffer of {}",
        request.len()
    );
    (reply, backing[CANARY..CANARY + request.len()].to_vec())
}

fuzz_target!(|input: Input| {
    let inquiry = [0u8; 36];
    let luns = [
        LunInfo {
            lun: 0,
            os_device_name: "\\\\.\\PhysicalDrive1",
            inquiry: Some(&inquiry),
            device_identification: Some(&VPD83),
            read_capacity_10: Some(&[0, 0, 0xff, 0xff, 0, 0, 2, 0]),
            ..LunInfo::default()
        },
        LunInfo {
            lun: 300,
            ..LunInfo::default()
        },
    ];
    let targets = [
        TargetInfo {
            sas_address: SasAddress::for_target(Some(&VPD83), 7, 0),
            bus: 0,
            target: 0,
            luns: &luns,
        },
        TargetInfo {
            sas_address: SasAddress::for_target(None, 7, 1),
            bus: 0,
            target: 1,
            luns: &[],
        },
    ];
    let queues = [
        QueueStatistics::default(),
        QueueStatistics {
            queue_index: 2,
            ..Default::default()
        },
    ];
    let info = HbaInfo {
        unique_adapter_id: 7,
        vendor_specific_id: 0x1048_1af4,
        manufacturer: "Red Hat, Inc.",
        serial_number: "0000",
        model: "virtio-scsi",
        model_description: "virtio SCSI host",
        hardware_version: "1",
        driver_version: "0.1.0",
        option_rom_version: "",
        firmware_version: "",
        driver_name: "rvscsi.sys",
        hba_symbolic_name: "rvscsi",
        redundant_option_rom_version: "",
        redundant_firmware_version: "",
        mfg_domain: "com.redhat",
        port: PortInfo {
            os_device_name: "\\\\.\\Scsi2:",
            state: PortState::Online,
            local_sas_address: SasAddress::for_adapter(7),
            attached_sas_address: SasAddress::synthesize(7, 99),
            phy: PhyInfo::default(),
            protocol_statistics: ProtocolStatistics::default(),
            phy_statistics: PhyStatistics::default(),
        },
        targets: &targets,
        queues: &queues,
        limits: AdapterLimits::default(),
    };
    let mut provider = HbaProvider::new(&info);
    let buffer = request(&input);
    let first = check(&mut provider, input.minor, &buffer);
    let second = check(&mut provider, input.minor, &buffer);
    assert_eq!(first, second, "same request, same reply");
});
