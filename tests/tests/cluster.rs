//! Failover Cluster readiness: what "Validate Configuration" does to storage, replayed on two
//! simulated nodes (two adapters, each running the real miniport on its own virtio-scsi device)
//! that share logical units, with the statuses each node sees asserted.
//!
//! Node A's StorPort sends STORAGE_REQUEST_BLOCKs and node B's SCSI_REQUEST_BLOCKs, so every
//! scenario covers both SRB shapes; the nodes' adapters sit at different PCI locations.
//!
//! | validation test | what each node sends through rvscsi | what rvscsi returns |
//! |---|---|---|
//! | List All Disks | bus scan (INQUIRY, REPORT LUNS, READ CAPACITY), INQUIRY VPD 0x00/0x80/0x83 per LUN; adapter BusType from the INF | every LUN on both nodes, same capacity; the device's VPD pages byte for byte; BusType 0xA (SAS) |
//! | List Potential Cluster Disks | the above, matched across nodes by VPD 0x83; `IOCTL_SCSI_MINIPORT` "CLUSDISK" NOT_QUORUM_CAPABLE and NOT_CLUSTER_CAPABLE | shared LUNs with a device designator match across nodes; a shared LUN without one gets a per-adapter NAA-3 designator, so it does *not* match (give shared disks a wwn); NOT_QUORUM_CAPABLE: `SRB_STATUS_ERROR`, NOT_CLUSTER_CAPABLE: `SRB_STATUS_INVALID_REQUEST`, both with `ReturnCode` STATUS_NOT_SUPPORTED and DataTransferLength 28 (a failed probe means "capable") |
//! | (malformed probes) | `SRB_IO_CONTROL` with DataTransferLength < 28, HeaderLength ≠ 28, Length past the buffer or overflowing, foreign signature, unknown CLUSDISK code | `SRB_STATUS_BAD_SRB_BLOCK_LENGTH` for the length faults, `SRB_STATUS_INVALID_REQUEST` for the rest; the buffer untouched (an unknown CLUSDISK code gets `ReturnCode` STATUS_INVALID_DEVICE_REQUEST); nothing written past DataTransferLength |
//! | Validate SCSI Device Vital Product Data | INQUIRY VPD 0x80 and 0x83 of every shared LUN from both nodes | the same serial and designator from both nodes for each LUN, different between LUNs |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rvscsi::storport::{
    IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE, IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE,
    SRB_STATUS_BAD_SRB_BLOCK_LENGTH, SRB_STATUS_DATA_OVERRUN, SRB_STATUS_ERROR,
    SRB_STATUS_INVALID_REQUEST, SRB_STATUS_SUCCESS, STATUS_INVALID_DEVICE_REQUEST,
    STATUS_NOT_SUPPORTED,
};
use rvscsi_tests::device::DeviceOptions;
use rvscsi_tests::device::target::{Lun, LunIdentity};
use rvscsi_tests::harness::{Machine, boot_nodes};
use rvscsi_tests::sim::{
    Completion, IoctlRequest, Request, SimOptions, WMI_GUARD_BYTE, WMI_GUARD_LEN,
};

const BLOCKS: u64 = 1 << 14; // 8 MiB per LUN
const BLOCK: usize = 512;
const CLUSDISK: [u8; 8] = *b"CLUSDISK";

/// The shared LUNs: (target, lun, serial, NAA id). The last has no device designator, as a
/// QEMU disk without `wwn=` has none.
const SHARED: [(u8, u16, &str, Option<u64>); 4] = [
    (0, 0, "CLU-0000", Some(0x0014_0500_0000_0A01)),
    (0, 1, "CLU-0001", Some(0x0014_0500_0000_0A02)),
    (1, 0, "CLU-0100", Some(0x0014_0500_0000_0A03)),
    (2, 0, "CLU-0200", None),
];

