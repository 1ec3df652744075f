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
//! | Validate SCSI-3 Persistent Reservation | per cluster disk: A: PR OUT REGISTER (KA), RESERVE (type 5, Write Exclusive - Registrants Only); PR IN READ KEYS / READ RESERVATION from both; B (unregistered): WRITE, RESERVE; B: REGISTER (KB), PREEMPT (KA); A: TEST UNIT READY, WRITE, REGISTER; B: RELEASE, CLEAR | PR OUT: `SRB_STATUS_SUCCESS`, GOOD; PR IN: the same data on both nodes; B's WRITE and RESERVE, A's WRITE after the preemption: `SRB_STATUS_ERROR`, SCSI status 0x18 RESERVATION CONFLICT, no sense, nothing written (checked on the medium); A: `SRB_STATUS_ERROR \| AUTOSENSE_VALID`, CHECK CONDITION, UNIT ATTENTION 2A/05 REGISTRATIONS PREEMPTED once, later 2A/04 RESERVATIONS RELEASED (B's RELEASE) and 2A/03 RESERVATIONS PREEMPTED (B's CLEAR) |
//! | Validate Disk Arbitration | 24 rounds on each cluster disk: both REGISTER, both RESERVE at the same instant from two threads; the winner PREEMPTs the loser's key; the loser: TEST UNIT READY, WRITE, RESERVE; the winner: WRITE, CLEAR | exactly one RESERVE GOOD and the other RESERVATION CONFLICT, every round; both read the winner's key; the loser: UNIT ATTENTION 2A/05, then RESERVATION CONFLICT for WRITE and RESERVE, the medium unchanged |
//! | Validate Disk Failover | A owns disk 0:0 (REGISTER, RESERVE) and writes continuously; B writes continuously to another region; mid-I/O B: REGISTER, PREEMPT (KA) | A's writes: GOOD until the preemption, then exactly one UNIT ATTENTION 2A/05, then RESERVATION CONFLICT; B's: RESERVATION CONFLICT until it registered, then GOOD; each region of the medium equals the shadow of the writes that returned GOOD; every SRB completed exactly once |
//! | Validate Simultaneous Failover | the same on all three cluster disks at once, REGISTER + PREEMPT on each from parallel threads, I/O on every disk from both nodes | the same, per disk |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use rvscsi::storport::{
    IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE, IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE,
    SRB_STATUS_BAD_SRB_BLOCK_LENGTH, SRB_STATUS_DATA_OVERRUN, SRB_STATUS_ERROR,
    SRB_STATUS_INVALID_REQUEST, SRB_STATUS_SUCCESS, STATUS_INVALID_DEVICE_REQUEST,
    STATUS_NOT_SUPPORTED,
};
use rvscsi_tests::device::reservations::PersistentReservation;
use rvscsi_tests::device::target::{Lun, LunIdentity};
use rvscsi_tests::device::{DeviceOptions, Nexus, ReservationType};
use rvscsi_tests::harness::{Machine, boot_nodes};
use rvscsi_tests::scenario::{read10, wait_until, write10};
use rvscsi_tests::sim::{
    Completion, IoctlRequest, Request, SimOptions, WMI_GUARD_BYTE, WMI_GUARD_LEN,
};

