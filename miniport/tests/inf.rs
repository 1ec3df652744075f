//! Keeps the INF template's registry values equal to what the miniport honours.
//!
//! The INF sets values Windows and StorPort read (interrupt policy, bus type) and one the
//! miniport reads itself at find-adapter (`PhysicalBreaks`, which StorPort also applies). Two of
//! them must agree with constants of the miniport: the MSI-X message limit (one message for
//! configuration, control and event queue each, plus one per request queue) and the
//! `PhysicalBreaks` cap (the miniport's own scatter-gather ceiling).
//! And no `Parameters\Device` value may appear that nothing reads.

use rvscsi::sizing::MAX_DATA_SEGMENTS;
use rvscsi::sizing::MAX_REQUEST_QUEUES;

/// The template `cargo xtask package` stamps into rvscsi.inf.
const TEMPLATE: &str = include_str!("../../inf/rvscsi.inx");

/// The `AddReg` lines of `text` (comments dropped), split at the commas into trimmed fields.
fn registry_lines(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|line| line.split(';').next().unwrap_or_default().trim())
        .filter(|line| line.starts_with("HKR"))
        .map(|line| {
            line.split(',')
                .map(|field| field.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The DWORD the template writes to `value` under `key`; panics unless exactly one line does.
fn dword(text: &str, key: &str, value: &str) -> u32 {
    let quoted = format!("\"{key}\"");
    let lines: Vec<Vec<String>> = registry_lines(text)
        .into_iter()
        .filter(|fields| {
            fields.get(1) == Some(&quoted) && fields.get(2).map(String::as_str) == Some(value)
        })
        .collect();
    assert_eq!(lines.len(), 1, "{key} {value}: {lines:?}");
    let fields = &lines[0];
    assert_eq!(fields[3], "0x00010001", "{value} is not a REG_DWORD");
    let data = &fields[4];
    match data.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).unwrap(),
        None => data.parse().unwrap(),
    }
}

#[test]
fn message_number_limit_is_what_the_miniport_can_use() {
    let limit = dword(
        TEMPLATE,
        r"Interrupt Management\MessageSignaledInterruptProperties",
        "MessageNumberLimit",
    );
    // Message 0 (configuration changes), the control queue, the event queue, then one per
    // request queue: the messages are 0 up to the vector of the last request queue.
    let last_queue = virtio_core::scsi::queue_index::REQUEST_BASE + MAX_REQUEST_QUEUES - 1;
    let used = u32::from(rvscsi::adapter::Adapter::vector_of_queue(last_queue)) + 1;
    assert_eq!(used, u32::from(MAX_REQUEST_QUEUES) + 3);
    assert_eq!(limit, used);
}

#[test]
fn physical_breaks_cap_is_the_miniports_ceiling() {
    let breaks = dword(TEMPLATE, r"Parameters\Device", "PhysicalBreaks");
    assert_eq!(breaks, MAX_DATA_SEGMENTS - 1);
}

/// The value names the template writes under `Parameters\Device`.
fn device_values(text: &str) -> Vec<String> {
    registry_lines(text)
        .into_iter()
        .filter(|fields| fields.get(1).map(String::as_str) == Some(r#""Parameters\Device""#))
        .map(|fields| fields[2].clone())
        .collect()
}

#[test]
fn only_values_storport_reads_are_set_under_parameters_device() {
    assert_eq!(device_values(TEMPLATE), ["PhysicalBreaks"]);
}

#[test]
fn the_driver_says_it_is_compatible_with_dma_remapping() {
    // Both the per-device value (Windows 11 24H2 and later) and the per-driver one (earlier
    // versions) say 1, "fully compatible", which the IOMMU mode of the simulator checks
    // (`RVSCSI_IOMMU=1`, tests/tests/miniport.rs).
    assert_eq!(dword(TEMPLATE, "DMA Management", "RemappingSupported"), 1);
    assert_eq!(dword(TEMPLATE, "Parameters", "DmaRemappingCompatible"), 1);
}

#[test]
fn the_bus_type_is_sas() {
    // BusTypeSas (STORAGE_BUS_TYPE 0xA): Failover Clustering validates persistent
    // reservations on SAS.
    assert_eq!(dword(TEMPLATE, "Parameters", "BusType"), 0xA);
}

#[test]
fn the_helpers_see_a_changed_value() {
    // The checks above must fail when the template drifts: the same reading of an edited copy
    // sees the edit.
    let edited = TEMPLATE.replace(
        "MessageNumberLimit, 0x00010001, 67",
        "MessageNumberLimit, 0x00010001, 258",
    );
    assert_eq!(
        dword(
            &edited,
            r"Interrupt Management\MessageSignaledInterruptProperties",
            "MessageNumberLimit"
        ),
        258
    );
    let extra =
        format!("{TEMPLATE}\nHKR, \"Parameters\\Device\", NumberOfRequestQueues, 0x00010001, 0\n");
    assert_eq!(
        device_values(&extra),
        ["PhysicalBreaks", "NumberOfRequestQueues"]
    );
}