fn shared_luns() -> Vec<(u8, u16, Lun)> {
    SHARED
        .iter()
        .map(|&(target, lun, serial, naa_id)| {
            let unit = Lun::memory(BLOCKS, BLOCK as u32)
                .unwrap()
                .with_identity(LunIdentity {
                    serial: serial.into(),
                    naa_id,
                    ..LunIdentity::default()
                });
            (target, lun, unit)
        })
        .collect()
}

/// Node A (SRB_EX, PCI 0:3.0) and node B (classic SRBs, PCI 0:4.0), sharing `luns`.
fn two_nodes(luns: &[(u8, u16, Lun)]) -> (Machine, Machine) {
    let a = SimOptions {
        processors: 2,
        pci_location: (0, 3),
        ..SimOptions::default()
    };
    let b = SimOptions {
        processors: 2,
        force_scsi_request_block: true,
        pci_location: (0, 4),
        ..SimOptions::default()
    };
    let mut nodes = boot_nodes(&[a, b], DeviceOptions::default(), luns).unwrap();
    let node_b = nodes.pop().unwrap();
    let node_a = nodes.pop().unwrap();
    assert!(node_a.adapter.found_adapter().extended_srbs);
    assert!(!node_b.adapter.found_adapter().extended_srbs);
    (node_a, node_b)
}

fn moved_data(completion: &Completion) -> bool {
    matches!(
        completion.status(),
        SRB_STATUS_SUCCESS | SRB_STATUS_DATA_OVERRUN
    )
}

/// INQUIRY EVPD `page` of `target`/`lun` through `node`'s driver.
fn vpd(node: &Machine, target: u8, lun: u16, page: u8) -> Completion {
    let cdb = [0x12, 1, page, 0, 255, 0];
    let done = node
        .adapter
        .execute(0, &Request::new(target, lun as u8, &cdb).reading(255))
        .unwrap();
    assert!(
        moved_data(&done),
        "VPD {page:#x} of {target}:{lun}: {done:?}"
    );
    done
}

/// The page the device itself answers for `unit` (no driver in between).
fn device_page(unit: &Lun, page: u8) -> Vec<u8> {
    unit.execute(&[0x12, 1, page, 0, 255, 0], &[], &[]).data_in
}

/// The first designator of a VPD 0x83 page (its header and identifier), the identity
/// Windows and the cluster key a disk on.
fn designator(page: &[u8]) -> Vec<u8> {
    let length = usize::from(page[7]);
    page[4..8 + length].to_vec()
}

fn write10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut cdb = vec![0x2A, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut cdb = write10(lba, blocks);
    cdb[0] = 0x28;
    cdb
}

/// The `BusType` DWORD the INF template writes under the service's `Parameters` key.
fn inf_bus_type() -> u32 {
    let inf = include_str!("../../inf/rvscsi.inx");
    let values: Vec<u32> = inf
        .lines()
        .map(|line| line.split(';').next().unwrap_or_default())
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            match fields.as_slice() {
                ["HKR", "\"Parameters\"", "BusType", "0x00010001", value] => {
                    u32::from_str_radix(value.trim_start_matches("0x"), 16).ok()
                }
                _ => None,
            }
        })
        .collect();
    assert_eq!(values.len(), 1, "exactly one BusType line: {values:?}");
    values[0]
}