const BLOCKS: u64 = 1 << 14; // 8 MiB per LUN
const BLOCK: usize = 512;
const CLUSDISK: [u8; 8] = *b"CLUSDISK";
/// How long a scenario waits for I/O running on other threads to make progress.
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

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
    assert_eq!(
        (node_a.device.nexus(), node_b.device.nexus()),
        (Nexus::new(1), Nexus::new(2))
    );
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
    assert_eq!(
        (done.scsi_status, done.sense.len()),
        (0, 0),
        "GOOD, no sense"
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

// --- SCSI-3 persistent reservations (SPC-4 sections 5.14, 6.15, 6.16) ---

/// PERSISTENT RESERVE IN / OUT operation codes.
const PERSISTENT_RESERVE_IN: u8 = 0x5E;
const PERSISTENT_RESERVE_OUT: u8 = 0x5F;
/// PR IN service actions.
const READ_KEYS: u8 = 0x00;
const READ_RESERVATION: u8 = 0x01;
/// PR OUT service actions.
const REGISTER: u8 = 0x00;
const RESERVE: u8 = 0x01;
const RELEASE: u8 = 0x02;
const CLEAR: u8 = 0x03;
const PREEMPT: u8 = 0x04;
/// Write Exclusive - Registrants Only: the type the cluster reserves its disks with (the
/// owner and every node the cluster trusts are registrants and may write; a node whose
/// registration is removed may not).
const WRITE_EXCLUSIVE_REGISTRANTS_ONLY: u8 = 0x5;
/// SCSI status RESERVATION CONFLICT.
const RESERVATION_CONFLICT: u8 = 0x18;
/// UNIT ATTENTION additional sense codes of the reservation model (SPC-4 annex D).
const RESERVATIONS_PREEMPTED: (u8, u8) = (0x2A, 0x03);
const RESERVATIONS_RELEASED: (u8, u8) = (0x2A, 0x04);
const REGISTRATIONS_PREEMPTED: (u8, u8) = (0x2A, 0x05);

/// The nodes' reservation keys.
const KEY_A: u64 = 0x5256_5343_0000_000A;
const KEY_B: u64 = 0x5256_5343_0000_000B;

/// The shared LUNs with a device designator: the potential cluster disks.
fn cluster_disks() -> impl Iterator<Item = (u8, u16)> {
    SHARED
        .iter()
        .filter(|(.., naa_id)| naa_id.is_some())
        .map(|&(target, lun, ..)| (target, lun))
}

/// PERSISTENT RESERVE OUT `action` with the 24-byte basic parameter list.
fn pr_out(
    node: &Machine,
    processor: u32,
    (target, lun): (u8, u16),
    action: u8,
    key: u64,
    service_action_key: u64,
) -> Completion {
    let cdb = [
        PERSISTENT_RESERVE_OUT,
        action,
        WRITE_EXCLUSIVE_REGISTRANTS_ONLY, // SCOPE 0 (LU_SCOPE), TYPE
        0,
        0,
        0,
        0,
        0,
        24,
        0,
    ];
    let mut parameters = [0u8; 24];
    parameters[..8].copy_from_slice(&key.to_be_bytes());
    parameters[8..16].copy_from_slice(&service_action_key.to_be_bytes());
    node.adapter
        .execute(
            processor,
            &Request::new(target, lun as u8, &cdb).writing(&parameters),
        )
        .unwrap()
}

/// PERSISTENT RESERVE IN `action`: (PRgeneration, the parameter data after its header).
fn pr_in(node: &Machine, (target, lun): (u8, u16), action: u8) -> (u32, Vec<u8>) {
    let cdb = [PERSISTENT_RESERVE_IN, action, 0, 0, 0, 0, 0, 1, 0, 0];
    let done = node
        .adapter
        .execute(0, &Request::new(target, lun as u8, &cdb).reading(256))
        .unwrap();
    assert!(moved_data(&done), "PR IN {action}: {done:?}");
    assert_eq!(
        (done.scsi_status, done.sense.len()),
        (0, 0),
        "GOOD, no sense"
    );
    let generation = u32::from_be_bytes(done.data[..4].try_into().unwrap());
    let length = u32::from_be_bytes(done.data[4..8].try_into().unwrap()) as usize;
    (generation, done.data[8..8 + length].to_vec())
}

/// READ KEYS: the registered keys, as `node` sees them.
fn read_keys(node: &Machine, disk: (u8, u16)) -> Vec<u64> {
    pr_in(node, disk, READ_KEYS)
        .1
        .chunks_exact(8)
        .map(|key| u64::from_be_bytes(key.try_into().unwrap()))
        .collect()
}

/// READ RESERVATION: the holder's key and the type, if reserved.
fn read_reservation(node: &Machine, disk: (u8, u16)) -> Option<(u64, u8)> {
    let (_, body) = pr_in(node, disk, READ_RESERVATION);
    (body.len() >= 16).then(|| {
        (
            u64::from_be_bytes(body[..8].try_into().unwrap()),
            body[13] & 0x0F,
        )
    })
}

/// The persistent reservation `node` holds, as the device records it.
fn held_by(node: &Machine) -> PersistentReservation {
    PersistentReservation {
        kind: ReservationType::WriteExclusiveRegistrantsOnly,
        holder: Some(node.device.nexus()),
    }
}

/// How one command came back, as the class driver above the miniport classifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// SRB_STATUS_SUCCESS, SCSI GOOD.
    Good,
    /// SRB_STATUS_ERROR with SCSI status RESERVATION CONFLICT and no sense (autosense not
    /// valid): what classpnp reads as a reservation conflict.
    Conflict,
    /// SRB_STATUS_ERROR | SRB_STATUS_AUTOSENSE_VALID, CHECK CONDITION, UNIT ATTENTION with
    /// this ASC/ASCQ.
    UnitAttention((u8, u8)),
}

