//! A matrix of hosts: the real miniport booted on every shape of virtio-scsi device the spec
//! allows and users run (QEMU's defaults and its feature switches, vhost-style minimal devices,
//! tiny rings, more queues than MSI-X messages, many targets and LUNs, odd limits), each under
//! random reads and writes from several processors checked byte for byte against a shadow.
//!
//! For each host the test prints the limits the miniport reported to StorPort, and checks them
//! against what the device's limits allow (the figures the issue note lists).

use std::sync::Arc;

use rvscsi_tests::device::{CompletionMode, DeviceOptions, QueueSizeOverrides};
use rvscsi_tests::harness::{Machine, boot, ring_from_env};
use rvscsi_tests::scenario::{RandomLoad, anonymous_disk, verified_random_io};
use rvscsi_tests::sim::SimOptions;
use virtio_core::features::Features;

/// Blocks of every LUN (8 MiB).
const BLOCKS: u64 = 1 << 14;

/// The limits the miniport reported in find-adapter, and the MSI-X messages it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reported {
    max_transfer_length: u32,
    physical_breaks: u32,
    max_ios: u32,
    ios_per_lun: u32,
    messages: u32,
}

/// What the miniport reports on QEMU's defaults (4 queues of 256, `seg_max` 254,
/// `cmd_per_lun` 128, per-queue MSI-X): the row the others differ from.
const QEMU_REPORTED: Reported = Reported {
    max_transfer_length: 253 * 4096,
    physical_breaks: 253,
    max_ios: 4 * 256,
    ios_per_lun: 128,
    messages: 4 + 3,
};

/// One host of the matrix.
struct Host {
    name: &'static str,
    device: DeviceOptions,
    sim: SimOptions,
    /// (target, lun) of every disk.
    units: Vec<(u8, u8)>,
    /// What the miniport must report on it.
    expected: Reported,
}

/// QEMU's defaults for a 4-vCPU guest: one request queue per vCPU, 256-entry rings,
/// `seg_max` = ring - 2, `max_sectors` 0xFFFF, `cmd_per_lun` 128, completions from an
/// iothread (delayed, out of order).
fn qemu_defaults() -> DeviceOptions {
    DeviceOptions {
        request_queues: 4,
        queue_size: 256,
        seg_max: 254,
        max_sectors: 0xFFFF,
        cmd_per_lun: 128,
        completion: CompletionMode::Delayed {
            max_delay: std::time::Duration::from_micros(200),
            shuffle: true,
        },
        ..DeviceOptions::default()
    }
}

fn sim(processors: u32) -> SimOptions {
    SimOptions {
        processors,
        ..SimOptions::default()
    }
}

const STANDARD_UNITS: [(u8, u8); 3] = [(0, 0), (0, 1), (1, 0)];