#[test]
fn list_all_disks_and_potential_cluster_disks_from_both_nodes() {
    // STORAGE_BUS_TYPE (ntddstor.h): the cluster lists disks on Fibre Channel (6), iSCSI (9)
    // and SAS (0xA) adapters as potential cluster disks, not parallel SCSI (1), ATA, SATA,
    // RAID or USB ones. StorPort reports the INF's BusType in STORAGE_ADAPTER_DESCRIPTOR.
    const BUS_TYPE_SAS: u32 = 0xA;
    assert_eq!(inf_bus_type(), BUS_TYPE_SAS);

    let luns = shared_luns();
    let (a, b) = two_nodes(&luns);
    // Node A also has a disk of its own (a boot disk), which node B cannot see.
    let local = Lun::memory(BLOCKS, BLOCK as u32)
        .unwrap()
        .with_identity(LunIdentity {
            serial: "LOCAL-A".into(),
            naa_id: Some(0x0014_0500_0000_0B01),
            ..LunIdentity::default()
        });
    a.device.add_lun(3, 0, local).unwrap();

    // List All Disks: each node's bus scan, then the identity of every disk.
    let mut listed = Vec::new();
    for (name, node) in [("A", &a), ("B", &b)] {
        let mut disks = node.adapter.scan_bus().unwrap();
        disks.sort_by_key(|disk| (disk.target, disk.lun));
        let mut found: Vec<(u8, u8, u64, u32)> = disks
            .iter()
            .map(|disk| (disk.target, disk.lun, disk.blocks, disk.block_size))
            .collect();
        let mut expected: Vec<(u8, u8, u64, u32)> = SHARED
            .iter()
            .map(|&(target, lun, _, _)| (target, lun as u8, BLOCKS, BLOCK as u32))
            .collect();
        if name == "A" {
            expected.push((3, 0, BLOCKS, BLOCK as u32));
        }
        found.sort_unstable();
        expected.sort_unstable();
        assert_eq!(found, expected, "node {name}");
        for disk in &disks {
            let page = vpd(node, disk.target, u16::from(disk.lun), 0x83);
            listed.push((name, disk.target, disk.lun, designator(&page.data)));
        }
    }

    // List Potential Cluster Disks: an identity both nodes list is a shared disk.
    let identity = |node: &str, target: u8, lun: u8| {
        listed
            .iter()
            .find(|(n, t, l, _)| *n == node && *t == target && *l == lun)
            .map(|(_, _, _, id)| id.clone())
    };
    for (target, lun, _, naa_id) in SHARED {
        let on_a = identity("A", target, lun as u8).unwrap();
        let on_b = identity("B", target, lun as u8).unwrap();
        if naa_id.is_some() {
            assert_eq!(on_a, on_b, "{target}:{lun}: one disk, one identity");
            assert_eq!(on_a[0] & 0x0F, 1, "binary code set");
            assert_eq!(on_a[1] & 0x0F, 3, "NAA designator");
            assert_eq!(on_a[4] >> 4, 6, "the device's NAA 6, not a synthesised one");
        } else {
            // The miniport's fallback (NAA 3, locally assigned) is built from the adapter's PCI
            // location, so two nodes whose adapters sit in different slots see two different
            // disks: the cluster would not offer this LUN. Shared disks need a device designator.
            assert_eq!(on_a[4] >> 4, 3);
            assert_eq!(on_b[4] >> 4, 3);
            assert_ne!(
                on_a, on_b,
                "{target}:{lun}: per-adapter synthesised identity"
            );
        }
    }
    let mut identities: Vec<&Vec<u8>> = listed
        .iter()
        .filter(|(node, ..)| *node == "A")
        .map(|(_, _, _, id)| id)
        .collect();
    let count = identities.len();
    identities.sort();
    identities.dedup();
    assert_eq!(
        identities.len(),
        count,
        "no two disks on a node share an identity"
    );
    let potential: Vec<(u8, u8)> = listed
        .iter()
        .filter(|(node, ..)| *node == "A")
        .filter(|(_, _, _, id)| {
            listed
                .iter()
                .any(|(n, _, _, other)| *n == "B" && other == id)
        })
        .map(|(_, target, lun, _)| (*target, *lun))
        .collect();
    assert_eq!(potential, vec![(0, 0), (0, 1), (1, 0)]);

    // The CLUSDISK probes each node's cluster disk driver sends its adapter.
    clusdisk_probes("A", &a);
    clusdisk_probes("B", &b);
    a.finish();
    b.finish();
}