/// Classifies `done`, failing the test on anything the reservation model cannot produce.
fn seen(done: &Completion) -> Seen {
    const AUTOSENSE: u8 = rvscsi::storport::SRB_STATUS_AUTOSENSE_VALID;
    match (done.srb_status, done.scsi_status) {
        (SRB_STATUS_SUCCESS, 0) => Seen::Good,
        (SRB_STATUS_ERROR, RESERVATION_CONFLICT) => {
            assert!(done.sense.is_empty(), "{done:?}");
            assert_eq!(done.data_transfer_length, 0, "{done:?}");
            Seen::Conflict
        }
        (status, 0x02) if status == SRB_STATUS_ERROR | AUTOSENSE => {
            assert_eq!(done.sense[2] & 0x0F, 0x06, "UNIT ATTENTION: {done:?}");
            Seen::UnitAttention((done.sense[12], done.sense[13]))
        }
        _ => panic!("unexpected completion {done:?}"),
    }
}

fn test_unit_ready(node: &Machine, (target, lun): (u8, u16)) -> Seen {
    seen(
        &node
            .adapter
            .execute(0, &Request::new(target, lun as u8, &[0, 0, 0, 0, 0, 0]))
            .unwrap(),
    )
}

fn write_blocks(
    node: &Machine,
    processor: u32,
    (target, lun): (u8, u16),
    lba: u32,
    data: &[u8],
) -> Seen {
    let blocks = (data.len() / BLOCK) as u16;
    seen(
        &node
            .adapter
            .execute(
                processor,
                &Request::new(target, lun as u8, &write10(lba, blocks)).writing(data),
            )
            .unwrap(),
    )
}

fn read_blocks(node: &Machine, (target, lun): (u8, u16), lba: u32, blocks: u16) -> Vec<u8> {
    let done = node
        .adapter
        .execute(
            0,
            &Request::new(target, lun as u8, &read10(lba, blocks))
                .reading(u32::from(blocks) * BLOCK as u32),
        )
        .unwrap();
    assert_eq!(seen(&done), Seen::Good);
    done.data
}

/// The medium of `unit` at `lba`, read past both drivers.
fn medium(unit: &Lun, lba: u32, blocks: usize) -> Vec<u8> {
    let mut bytes = vec![0; blocks * BLOCK];
    unit.read_at(u64::from(lba) * BLOCK as u64, &mut bytes)
        .unwrap();
    bytes
}

fn unit_of(luns: &[(u8, u16, Lun)], (target, lun): (u8, u16)) -> &Lun {
    &luns
        .iter()
        .find(|(t, l, _)| (*t, *l) == (target, lun))
        .unwrap()
        .2
}