#[expect(
    clippy::too_many_lines,
    reason = "one row per host: the matrix reads best as one table"
)]
fn hosts() -> Vec<Host> {
    vec![
        Host {
            name: "qemu-defaults",
            device: qemu_defaults(),
            sim: sim(4),
            units: STANDARD_UNITS.to_vec(),
            expected: QEMU_REPORTED,
        },
        Host {
            // QEMU with indirect_desc=off (and vhost-user backends that leave it out): every
            // request goes on the ring as a direct chain, so a ring holds a third as many.
            name: "qemu-indirect-desc-off",
            device: DeviceOptions {
                indirect_desc: false,
                ..qemu_defaults()
            },
            sim: sim(4),
            units: STANDARD_UNITS.to_vec(),
            expected: Reported {
                max_ios: 4 * (256 / 3),
                ..QEMU_REPORTED
            },
        },
        Host {
            // QEMU with packed=on: the same limits, one packed ring per queue (a direct chain
            // takes as many ring slots as descriptors, as on the split ring).
            name: "qemu-packed",
            device: DeviceOptions {
                packed: true,
                ..qemu_defaults()
            },
            sim: sim(4),
            units: STANDARD_UNITS.to_vec(),
            expected: Reported {
                max_transfer_length: 253 * 4096,
                physical_breaks: 253,
                max_ios: 4 * 256,
                ios_per_lun: 128,
                messages: 4 + 3,
            },
        },
        Host {
            name: "qemu-packed-indirect-desc-off-event-idx-off",
            device: DeviceOptions {
                packed: true,
                indirect_desc: false,
                event_idx: false,
                ..qemu_defaults()
            },
            sim: sim(4),
            units: STANDARD_UNITS.to_vec(),
            expected: Reported {
                max_transfer_length: 253 * 4096,
                physical_breaks: 253,
                max_ios: 4 * (256 / 3),
                ios_per_lun: 128,
                messages: 4 + 3,
            },
        },
        Host {
            name: "qemu-event-idx-off",
            device: DeviceOptions {
                event_idx: false,
                ..qemu_defaults()
            },
            sim: sim(4),
            units: STANDARD_UNITS.to_vec(),
            expected: QEMU_REPORTED,
        },
        Host {
            // A minimal vhost-style device: no optional feature at all, one request queue,
            // 64-entry rings, its own smaller sense and CDB sizes.
            name: "vhost-minimal",
            device: DeviceOptions {
                request_queues: 1,
                queue_size: 64,
                seg_max: 62,
                indirect_desc: false,
                event_idx: false,
                hotplug: false,
                change: false,
                sense_size: 64,
                cdb_size: 16,
                ..qemu_defaults()
            },
            sim: sim(2),
            units: STANDARD_UNITS.to_vec(),
            expected: Reported {
                max_transfer_length: 61 * 4096,
                physical_breaks: 61,
                max_ios: 64 / 3,
                ios_per_lun: 21,
                messages: 1 + 3,
            },
        },
        Host {
            // Request queues of different sizes: the limits follow the smallest.
            name: "queues-of-different-sizes",
            device: DeviceOptions {
                queue_size_overrides: QueueSizeOverrides::NONE.with(3, 64).with(4, 128),
                ..qemu_defaults()
            },
            sim: sim(4),
            units: STANDARD_UNITS.to_vec(),
            expected: Reported {
                max_transfer_length: 61 * 4096,
                physical_breaks: 61,
                max_ios: 4 * 64,
                ios_per_lun: 128,
                messages: 4 + 3,
            },
        },
        Host {
            name: "tiny-rings-without-indirect",
            device: DeviceOptions {
                queue_size: 8,
                seg_max: 6,
                indirect_desc: false,
                ..qemu_defaults()
            },
            sim: sim(4),
            units: STANDARD_UNITS.to_vec(),
            expected: Reported {
                max_transfer_length: 5 * 4096,
                physical_breaks: 5,
                max_ios: 4 * 2,
                ios_per_lun: 8,
                messages: 4 + 3,
            },
        },
        Host {
            name: "tiny-rings",
            device: DeviceOptions {
                queue_size: 8,
                seg_max: 6,
                ..qemu_defaults()
            },
            sim: sim(4),
            units: STANDARD_UNITS.to_vec(),
            expected: Reported {
                max_transfer_length: 5 * 4096,
                physical_breaks: 5,
                max_ios: 4 * 8,
                ios_per_lun: 32,
                messages: 4 + 3,
            },
        },
        Host {
            name: "more-queues-than-messages",
            device: DeviceOptions {
                request_queues: 8,
                ..qemu_defaults()
            },
            sim: SimOptions {
                messages: Some(4),
                ..sim(4)
            },
            units: STANDARD_UNITS.to_vec(),
            expected: Reported {
                max_ios: 8 * 256,
                messages: 4,
                ..QEMU_REPORTED
            },
        },
        Host {
            // QEMU with `vectors=5`: 8 request queues but MSI-X entries for two of them. The
            // miniport prepares two, so MaxNumberOfIO is what two rings hold.
            name: "fewer-vectors-than-queues",
            device: DeviceOptions {
                request_queues: 8,
                msix_vectors: Some(5),
                ..qemu_defaults()
            },
            sim: sim(4),
            units: STANDARD_UNITS.to_vec(),
            expected: Reported {
                max_ios: 2 * 256,
                messages: 5,
                ..QEMU_REPORTED
            },
        },
        Host {
            name: "many-targets-and-luns",
            device: DeviceOptions {
                max_target: 15,
                max_lun: 7,
                ..qemu_defaults()
            },
            sim: SimOptions {
                scan_targets: 16,
                ..sim(4)
            },
            units: (0..16u8)
                .flat_map(|target| (0..8u8).map(move |lun| (target, lun)))
                .collect(),
            expected: QEMU_REPORTED,
        },
        Host {
            name: "cmd-per-lun-1",
            device: DeviceOptions {
                cmd_per_lun: 1,
                ..qemu_defaults()
            },
            sim: sim(4),
            units: STANDARD_UNITS.to_vec(),
            expected: Reported {
                ios_per_lun: 1,
                ..QEMU_REPORTED
            },
        },
        Host {
            name: "odd-seg-max-and-max-sectors",
            device: DeviceOptions {
                seg_max: 37,
                max_sectors: 129,
                ..qemu_defaults()
            },
            sim: sim(4),
            units: STANDARD_UNITS.to_vec(),
            expected: Reported {
                // 129 sectors (66,048 bytes) span at most 18 pages: 18 segments, and a
                // transfer of 129 sectors fits 17 pages' worth.
                max_transfer_length: 129 * 512,
                physical_breaks: 17,
                max_ios: 4 * 256,
                ios_per_lun: 128,
                messages: 4 + 3,
            },
        },
        Host {
            name: "max-sectors-below-a-page",
            device: DeviceOptions {
                seg_max: 3,
                max_sectors: 7,
                ..qemu_defaults()
            },
            sim: sim(2),
            units: STANDARD_UNITS.to_vec(),
            expected: Reported {
                max_transfer_length: 7 * 512,
                physical_breaks: 1,
                max_ios: 4 * 256,
                ios_per_lun: 128,
                messages: 4 + 3,
            },
        },
    ]
}