/// Sends `node`'s adapter the two CLUSDISK probes and checks they fail the way that makes the
/// cluster call its disks capable.
fn clusdisk_probes(name: &str, node: &Machine) {
    for (code, status) in [
        (IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE, SRB_STATUS_ERROR),
        (
            IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE,
            SRB_STATUS_INVALID_REQUEST,
        ),
    ] {
        let request = IoctlRequest::new(CLUSDISK, code, 30, &[]);
        let done = node.adapter.ioctl(1, &request).unwrap();
        assert_eq!(done.srb_status, status, "node {name}, {code:#x}");
        assert_eq!(
            done.data_transfer_length, 28,
            "node {name}: the header returned"
        );
        let header = IoctlRequest::header(&done.data).unwrap();
        assert_eq!(header.return_code, STATUS_NOT_SUPPORTED.cast_unsigned());
        assert_eq!(
            (
                header.header_length,
                header.signature,
                header.control_code,
                header.length
            ),
            (28, CLUSDISK, code, 0)
        );
        assert_eq!(done.data[28..], [WMI_GUARD_BYTE; WMI_GUARD_LEN]);
    }
}

#[test]
fn malformed_and_foreign_miniport_ioctls_are_refused_by_both_nodes() {
    let luns = shared_luns();
    let (a, b) = two_nodes(&luns);
    let probe = || IoctlRequest::new(CLUSDISK, IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE, 30, &[]);
    let cases: Vec<(&str, IoctlRequest, u8)> = vec![
        (
            "DataTransferLength one byte short of the header",
            IoctlRequest {
                data_transfer_length: 27,
                ..probe()
            },
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
        ),
        (
            "no buffer length at all",
            IoctlRequest {
                data_transfer_length: 0,
                ..probe()
            },
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
        ),
        (
            "HeaderLength 0",
            probe().with_header(|h| h.header_length = 0),
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
        ),
        (
            "HeaderLength of a longer header",
            probe().with_header(|h| h.header_length = 32),
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
        ),
        (
            "Length claims a payload the buffer does not have",
            probe().with_header(|h| h.length = 16),
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
        ),
        (
            "Length overflows with the header",
            probe().with_header(|h| h.length = u32::MAX - 20),
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
        ),
        (
            "a payload cut short by DataTransferLength",
            IoctlRequest {
                data_transfer_length: 36,
                ..IoctlRequest::new(
                    CLUSDISK,
                    IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE,
                    30,
                    &[7; 16],
                )
            },
            SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
        ),
        (
            "another miniport's signature",
            IoctlRequest::new(
                *b"SCSIDISK",
                IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE,
                30,
                &[],
            ),
            SRB_STATUS_INVALID_REQUEST,
        ),
        (
            "the SMART signature",
            IoctlRequest::new(*b"SCSIDISK", 0x001B_0501, 30, &[0; 32]),
            SRB_STATUS_INVALID_REQUEST,
        ),
    ];
    for (name, node) in [("A", &a), ("B", &b)] {
        for (case, request, status) in &cases {
            let done = node.adapter.ioctl(0, request).unwrap();
            assert_eq!(done.srb_status, *status, "node {name}: {case}");
            assert_eq!(done.data_transfer_length, 0, "node {name}: {case}");
            let mut untouched = request.buffer.clone();
            untouched.extend_from_slice(&[WMI_GUARD_BYTE; WMI_GUARD_LEN]);
            assert_eq!(done.data, untouched, "node {name}: {case}: buffer written");
        }
        // A CLUSDISK code the miniport does not serve: refused, and ReturnCode says why.
        let request = IoctlRequest::new(
            CLUSDISK,
            IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE + 1,
            30,
            &[],
        );
        let done = node.adapter.ioctl(0, &request).unwrap();
        assert_eq!(done.srb_status, SRB_STATUS_INVALID_REQUEST, "node {name}");
        assert_eq!(done.data_transfer_length, 28);
        assert_eq!(
            IoctlRequest::header(&done.data).unwrap().return_code,
            STATUS_INVALID_DEVICE_REQUEST.cast_unsigned()
        );
        assert_eq!(done.data[28..], [WMI_GUARD_BYTE; WMI_GUARD_LEN]);
    }
    a.finish();
    b.finish();
}