#[test]
fn validate_scsi3_persistent_reservation_between_the_nodes() {
    let luns = shared_luns();
    let (a, b) = two_nodes(&luns);
    for disk in cluster_disks() {
        let unit = unit_of(&luns, disk);
        // A registers and reserves; both nodes read the same keys and reservation.
        assert_eq!(seen(&pr_out(&a, 0, disk, REGISTER, 0, KEY_A)), Seen::Good);
        assert_eq!(seen(&pr_out(&a, 1, disk, RESERVE, KEY_A, 0)), Seen::Good);
        let status = unit.pr_status();
        assert_eq!(status.key_of(a.device.nexus()), Some(KEY_A));
        assert_eq!(status.reservation, Some(held_by(&a)));
        assert_eq!(pr_in(&a, disk, READ_KEYS), pr_in(&b, disk, READ_KEYS));
        assert_eq!(read_keys(&b, disk), vec![KEY_A]);
        for node in [&a, &b] {
            assert_eq!(
                read_reservation(node, disk),
                Some((KEY_A, WRITE_EXCLUSIVE_REGISTRANTS_ONLY))
            );
        }
        // The owner writes; B, not registered, may read but not write or reserve.
        let owner_data = vec![0xA1; 8 * BLOCK];
        assert_eq!(write_blocks(&a, 0, disk, 100, &owner_data), Seen::Good);
        assert_eq!(
            write_blocks(&b, 1, disk, 100, &[0xB1; 8 * BLOCK]),
            Seen::Conflict
        );
        assert_eq!(medium(unit, 100, 8), owner_data, "B's write must not land");
        assert_eq!(read_blocks(&b, disk, 100, 8), owner_data);
        assert_eq!(
            seen(&pr_out(&b, 0, disk, RESERVE, KEY_B, 0)),
            Seen::Conflict
        );
        // B registers, then preempts A: the reservation moves to B, A's registration goes.
        assert_eq!(seen(&pr_out(&b, 0, disk, REGISTER, 0, KEY_B)), Seen::Good);
        assert_eq!(read_keys(&a, disk), vec![KEY_A, KEY_B]);
        assert_eq!(
            seen(&pr_out(&b, 1, disk, PREEMPT, KEY_B, KEY_A)),
            Seen::Good
        );
        let status = unit.pr_status();
        assert_eq!(status.key_of(a.device.nexus()), None);
        assert_eq!(status.key_of(b.device.nexus()), Some(KEY_B));
        assert_eq!(status.reservation, Some(held_by(&b)));
        assert_eq!(
            unit.unit_attentions(a.device.nexus()),
            vec![REGISTRATIONS_PREEMPTED],
            "raised by the device, for the driver to deliver"
        );
        assert_eq!(
            test_unit_ready(&a, disk),
            Seen::UnitAttention(REGISTRATIONS_PREEMPTED),
            "A learns it lost its registration"
        );
        assert_eq!(test_unit_ready(&a, disk), Seen::Good, "reported once");
        assert_eq!(
            read_reservation(&a, disk),
            Some((KEY_B, WRITE_EXCLUSIVE_REGISTRANTS_ONLY))
        );
        assert_eq!(read_keys(&a, disk), vec![KEY_B]);
        assert_eq!(
            write_blocks(&a, 1, disk, 100, &[0xA2; 8 * BLOCK]),
            Seen::Conflict
        );
        assert_eq!(medium(unit, 100, 8), owner_data, "A's write must not land");
        let new_owner_data = vec![0xB2; 8 * BLOCK];
        assert_eq!(write_blocks(&b, 0, disk, 100, &new_owner_data), Seen::Good);
        assert_eq!(medium(unit, 100, 8), new_owner_data);
        // A registers again (a trusted node); B releases, and A is told.
        assert_eq!(seen(&pr_out(&a, 0, disk, REGISTER, 0, KEY_A)), Seen::Good);
        assert_eq!(seen(&pr_out(&b, 0, disk, RELEASE, KEY_B, 0)), Seen::Good);
        assert_eq!(read_reservation(&b, disk), None);
        assert_eq!(
            test_unit_ready(&a, disk),
            Seen::UnitAttention(RESERVATIONS_RELEASED)
        );
        // B clears every registration; A is told its registration is gone.
        assert_eq!(seen(&pr_out(&b, 1, disk, CLEAR, KEY_B, 0)), Seen::Good);
        assert_eq!(
            test_unit_ready(&a, disk),
            Seen::UnitAttention(RESERVATIONS_PREEMPTED)
        );
        assert_eq!(test_unit_ready(&b, disk), Seen::Good);
        assert!(read_keys(&a, disk).is_empty());
        assert!(read_keys(&b, disk).is_empty());
        assert_eq!(read_reservation(&a, disk), None);
        let status = unit.pr_status();
        assert!(status.registrations.is_empty() && status.reservation.is_none());
    }
    a.finish();
    b.finish();
}