/// Boots `host`, checks the limits its miniport reported, runs the random load and finishes
/// the machine (every SRB completed once, no violation by the miniport or of the device's
/// limits).
fn run(host: Host) {
    let luns = host
        .units
        .iter()
        .map(|&(target, lun)| (target, u16::from(lun), anonymous_disk(BLOCKS).unwrap()))
        .collect();
    let processors = host.sim.processors;
    let packed = ring_from_env(host.device).packed;
    let machine = Arc::new(boot(host.sim, host.device, luns).unwrap());
    // The miniport takes the packed ring whenever the device offers it.
    assert_eq!(
        machine
            .device
            .registers()
            .driver_features()
            .contains(Features::RING_PACKED),
        packed,
        "{}: the ring layout negotiated",
        host.name
    );
    let found = machine.adapter.found_adapter();
    let reported = Reported {
        max_transfer_length: found.config.maximum_transfer_length,
        physical_breaks: found.config.number_of_physical_breaks,
        max_ios: found.config.max_number_of_io,
        ios_per_lun: found.config.max_ios_per_lun,
        messages: found.messages,
    };
    let mut disks = machine.adapter.scan_bus().unwrap();
    disks.sort_by_key(|disk| (disk.target, disk.lun));
    let found_units: Vec<(u8, u8)> = disks.iter().map(|disk| (disk.target, disk.lun)).collect();
    let mut units = host.units.clone();
    units.sort_unstable();
    assert_eq!(found_units, units, "{}: the bus scan", host.name);
    let figures = verified_random_io(
        &machine,
        &units,
        BLOCKS,
        RandomLoad {
            processors,
            depth: 8,
            ios_per_processor: 150,
            seed: 0x5eed_0000 ^ host.name.len() as u64,
        },
    );
    eprintln!(
        "host {:<28} MaximumTransferLength {:>8} NumberOfPhysicalBreaks {:>3} MaxNumberOfIO {:>5} \
         MaxIOsPerLun {:>3} messages {:>2} | {} I/Os, {} BUSY retried, {} KiB",
        host.name,
        reported.max_transfer_length,
        reported.physical_breaks,
        reported.max_ios,
        reported.ios_per_lun,
        reported.messages,
        figures.ios,
        figures.busy,
        figures.bytes / 1024
    );
    assert_eq!(
        reported, host.expected,
        "{}: the reported limits",
        host.name
    );
    assert_eq!(figures.ios, processors as usize * 150);
    Arc::into_inner(machine)
        .map(Machine::finish)
        .expect("the load threads are done");
}

/// Runs the host of the matrix named `name`.
fn run_named(name: &str) {
    let host = hosts()
        .into_iter()
        .find(|host| host.name == name)
        .unwrap_or_else(|| panic!("no host {name} in the matrix"));
    run(host);
}

/// One test per host, so that a failure names it; `every_host_is_tested` keeps the list
/// complete.
macro_rules! host_tests {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run_named($name);
            }
        )*

        #[test]
        fn every_host_is_tested() {
            let tested = [$($name),*];
            for host in hosts() {
                assert!(tested.contains(&host.name), "{} has no test", host.name);
            }
        }
    };
}

host_tests! {
    qemu_default_host => "qemu-defaults",
    // The regression of issue 13: without VIRTIO_F_INDIRECT_DESC every command failed
    // INVALID_REQUEST and the bus scan found no disk.
    qemu_indirect_desc_off => "qemu-indirect-desc-off",
    qemu_event_idx_off => "qemu-event-idx-off",
    qemu_packed => "qemu-packed",
    qemu_packed_indirect_desc_off_event_idx_off => "qemu-packed-indirect-desc-off-event-idx-off",
    vhost_minimal => "vhost-minimal",
    queues_of_different_sizes => "queues-of-different-sizes",
    tiny_rings_without_indirect => "tiny-rings-without-indirect",
    tiny_rings => "tiny-rings",
    more_queues_than_messages => "more-queues-than-messages",
    fewer_vectors_than_queues => "fewer-vectors-than-queues",
    many_targets_and_luns => "many-targets-and-luns",
    cmd_per_lun_1 => "cmd-per-lun-1",
    odd_seg_max_and_max_sectors => "odd-seg-max-and-max-sectors",
    max_sectors_below_a_page => "max-sectors-below-a-page",
}