#[test]
fn validate_scsi_device_vital_product_data_from_both_nodes() {
    let luns = shared_luns();
    let (a, b) = two_nodes(&luns);
    let mut serials = Vec::new();
    let mut designators = Vec::new();
    for (target, lun, unit) in luns.iter().filter(|(t, ..)| *t != 2) {
        let supported = vpd(&a, *target, *lun, 0x00);
        assert!(supported.data[4..].contains(&0x80) && supported.data[4..].contains(&0x83));
        let serial_a = vpd(&a, *target, *lun, 0x80);
        let serial_b = vpd(&b, *target, *lun, 0x80);
        let id_a = vpd(&a, *target, *lun, 0x83);
        let id_b = vpd(&b, *target, *lun, 0x83);
        // What both nodes see is what the device said, byte for byte.
        assert_eq!(serial_a.data, device_page(unit, 0x80), "{target}:{lun}");
        assert_eq!(serial_b.data, serial_a.data, "{target}:{lun}");
        assert_eq!(id_a.data, device_page(unit, 0x83), "{target}:{lun}");
        assert_eq!(id_b.data, id_a.data, "{target}:{lun}");
        serials.push(serial_a.data);
        designators.push(designator(&id_a.data));
    }
    for list in [&serials, &designators] {
        let mut unique = list.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), list.len(), "different LUNs, different pages");
    }
    a.finish();
    b.finish();
}

#[test]
fn two_nodes_run_io_concurrently_and_each_reads_what_the_other_wrote() {
    let luns = shared_luns();
    let (a, b) = two_nodes(&luns);
    let nodes = [Arc::new(a), Arc::new(b)];
    let failed = Arc::new(AtomicBool::new(false));
    // Every processor of both nodes writes its own stripe of every shared LUN at once.
    let mut workers = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        for processor in 0..2u32 {
            let node = Arc::clone(node);
            let failed = Arc::clone(&failed);
            workers.push(std::thread::spawn(move || {
                for round in 0..16u32 {
                    for &(target, lun, _, _) in &SHARED {
                        let stripe = (index as u32 * 2 + processor) * 64 + round * 4;
                        let data = pattern(index, processor, round, target, 4);
                        let done = node
                            .adapter
                            .execute(
                                processor,
                                &Request::new(target, lun as u8, &write10(stripe, 4))
                                    .writing(&data),
                            )
                            .unwrap();
                        if done.status() != SRB_STATUS_SUCCESS {
                            failed.store(true, Ordering::SeqCst);
                        }
                    }
                }
            }));
        }
    }
    for worker in workers {
        worker.join().unwrap();
    }
    assert!(!failed.load(Ordering::SeqCst));
    // Each node reads back the stripes the *other* node wrote.
    for (reader, writer) in [(0usize, 1usize), (1, 0)] {
        for processor in 0..2u32 {
            for round in 0..16u32 {
                for (target, lun, unit) in &luns {
                    let stripe = (writer as u32 * 2 + processor) * 64 + round * 4;
                    let done = nodes[reader]
                        .adapter
                        .execute(
                            0,
                            &Request::new(*target, *lun as u8, &read10(stripe, 4))
                                .reading(4 * BLOCK as u32),
                        )
                        .unwrap();
                    let expected = pattern(writer, processor, round, *target, 4);
                    assert_eq!(done.status(), SRB_STATUS_SUCCESS);
                    assert_eq!(
                        done.data, expected,
                        "node {reader} reading node {writer}'s stripe"
                    );
                    let mut medium = vec![0; expected.len()];
                    unit.read_at(u64::from(stripe) * BLOCK as u64, &mut medium)
                        .unwrap();
                    assert_eq!(medium, expected);
                }
            }
        }
    }
    for node in nodes {
        let Ok(node) = Arc::try_unwrap(node) else {
            panic!("a worker still holds a node");
        };
        node.finish();
    }
}

/// Distinct, recognisable block contents for one write.
fn pattern(node: usize, processor: u32, round: u32, target: u8, blocks: usize) -> Vec<u8> {
    (0..blocks * BLOCK)
        .map(|i| {
            (i as u8) ^ (node as u8 * 97) ^ (processor as u8 * 31) ^ (round as u8 * 7) ^ target
        })
        .collect()
}