#[test]
fn validate_disk_arbitration_exactly_one_node_wins() {
    let luns = shared_luns();
    let (a, b) = two_nodes(&luns);
    let nodes = [Arc::new(a), Arc::new(b)];
    let keys = [KEY_A, KEY_B];
    let mut wins = [0u32; 2];
    for round in 0..24u32 {
        for disk in cluster_disks() {
            for (node, key) in nodes.iter().zip(keys) {
                assert_eq!(seen(&pr_out(node, 0, disk, REGISTER, 0, key)), Seen::Good);
            }
            // Both nodes arbitrate at once, each from a different processor.
            let start = Arc::new(std::sync::Barrier::new(2));
            let racers: Vec<_> = nodes
                .iter()
                .zip(keys)
                .map(|(node, key)| {
                    let node = Arc::clone(node);
                    let start = Arc::clone(&start);
                    std::thread::spawn(move || {
                        start.wait();
                        seen(&pr_out(&node, round % 2, disk, RESERVE, key, 0))
                    })
                })
                .collect();
            let results: Vec<Seen> = racers.into_iter().map(|r| r.join().unwrap()).collect();
            let winner = match results.as_slice() {
                [Seen::Good, Seen::Conflict] => 0,
                [Seen::Conflict, Seen::Good] => 1,
                other => panic!("round {round} {disk:?}: {other:?}"),
            };
            wins[winner] += 1;
            let loser = 1 - winner;
            let reservation = unit_of(&luns, disk).pr_status().reservation;
            assert_eq!(reservation, Some(held_by(&nodes[winner])));
            for node in &nodes {
                assert_eq!(
                    read_reservation(node, disk),
                    Some((keys[winner], WRITE_EXCLUSIVE_REGISTRANTS_ONLY))
                );
            }
            // The owner defends: it removes the challenger's registration, after which the
            // challenger is told, cannot write, and cannot take the disk.
            assert_eq!(
                seen(&pr_out(
                    &nodes[winner],
                    1,
                    disk,
                    PREEMPT,
                    keys[winner],
                    keys[loser]
                )),
                Seen::Good
            );
            assert_eq!(
                test_unit_ready(&nodes[loser], disk),
                Seen::UnitAttention(REGISTRATIONS_PREEMPTED)
            );
            let before = medium(unit_of(&luns, disk), 200, 1);
            assert_eq!(
                write_blocks(&nodes[loser], 0, disk, 200, &[0xEE; BLOCK]),
                Seen::Conflict
            );
            assert_eq!(medium(unit_of(&luns, disk), 200, 1), before);
            assert_eq!(
                seen(&pr_out(&nodes[loser], 0, disk, RESERVE, keys[loser], 0)),
                Seen::Conflict
            );
            assert_eq!(
                write_blocks(&nodes[winner], 0, disk, 200, &[round as u8; BLOCK]),
                Seen::Good
            );
            assert_eq!(
                seen(&pr_out(&nodes[winner], 0, disk, CLEAR, keys[winner], 0)),
                Seen::Good
            );
        }
    }
    // Not a fairness requirement; only that the race really was one.
    eprintln!("arbitration wins: A {}, B {}", wins[0], wins[1]);
    for node in nodes {
        let Ok(node) = Arc::try_unwrap(node) else {
            panic!("a racer still holds a node");
        };
        node.finish();
    }
}

/// One writer's record: every write it sent (LBA, data) and how it came back.
struct WriteLog {
    writes: Vec<(u32, Vec<u8>, Seen)>,
}

/// Blocks per write, and writes per writer's region.
const WRITE_BLOCKS: usize = 2;
const REGION_WRITES: u32 = 16;
/// Where the owner's and the taker's writers write on each disk.
const OWNER_REGION: u32 = 1000;
const TAKER_REGION: u32 = 2000;

/// A thread writing to its own region of a disk through one node, until told to stop.
struct Writer {
    disk: (u8, u16),
    /// First LBA of its [`REGION_WRITES`] slots of [`WRITE_BLOCKS`].
    base: u32,
    /// The region's contents before it started.
    initial: Vec<u8>,
    /// Writes sent so far, and how many of them landed (GOOD).
    progress: Arc<AtomicU32>,
    landed: Arc<AtomicU32>,
    handle: std::thread::JoinHandle<WriteLog>,
}

impl Writer {
    /// Starts writing to `base..` of `disk` through `node`'s `processor`, each write with
    /// unique contents tagged `tag`, until `stop`.
    fn start(
        node: &Arc<Machine>,
        processor: u32,
        (disk, base, tag): ((u8, u16), u32, u8),
        unit: &Lun,
        stop: &Arc<AtomicBool>,
    ) -> Self {
        let initial = medium(unit, base, REGION_WRITES as usize * WRITE_BLOCKS);
        let progress = Arc::new(AtomicU32::new(0));
        let landed = Arc::new(AtomicU32::new(0));
        let handle = {
            let (node, stop) = (Arc::clone(node), Arc::clone(stop));
            let (progress, landed) = (Arc::clone(&progress), Arc::clone(&landed));
            std::thread::spawn(move || {
                let mut log = WriteLog { writes: Vec::new() };
                let mut serial = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let lba = base + (serial % REGION_WRITES) * WRITE_BLOCKS as u32;
                    let mut data = vec![tag; WRITE_BLOCKS * BLOCK];
                    for (index, chunk) in data.chunks_mut(4).enumerate() {
                        chunk.copy_from_slice(&(serial ^ ((index as u32) << 20)).to_le_bytes());
                    }
                    data[0] = tag;
                    let outcome = write_blocks(&node, processor, disk, lba, &data);
                    if outcome == Seen::Good {
                        landed.fetch_add(1, Ordering::SeqCst);
                    }
                    log.writes.push((lba, data, outcome));
                    progress.fetch_add(1, Ordering::SeqCst);
                    serial += 1;
                }
                log
            })
        };
        Self {
            disk,
            base,
            initial,
            progress,
            landed,
            handle,
        }
    }

    fn progress(&self) -> u32 {
        self.progress.load(Ordering::SeqCst)
    }

    fn landed(&self) -> u32 {
        self.landed.load(Ordering::SeqCst)
    }

    /// Joins the thread; checks the medium against the shadow of the writes that landed: each
    /// slot holds what the last GOOD write to it carried (or what it held before), so no
    /// refused write reached the data. Returns the outcomes with runs merged.
    fn finish(self, unit: &Lun) -> Vec<Seen> {
        let log = self.handle.join().unwrap();
        let mut shadow: Vec<Vec<u8>> = self
            .initial
            .chunks(WRITE_BLOCKS * BLOCK)
            .map(<[u8]>::to_vec)
            .collect();
        let mut phases: Vec<Seen> = Vec::new();
        for (lba, data, outcome) in &log.writes {
            if *outcome == Seen::Good {
                shadow[((lba - self.base) / WRITE_BLOCKS as u32) as usize].clone_from(data);
            }
            if phases.last() != Some(outcome) {
                phases.push(outcome.clone());
            }
        }
        assert_eq!(
            medium(unit, self.base, REGION_WRITES as usize * WRITE_BLOCKS),
            shadow.concat(),
            "{:?}: the region at {} differs from its shadow",
            self.disk,
            self.base
        );
        phases
    }
}

/// The failover itself: on every disk at once, `taker` registers and preempts node A's key.
fn take_over(taker: &Arc<Machine>, disks: &[(u8, u16)]) {
    let start = Arc::new(std::sync::Barrier::new(disks.len()));
    let movers: Vec<_> = disks
        .iter()
        .enumerate()
        .map(|(index, &disk)| {
            let taker = Arc::clone(taker);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let processor = (index as u32 + 1) % 2;
                let register = pr_out(&taker, processor, disk, REGISTER, 0, KEY_B);
                assert_eq!(seen(&register), Seen::Good);
                let preempt = pr_out(&taker, processor, disk, PREEMPT, KEY_B, KEY_A);
                assert_eq!(seen(&preempt), Seen::Good);
            })
        })
        .collect();
    for mover in movers {
        mover.join().unwrap();
    }
}

/// Moves the ownership of `disks` from `owner` (node A: registered and reserved on each) to
/// `taker` (node B: not registered) while both write to them: the cluster's failover, one
/// disk or all at once.
fn failover_with_io(
    luns: &[(u8, u16, Lun)],
    owner: &Arc<Machine>,
    taker: &Arc<Machine>,
    disks: &[(u8, u16)],
) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (index, &disk) in disks.iter().enumerate() {
        // Known contents in both regions first, so a refused write that landed would show.
        let fill = vec![0x11; REGION_WRITES as usize * WRITE_BLOCKS * BLOCK];
        for base in [OWNER_REGION, TAKER_REGION] {
            assert_eq!(write_blocks(owner, 0, disk, base, &fill), Seen::Good);
        }
        let processor = index as u32 % 2;
        let unit = unit_of(luns, disk);
        let tag = index as u8;
        writers.push(Writer::start(
            owner,
            processor,
            (disk, OWNER_REGION, 0xA0 + tag),
            unit,
            &stop,
        ));
        writers.push(Writer::start(
            taker,
            processor,
            (disk, TAKER_REGION, 0xB0 + tag),
            unit,
            &stop,
        ));
    }
    // I/O runs on the owner, and is refused to the taker, before the failover.
    for writer in &writers {
        assert!(
            wait_until(WAIT, || writer.progress() >= 20),
            "writes before the failover"
        );
        if writer.base == TAKER_REGION {
            assert_eq!(writer.landed(), 0, "{:?}: the taker wrote", writer.disk);
        }
    }
    take_over(taker, disks);
    // And keeps running on both sides after it.
    let after: Vec<u32> = writers.iter().map(Writer::progress).collect();
    for (writer, done) in writers.iter().zip(after) {
        assert!(
            wait_until(WAIT, || writer.progress() >= done + 20
                && writer.landed() > 0),
            "writes after the failover"
        );
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        let (disk, base) = (writer.disk, writer.base);
        let phases = writer.finish(unit_of(luns, disk));
        let expected = if base == OWNER_REGION {
            // The old owner: writes land until the preemption, the next command learns of
            // it, and every write after that is refused.
            vec![
                Seen::Good,
                Seen::UnitAttention(REGISTRATIONS_PREEMPTED),
                Seen::Conflict,
            ]
        } else {
            // The new owner: refused until it registered, then landing.
            vec![Seen::Conflict, Seen::Good]
        };
        assert_eq!(phases, expected, "{disk:?}: the writes to {base}");
    }
    for &disk in disks {
        for node in [owner, taker] {
            assert_eq!(
                read_reservation(node, disk),
                Some((KEY_B, WRITE_EXCLUSIVE_REGISTRANTS_ONLY))
            );
            assert_eq!(read_keys(node, disk), vec![KEY_B]);
        }
        let status = unit_of(luns, disk).pr_status();
        assert_eq!(status.reservation, Some(held_by(taker)));
        let registered: Vec<Nexus> = status.registrations.iter().map(|r| r.nexus).collect();
        assert_eq!(registered, vec![taker.device.nexus()]);
    }
}

/// Node A registers and reserves `disks`: it owns them.
fn take_ownership(node: &Machine, disks: &[(u8, u16)]) {
    for &disk in disks {
        assert_eq!(seen(&pr_out(node, 0, disk, REGISTER, 0, KEY_A)), Seen::Good);
        assert_eq!(seen(&pr_out(node, 0, disk, RESERVE, KEY_A, 0)), Seen::Good);
    }
}

#[test]
fn validate_disk_failover_with_io_running_on_the_owner() {
    let luns = shared_luns();
    let (a, b) = two_nodes(&luns);
    let (a, b) = (Arc::new(a), Arc::new(b));
    let disk = [(0, 0)];
    take_ownership(&a, &disk);
    failover_with_io(&luns, &a, &b, &disk);
    for node in [a, b] {
        let Ok(node) = Arc::try_unwrap(node) else {
            panic!("a writer still holds a node");
        };
        node.finish();
    }
}

#[test]
fn validate_simultaneous_failover_of_every_cluster_disk() {
    let luns = shared_luns();
    let (a, b) = two_nodes(&luns);
    let (a, b) = (Arc::new(a), Arc::new(b));
    let disks: Vec<(u8, u16)> = cluster_disks().collect();
    take_ownership(&a, &disks);
    failover_with_io(&luns, &a, &b, &disks);
    for node in [a, b] {
        let Ok(node) = Arc::try_unwrap(node) else {
            panic!("a writer still holds a node");
        };
        node.finish();
    }
}
