//! Scenarios: the real miniport (`rvscsi`), driven by the StorPort simulator, against the
//! virtio-scsi device model (rust-vmm `virtio-queue` on the device side).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rvscsi::storport::{
    SRB_STATUS_BUS_RESET, SRB_STATUS_DATA_OVERRUN, SRB_STATUS_ERROR, SRB_STATUS_INVALID_REQUEST,
    SRB_STATUS_SUCCESS,
};
use rvscsi_tests::device::target::{Lun, LunIdentity};
use rvscsi_tests::device::{
    CompletionMode, DeviceOptions, FaultAction, QueueSizeOverrides, RequestInfo,
};
use rvscsi_tests::harness::{Machine, boot, fault_once};
use rvscsi_tests::scenario::{
    Rng, anonymous_disk, boot_standard, faulted_read, first_block_read, full_resets, read10,
    wait_until, write10,
};
use rvscsi_tests::sim::{Completion, Request, SimError, SimOptions};
use virtio_core::fake::pci::MIXED_WIDTH_DEVICE_CONFIG;

const WAIT: Duration = Duration::from_secs(30);
const BLOCKS: u64 = 1 << 16; // 32 MiB per LUN

/// The standard bus of disks without a designator of their own (QEMU's scsi-hd without
/// serial/wwn).
fn machine(sim: SimOptions, device: DeviceOptions) -> Machine {
    boot_standard(sim, device, || anonymous_disk(BLOCKS).unwrap()).unwrap()
}

#[test]
fn boots_and_enumerates_every_disk_with_limits_from_the_device() {
    for force_classic in [false, true] {
        let sim = SimOptions {
            force_scsi_request_block: force_classic,
            ..SimOptions::default()
        };
        let machine = machine(sim, DeviceOptions::default());
        let found = machine.adapter.found_adapter();
        assert_eq!(found.extended_srbs, !force_classic);
        // seg_max 254 on 256-entry rings: 254 segments, any 253-page buffer fits.
        assert_eq!(found.config.maximum_transfer_length, 253 * 4096);
        assert_eq!(found.config.number_of_physical_breaks, 253);
        // Indirect descriptors: each request takes one ring slot; 4 queues of 256.
        assert_eq!(found.config.max_number_of_io, 4 * 256);
        assert_eq!(found.config.max_ios_per_lun, 128);
        assert!(found.passive_initialized);
        // Concurrent StartIo channels, and completion DPCs redirected to the submitting CPU.
        assert_eq!(
            found.perf_flags & 0b11,
            0b11,
            "perf flags {:#x}",
            found.perf_flags
        );
        assert_eq!(
            found.messages,
            4 + 3,
            "one MSI-X message per queue plus configuration"
        );
        let mut disks = machine.adapter.scan_bus().unwrap();
        disks.sort_by_key(|disk| (disk.target, disk.lun));
        let found: Vec<_> = disks
            .iter()
            .map(|d| (d.target, d.lun, d.blocks, d.block_size))
            .collect();
        assert_eq!(
            found,
            vec![
                (0, 0, BLOCKS, 512),
                (0, 1, BLOCKS, 512),
                (1, 0, BLOCKS, 512)
            ]
        );
        machine.finish();
    }
}

#[test]
fn a_target_with_more_luns_than_one_report_page_is_enumerated_whole() {
    // 40 LUNs: REPORT LUNS lists 328 bytes, more than the scan's first 256-byte allocation,
    // so the port driver reads the list again at its full length. LUN 300 (flat space
    // addressing) lies beyond the 255 LUNs StorPort can address and is not enumerated.
    let mut luns: Vec<(u8, u16, Lun)> = (0..40u16)
        .map(|lun| (0, lun, anonymous_disk(64).unwrap()))
        .collect();
    luns.push((0, 300, anonymous_disk(64).unwrap()));
    let machine = boot(SimOptions::default(), DeviceOptions::default(), luns).unwrap();
    let disks = machine.adapter.scan_bus().unwrap();
    let found: Vec<(u8, u8)> = disks.iter().map(|disk| (disk.target, disk.lun)).collect();
    let expected: Vec<(u8, u8)> = (0..40u8).map(|lun| (0, lun)).collect();
    assert_eq!(found, expected);
    machine.finish();
}

#[test]
fn the_device_configuration_is_read_field_by_field_at_natural_width() {
    // virtio 1.x 4.1.3.1: max_channel and max_target are 16-bit fields sharing a 4-byte word;
    // one 32-bit read over both is an access the device's register file records. Boot and a
    // configuration change (which the miniport reads again) must make none.
    let machine = machine(SimOptions::default(), DeviceOptions::default());
    machine.device.change_config(30, &200u16.to_le_bytes());
    let changes = &machine
        .miniport()
        .unwrap()
        .events()
        .counters()
        .config_changes;
    let deadline = std::time::Instant::now() + WAIT;
    while changes.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(changes.load(Ordering::Relaxed), 1);
    let mixed: Vec<_> = machine
        .device
        .registers()
        .violations()
        .into_iter()
        .filter(|violation| violation.what == MIXED_WIDTH_DEVICE_CONFIG)
        .collect();
    assert_eq!(mixed, []);
    machine.adapter.wait_pnp(WAIT, |view| view.idle).unwrap();
    machine.finish();
}

#[test]
fn pass_through_with_an_unspecified_direction_reads_and_writes() {
    // SRB_FLAGS_UNSPECIFIED_DIRECTION (both flags) with a buffer, as pass-through tools send
    // it: data-out commands go to the device as writes, everything else as reads.
    for force_classic in [false, true] {
        let sim = SimOptions {
            force_scsi_request_block: force_classic,
            ..SimOptions::default()
        };
        let machine = machine(sim, DeviceOptions::default());
        let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 7 + 3) as u8).collect();
        let write = Request::new(0, 0, &write10(40, 2)).unspecified(&pattern, 0);
        let done = machine.adapter.execute(0, &write).unwrap();
        assert_eq!(done.status(), SRB_STATUS_SUCCESS, "WRITE(10)");
        let read = Request::new(0, 0, &read10(40, 2)).reading(1024);
        assert_eq!(machine.adapter.execute(0, &read).unwrap().data, pattern);
        // The same READ(10) with an unspecified direction over a dirty buffer.
        let read = Request::new(0, 0, &read10(40, 2)).unspecified(&[0xEE; 1024], 0);
        let done = machine.adapter.execute(0, &read).unwrap();
        assert_eq!(done.status(), SRB_STATUS_SUCCESS, "READ(10)");
        assert_eq!(done.data, pattern);
        // INQUIRY: not a data-out command, so a read.
        let inquiry = [0x12, 0, 0, 0, 96, 0];
        let expected = machine
            .adapter
            .execute(0, &Request::new(0, 0, &inquiry).reading(96))
            .unwrap();
        let done = machine
            .adapter
            .execute(0, &Request::new(0, 0, &inquiry).unspecified(&[], 96))
            .unwrap();
        // A short answer (an underrun) either way: the same status, length and bytes.
        assert_eq!(
            (done.status(), done.data_transfer_length),
            (expected.status(), expected.data_transfer_length),
            "INQUIRY"
        );
        assert_eq!(done.data, expected.data);
        machine.finish();
    }
}

/// With one MSI-X message per queue, each request completes on the processor that submitted
/// it: the miniport asks StorPort for interrupt message ranges and takes each request's queue
/// from the message StorPort names for the submitting processor, so the device's interrupt,
/// the ISR, the DPC and RequestComplete all run there. With one shared message there is no
/// such choice, and the simulator counts completions elsewhere.
#[test]
fn completions_run_on_the_submitting_processor() {
    for (messages, local) in [(None, true), (Some(1), false)] {
        let device = DeviceOptions {
            completion: CompletionMode::Delayed {
                max_delay: Duration::from_micros(200),
                shuffle: true,
            },
            ..DeviceOptions::default()
        };
        let machine = Arc::new(machine(
            SimOptions {
                processors: 4,
                messages,
                ..SimOptions::default()
            },
            device,
        ));
        let units: Vec<(u8, u8)> = rvscsi_tests::scenario::STANDARD_BUS
            .iter()
            .map(|&(target, lun)| (target, lun as u8))
            .collect();
        let load = rvscsi_tests::scenario::verified_random_io(
            &machine,
            &units,
            BLOCKS,
            rvscsi_tests::scenario::RandomLoad {
                processors: 4,
                depth: 4,
                ios_per_processor: 100,
                seed: 7,
            },
        );
        let figures = machine.adapter.port_queue_figures();
        let total = figures.completed_on_submitter + figures.completed_elsewhere;
        eprintln!(
            "messages {messages:?}: {} I/Os, {} of {total} SCSI completions on the submitting \
             processor ({}%)",
            load.ios,
            figures.completed_on_submitter,
            figures.completed_on_submitter * 100 / total.max(1)
        );
        if local {
            // Every completion from an interrupt runs on the submitter; only the health timer,
            // draining a ring whose interrupt it overtook (possible on a loaded machine),
            // completes elsewhere.
            assert!(figures.completed_elsewhere * 100 <= total, "{figures:?}");
        } else {
            assert!(figures.completed_elsewhere > 0, "{figures:?}");
        }
        Arc::into_inner(machine).unwrap().finish();
    }
}

#[test]
fn a_write_then_read_round_trips_on_every_processor() {
    let machine = machine(
        SimOptions {
            processors: 4,
            ..SimOptions::default()
        },
        DeviceOptions::default(),
    );
    for processor in 0..4u32 {
        let data: Vec<u8> = (0..8192u32)
            .map(|i| (i as u8) ^ (processor as u8 * 37))
            .collect();
        let lba = processor * 64;
        let done = machine
            .adapter
            .execute(
                processor,
                &Request::new(0, 0, &write10(lba, 16)).writing(&data),
            )
            .unwrap();
        assert_eq!(done.status(), SRB_STATUS_SUCCESS);
        let done = machine
            .adapter
            .execute(
                processor,
                &Request::new(0, 0, &read10(lba, 16)).reading(8192),
            )
            .unwrap();
        assert_eq!(done.status(), SRB_STATUS_SUCCESS);
        assert_eq!(done.data, data);
    }
    let stats = machine.device.stats();
    let used_queues = stats
        .queues
        .iter()
        .skip(2)
        .filter(|q| q.requests > 0)
        .count();
    assert!(
        used_queues >= 2,
        "requests spread over the request queues: {stats:?}"
    );
    machine.finish();
}

fn vpd83(machine: &Machine, target: u8, lun: u8) -> Completion {
    let cdb = [0x12, 1, 0x83, 0, 255, 0];
    machine
        .adapter
        .execute(0, &Request::new(target, lun, &cdb).reading(255))
        .unwrap()
}

#[test]
fn vpd_0x83_gets_a_stable_unique_designator_when_the_device_has_none() {
    let first = machine(SimOptions::default(), DeviceOptions::default());
    let a = vpd83(&first, 0, 0);
    let b = vpd83(&first, 0, 1);
    let c = vpd83(&first, 1, 0);
    for page in [&a, &b, &c] {
        assert!(matches!(
            page.status(),
            SRB_STATUS_SUCCESS | SRB_STATUS_DATA_OVERRUN
        ));
        assert_eq!(page.data[1], 0x83);
        assert_eq!(page.data[3], 12, "one 12-byte designator");
        assert_eq!(page.data[5] & 0x0F, 3, "NAA");
        assert_eq!(page.data[8] >> 4, 3, "NAA 3, locally assigned");
    }
    assert_ne!(a.data[8..16], b.data[8..16]);
    assert_ne!(a.data[8..16], c.data[8..16]);
    first.finish();
    let second = machine(SimOptions::default(), DeviceOptions::default());
    assert_eq!(
        vpd83(&second, 0, 1).data[..16],
        b.data[..16],
        "stable across boots"
    );
    second.finish();
}

#[test]
fn a_device_designator_is_passed_through_untouched() {
    let identity = LunIdentity {
        naa_id: Some(0x0001_4050_0000_0001),
        ..LunIdentity::default()
    };
    let unit = Lun::memory(BLOCKS, 512).unwrap().with_identity(identity);
    let machine = boot(
        SimOptions::default(),
        DeviceOptions::default(),
        vec![(0, 0, unit)],
    )
    .unwrap();
    let page = vpd83(&machine, 0, 0);
    assert_eq!(page.data[5] & 0x0F, 3, "NAA");
    assert_eq!(
        page.data[8] >> 4,
        6,
        "the device's NAA 6 designator, not a synthesised NAA 3"
    );
    assert!(
        page.data[8..]
            .windows(6)
            .any(|w| w == [0x01, 0x40, 0x50, 0, 0, 0])
            || page.data[8..24].iter().any(|&b| b != 0)
    );
    machine.finish();
}

#[test]
fn scsi_statuses_and_sense_pass_through_untouched() {
    let machine = machine(SimOptions::default(), DeviceOptions::default());
    let unit_attention = vec![
        0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x00, 0, 0, 0, 0,
    ];
    let reply = Arc::new(Mutex::new(FaultAction::Normal));
    let hook_reply = Arc::clone(&reply);
    machine
        .device
        .set_fault_hook(Some(Arc::new(move |_| hook_reply.lock().unwrap().clone())));

    *reply.lock().unwrap() = FaultAction::ScsiStatus {
        status: 0x18,
        sense: Vec::new(),
    };
    let done = machine.adapter.execute(0, &first_block_read()).unwrap();
    assert_eq!(
        done.srb_status, SRB_STATUS_ERROR,
        "no autosense for RESERVATION CONFLICT"
    );
    assert_eq!(done.scsi_status, 0x18);

    *reply.lock().unwrap() = FaultAction::ScsiStatus {
        status: 0x02,
        sense: unit_attention.clone(),
    };
    let done = machine.adapter.execute(0, &first_block_read()).unwrap();
    assert_eq!(done.status(), SRB_STATUS_ERROR);
    assert_ne!(done.srb_status & 0x80, 0, "autosense valid");
    assert_eq!(done.scsi_status, 0x02);
    assert_eq!(done.sense, unit_attention);
    machine.finish();
}

#[test]
fn the_transfer_limit_is_honoured_exactly_at_the_boundary() {
    let machine = machine(SimOptions::default(), DeviceOptions::default());
    let max = machine
        .adapter
        .found_adapter()
        .config
        .maximum_transfer_length;
    let blocks = (max / 512) as u16;
    // Worst alignment: the buffer starts 512 bytes before a page end.
    let mut request = Request::new(0, 0, &read10(0, blocks)).reading(max);
    request.data_offset = 4096 - 512;
    let done = machine.adapter.execute(0, &request).unwrap();
    assert_eq!(done.status(), SRB_STATUS_SUCCESS);
    assert_eq!(done.data_transfer_length, max);
    // One more page than the SG list may hold: StorPort never builds it (the class driver
    // splits it), and the miniport, sent it by a port driver that breaks the rule, refuses it
    // rather than overflowing.
    let over = max + 2 * 4096;
    let mut request = Request::new(0, 0, &read10(0, (over / 512) as u16)).reading(over);
    request.data_offset = 4096 - 512;
    assert!(matches!(
        machine.adapter.execute(0, &request),
        Err(SimError::BeyondTransferLimits { length, .. }) if length == over
    ));
    request.ignore_port_limits = true;
    let done = machine.adapter.execute(0, &request).unwrap();
    assert_eq!(done.status(), SRB_STATUS_INVALID_REQUEST);
    machine.finish();
}

/// Hosts whose limits are far below QEMU's, each binding the transfer size in its own way: the
/// miniport sizes its transfers from them, so requests of the largest size, at the worst buffer
/// alignment, on every queue, stay within them (the device records any breach, and
/// `Machine::finish` fails on one).
#[test]
fn a_host_with_small_limits_is_never_exceeded() {
    let hosts = [
        // seg_max binds: 5 segments, 4 pages whatever the alignment. Other sense and CDB sizes
        // (the miniport writes its own), no EVENT_IDX, hot-plug offered.
        (
            DeviceOptions {
                seg_max: 5,
                sense_size: 64,
                cdb_size: 16,
                event_idx: false,
                hotplug: true,
                ..DeviceOptions::default()
            },
            4 * 4096,
        ),
        // max_sectors binds: 24 sectors.
        (
            DeviceOptions {
                max_sectors: 24,
                ..DeviceOptions::default()
            },
            24 * 512,
        ),
        // One small request queue binds: 8 entries hold header, response and 6 data segments.
        (
            DeviceOptions {
                queue_size_overrides: QueueSizeOverrides::NONE.with(3, 8),
                ..DeviceOptions::default()
            },
            5 * 4096,
        ),
    ];
    for (device, expected) in hosts {
        let machine = machine(
            SimOptions {
                processors: 4,
                ..SimOptions::default()
            },
            device,
        );
        let max = machine
            .adapter
            .found_adapter()
            .config
            .maximum_transfer_length;
        assert_eq!(max, expected, "{device:?}");
        let blocks = u16::try_from(max / 512).unwrap();
        for processor in 0..4u32 {
            let lba = processor * u32::from(blocks);
            let data: Vec<u8> = (0..max).map(|i| (i as u8) ^ (processor as u8)).collect();
            let mut write = Request::new(0, 0, &write10(lba, blocks)).writing(&data);
            write.data_offset = 4096 - 512;
            let done = machine.adapter.execute(processor, &write).unwrap();
            assert_eq!(done.status(), SRB_STATUS_SUCCESS, "{device:?}");
            let mut read = Request::new(0, 0, &read10(lba, blocks)).reading(max);
            read.data_offset = 4096 - 512;
            let done = machine.adapter.execute(processor, &read).unwrap();
            assert_eq!(done.status(), SRB_STATUS_SUCCESS, "{device:?}");
            assert_eq!(done.data, data);
        }
        assert_eq!(machine.device.violations(), []);
        machine.finish();
    }
}

#[test]
fn a_queue_full_storm_is_retried_by_storport_and_loses_nothing() {
    let device = DeviceOptions {
        queue_size: 8,
        completion: CompletionMode::Delayed {
            max_delay: Duration::from_millis(5),
            shuffle: true,
        },
        ..DeviceOptions::default()
    };
    let machine = machine(
        SimOptions {
            processors: 2,
            ..SimOptions::default()
        },
        device,
    );
    // 200 requests at once: StorPort lets 32 reach the miniport (MaxNumberOfIO, four rings of
    // eight), but both processors submit to the first two rings, which overflow. The miniport
    // answers BUSY and calls StorPortBusy; StorPort sends each again until it fits.
    let tickets: Vec<_> = (0..200u32)
        .map(|i| {
            let request = Request::new(0, 0, &read10(i * 8, 8)).reading(4096);
            machine.adapter.submit(i % 2, &request).unwrap()
        })
        .collect();
    for (i, ticket) in tickets.into_iter().enumerate() {
        let done = machine.adapter.wait(ticket, WAIT).unwrap();
        assert_eq!(done.status(), SRB_STATUS_SUCCESS, "request {i}");
    }
    let figures = machine.adapter.port_queue_figures();
    assert!(
        figures.busy_retries > 0 && figures.busy_calls > 0,
        "eight-entry rings must overflow with 200 requests: {figures:?}"
    );
    assert_eq!(full_resets(&machine), 0);
    assert_eq!(machine.adapter.outstanding(), 0);
    machine.finish();
}

/// A 1 MiB read whose indirect table is never contiguous (every SRB extension page stands
/// alone) goes on the ring as a 258-descriptor direct chain: it needs half the 512-entry ring
/// free at once, while small reads keep the ring full, each one that completes replaced at
/// once, completions trickling in one by one. Refused BUSY once, the large read reserves its
/// room: smaller requests are refused until the ring has drained enough, and it completes
/// without a timeout or a reset. (Without the reservation every freed descriptor goes to a
/// small read and the large one bounces BUSY until StorPort gives up on it.)
#[test]
fn a_large_direct_chain_is_not_starved_by_small_requests_on_a_busy_ring() {
    let device = DeviceOptions {
        request_queues: 1,
        queue_size: 512,
        seg_max: 510,
        cmd_per_lun: 1024,
        ..DeviceOptions::default()
    };
    // One processor: submissions, interrupts and DPCs all run there in order, so nothing but
    // the ring's own rule decides who gets freed room.
    let machine = Arc::new(machine(
        SimOptions {
            processors: 1,
            contiguity: rvscsi_tests::sim::Contiguity::PageBoundary,
            ..SimOptions::default()
        },
        device,
    ));
    // Small reads (LUN 0) complete no earlier than 500 ms from now, then each at a random
    // moment within 400 ms of that or of its submission: the ring fills first, then drains one
    // request at a time. The large read (LUN 1) completes as soon as the device has it.
    let start = std::time::Instant::now();
    let draws = Arc::new(AtomicUsize::new(0));
    machine
        .device
        .set_fault_hook(Some(Arc::new(move |info: &RequestInfo| {
            if info.lun != 0 {
                return FaultAction::Normal;
            }
            let draw = draws.fetch_add(1, Ordering::Relaxed) as u64;
            let jitter =
                Duration::from_micros(draw.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32 & 0x3_FFFF);
            let jitter = jitter.min(Duration::from_millis(400));
            let due = (start + Duration::from_millis(500)).max(std::time::Instant::now()) + jitter;
            FaultAction::Delay(due.saturating_duration_since(std::time::Instant::now()))
        })));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let small = {
        let machine = Arc::clone(&machine);
        let running = Arc::clone(&running);
        std::thread::spawn(move || {
            let mut in_flight = Vec::new();
            let mut lba = 0u32;
            while running.load(Ordering::Relaxed) || !in_flight.is_empty() {
                in_flight.retain(|&ticket| {
                    if machine.adapter.completed_at(ticket).is_none() {
                        return true;
                    }
                    let done = machine.adapter.wait(ticket, WAIT).unwrap();
                    assert_eq!(done.status(), SRB_STATUS_SUCCESS);
                    false
                });
                while running.load(Ordering::Relaxed) && in_flight.len() < 600 {
                    let mut request = Request::new(0, 0, &read10(lba % 60_000, 1)).reading(512);
                    // The device holds each up to 900 ms by design: 60 SRB seconds (six real
                    // ones) keep a loaded machine's scheduling from timing them out, which
                    // would reset the adapter and fail the test for the wrong reason.
                    request.timeout_seconds = 60;
                    in_flight.push(machine.adapter.submit(0, &request).unwrap());
                    lba += 1;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    // Filling 512 slots takes well under a second alone; 30 s leave room for a loaded machine
    // (under DMA remapping beside two compiles it once took more than 10).
    assert!(
        wait_until(Duration::from_secs(30), || {
            machine.adapter.port_queue_figures().peak_in_miniport >= 512
        }),
        "the small reads never filled the ring"
    );
    let mut large = Request::new(0, 1, &read10(0, 2048)).reading(1 << 20);
    // 60 SRB seconds: six seconds of real time before StorPort gives up on it, room enough
    // for a loaded machine (a starved request never gets in, however long it waits).
    large.timeout_seconds = 60;
    let done = machine.adapter.execute(0, &large).unwrap();
    running.store(false, Ordering::Relaxed);
    small.join().unwrap();
    assert_eq!(done.status(), SRB_STATUS_SUCCESS);
    assert_eq!(done.data_transfer_length, 1 << 20);
    assert_eq!(full_resets(&machine), 0);
    assert!(machine.adapter.port_queue_figures().busy_retries > 0);
    machine.device.set_fault_hook(None);
    Arc::into_inner(machine).unwrap().finish();
}

#[test]
fn a_timed_out_request_is_reset_and_completed_once() {
    // Per-queue MSI-X, one shared message, and line interrupts take different locks in reset.
    for messages in [None, Some(1), Some(0)] {
        let machine = machine(
            SimOptions {
                messages,
                ..SimOptions::default()
            },
            DeviceOptions::default(),
        );
        let done = faulted_read(&machine, FaultAction::Drop, 1).unwrap();
        assert_eq!(done.status(), SRB_STATUS_BUS_RESET, "messages {messages:?}");
        // The adapter works after the reset.
        let done = machine.adapter.execute(0, &first_block_read()).unwrap();
        assert_eq!(done.status(), SRB_STATUS_SUCCESS, "messages {messages:?}");
        machine.finish();
    }
}

#[test]
fn a_corrupt_used_element_resets_the_device_without_losing_the_srb() {
    let machine = machine(SimOptions::default(), DeviceOptions::default());
    let done = faulted_read(&machine, FaultAction::CorruptUsedId(4000), 2).unwrap();
    assert_eq!(done.status(), SRB_STATUS_BUS_RESET);
    let done = machine.adapter.execute(0, &first_block_read()).unwrap();
    assert_eq!(done.status(), SRB_STATUS_SUCCESS);
    machine.finish();
}

#[test]
fn io_works_with_shared_and_line_interrupts_and_after_a_power_cycle() {
    for messages in [Some(0), Some(1), None] {
        let machine = machine(
            SimOptions {
                messages,
                ..SimOptions::default()
            },
            DeviceOptions::default(),
        );
        let data = vec![0xA5u8; 4096];
        let done = machine
            .adapter
            .execute(1, &Request::new(0, 1, &write10(8, 8)).writing(&data))
            .unwrap();
        assert_eq!(done.status(), SRB_STATUS_SUCCESS, "messages {messages:?}");
        machine.adapter.power_cycle().unwrap();
        let done = machine
            .adapter
            .execute(0, &Request::new(0, 1, &read10(8, 8)).reading(4096))
            .unwrap();
        assert_eq!(done.status(), SRB_STATUS_SUCCESS, "messages {messages:?}");
        assert_eq!(done.data, data);
        machine.finish();
    }
}

/// Random reads and writes of 512 B to 2 MiB over every queue from several threads, every byte
/// checked against a shadow copy. `RVSCSI_IO_COUNT` sets the number of I/Os (CI: 100,000).
#[test]
fn random_io_from_many_processors_matches_a_shadow_copy() {
    let total: usize = std::env::var("RVSCSI_IO_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let processors = 4u32;
    let device = DeviceOptions {
        request_queues: 4,
        seg_max: 1024,
        queue_size: 1024,
        completion: CompletionMode::Delayed {
            max_delay: Duration::from_micros(200),
            shuffle: true,
        },
        ..DeviceOptions::default()
    };
    let machine = Arc::new(machine(
        SimOptions {
            processors,
            ..SimOptions::default()
        },
        device,
    ));
    let max = machine
        .adapter
        .found_adapter()
        .config
        .maximum_transfer_length;
    assert_eq!(max, 511 * 4096);
    // Each thread owns a disjoint region of each LUN, so its shadow is exact.
    let region_blocks = BLOCKS / u64::from(processors);
    let done = Arc::new(AtomicUsize::new(0));
    let bytes_moved = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..processors)
        .map(|processor| {
            let machine = Arc::clone(&machine);
            let done = Arc::clone(&done);
            let bytes_moved = Arc::clone(&bytes_moved);
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(processor + 1));
                let mut shadow: HashMap<(u8, u8), Vec<u8>> = HashMap::new();
                let base = u64::from(processor) * region_blocks;
                while done.fetch_add(1, Ordering::Relaxed) < total {
                    let (target, lun) = [(0, 0), (0, 1), (1, 0)][(rng.next_u64() % 3) as usize];
                    let region = shadow
                        .entry((target, lun))
                        .or_insert_with(|| vec![0; (region_blocks * 512) as usize]);
                    // Mostly small transfers, some up to 2 MiB (capped by the adapter's limit).
                    let blocks = match rng.next_u64() % 16 {
                        0 => 1 + rng.next_u64() % u64::from(max / 512),
                        1..=4 => 1 + rng.next_u64() % 256,
                        _ => 1 + rng.next_u64() % 16,
                    }
                    .min(region_blocks);
                    let start = rng.next_u64() % (region_blocks - blocks + 1);
                    let lba = (base + start) as u32;
                    let bytes = (blocks * 512) as usize;
                    let offset = (start * 512) as usize;
                    let mut request = if rng.next_u64().is_multiple_of(2) {
                        let data: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
                        region[offset..offset + bytes].copy_from_slice(&data);
                        Request::new(target, lun, &write10(lba, blocks as u16)).writing(&data)
                    } else {
                        Request::new(target, lun, &read10(lba, blocks as u16)).reading(bytes as u32)
                    };
                    request.data_offset = (rng.next_u64() % 8) as u16 * 512;
                    let completion = machine.adapter.execute(processor, &request).unwrap();
                    bytes_moved.fetch_add(bytes, Ordering::Relaxed);
                    assert_eq!(
                        completion.status(),
                        SRB_STATUS_SUCCESS,
                        "{target}:{lun} lba {lba} x{blocks}"
                    );
                    if request.data_in_len > 0 {
                        assert!(
                            completion.data == region[offset..offset + bytes],
                            "data mismatch at {target}:{lun} lba {lba} x{blocks}"
                        );
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    // Information only, never asserted: the figures for the issue note.
    let seconds = started.elapsed().as_secs_f64();
    let ios = done.load(Ordering::Relaxed).min(total);
    eprintln!(
        "random I/O: {ios} I/Os, {} MiB in {seconds:.1} s: {:.0} I/Os per second through the simulator",
        bytes_moved.load(Ordering::Relaxed) >> 20,
        f64::from(u32::try_from(ios).unwrap_or(u32::MAX)) / seconds
    );
    let machine = Arc::try_unwrap(machine).ok().unwrap();
    machine.finish();
}

#[test]
fn classic_srbs_and_page_bounded_memory_still_move_every_byte() {
    // Physically contiguous runs end at every page boundary, so SRB extensions whose indirect
    // table straddles a page fall back to direct descriptors; SG lists merge adjacent pages at
    // random; SCSI_REQUEST_BLOCKs instead of SRB_EX.
    let sim = SimOptions {
        force_scsi_request_block: true,
        contiguity: rvscsi_tests::sim::Contiguity::PageBoundary,
        merge_adjacent_pages: true,
        ..SimOptions::default()
    };
    let machine = machine(sim, DeviceOptions::default());
    let mut rng = Rng(7);
    for round in 0..64u32 {
        let blocks = 1 + (rng.next_u64() % 256) as u16;
        let bytes = usize::from(blocks) * 512;
        let data: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
        let lba = round * 256;
        let mut write = Request::new(0, 1, &write10(lba, blocks)).writing(&data);
        write.data_offset = (rng.next_u64() % 8) as u16 * 512;
        let done = machine.adapter.execute(round % 2, &write).unwrap();
        assert_eq!(done.status(), SRB_STATUS_SUCCESS, "round {round}");
        let read = Request::new(0, 1, &read10(lba, blocks)).reading(bytes as u32);
        let done = machine.adapter.execute(round % 2, &read).unwrap();
        assert_eq!(done.status(), SRB_STATUS_SUCCESS, "round {round}");
        assert!(done.data == data, "round {round}");
    }
    let supported = machine.adapter.supported_control_types().unwrap();
    assert_eq!(
        supported.get(..3),
        Some(&[true, true, true][..]),
        "query, stop, restart"
    );
    machine.finish();
}

#[test]
fn without_dpcs_the_isr_completes_and_a_broken_device_is_reset_from_the_timer() {
    // A StorPort that offers no DPCs (the crash-dump stack's situation): requests complete
    // from the ISR, and a protocol violation found there is reset from HwTimer.
    let sim = SimOptions {
        passive_initialization: false,
        ..SimOptions::default()
    };
    let machine = machine(sim, DeviceOptions::default());
    assert!(!machine.adapter.found_adapter().passive_initialized);
    let data = vec![0x3Cu8; 8192];
    let done = machine
        .adapter
        .execute(1, &Request::new(0, 0, &write10(64, 16)).writing(&data))
        .unwrap();
    assert_eq!(done.status(), SRB_STATUS_SUCCESS);
    machine
        .device
        .set_fault_hook(Some(fault_once(|_| true, FaultAction::CorruptUsedId(4000))));
    let mut request = Request::new(0, 0, &read10(64, 16)).reading(8192);
    // The SRB's timeout (3,000 s, 30 s simulated) is far beyond the wait: the timer, not a
    // timeout and HwResetBus, must complete it.
    request.timeout_seconds = 3000;
    let ticket = machine.adapter.submit(0, &request).unwrap();
    let done = machine
        .adapter
        .wait(ticket, Duration::from_secs(5))
        .unwrap();
    assert_eq!(done.status(), SRB_STATUS_BUS_RESET);
    let done = machine
        .adapter
        .execute(0, &Request::new(0, 0, &read10(64, 16)).reading(8192))
        .unwrap();
    assert_eq!(done.status(), SRB_STATUS_SUCCESS);
    assert_eq!(done.data, data);
    machine.finish();
}

#[test]
fn under_dma_remapping_the_device_reaches_only_what_storport_mapped() {
    // The simulator's IOMMU mode (what `RVSCSI_IOMMU=1` turns on for every scenario): bus
    // addresses are I/O virtual addresses, and the device reaches the rings, the request
    // headers, responses and indirect tables, and the data only at addresses StorPort handed
    // out for memory it mapped; `finish` fails on any IOMMU fault. Indirect tables and direct
    // chains, memory reported contiguous and page by page, reads, writes and sense data.
    for (contiguity, indirect_desc) in [
        (rvscsi_tests::sim::Contiguity::Allocation, true),
        (rvscsi_tests::sim::Contiguity::PageBoundary, true),
        (rvscsi_tests::sim::Contiguity::Allocation, false),
    ] {
        let machine = machine(
            SimOptions {
                processors: 2,
                contiguity,
                iommu: true,
                ..SimOptions::default()
            },
            DeviceOptions {
                indirect_desc,
                ..DeviceOptions::default()
            },
        );
        assert!(machine.device.memory().iommu_enabled());
        for (processor, blocks, offset) in [(0u32, 1u16, 0u16), (1, 128, 512), (0, 255, 100)] {
            let len = usize::from(blocks) * 512;
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8 ^ blocks as u8).collect();
            let lba = u32::from(blocks) * 8;
            let mut write = Request::new(0, 1, &write10(lba, blocks)).writing(&data);
            write.data_offset = offset;
            let done = machine.adapter.execute(processor, &write).unwrap();
            assert_eq!(done.status(), SRB_STATUS_SUCCESS);
            let mut read = Request::new(0, 1, &read10(lba, blocks)).reading(len as u32);
            read.data_offset = offset;
            let done = machine.adapter.execute(processor, &read).unwrap();
            assert_eq!(done.status(), SRB_STATUS_SUCCESS);
            assert_eq!(done.data, data);
        }
        // A read past the end: CHECK CONDITION, its sense data through the response.
        let beyond = machine
            .adapter
            .execute(
                0,
                &Request::new(0, 1, &read10(BLOCKS as u32 + 8, 1)).reading(512),
            )
            .unwrap();
        assert_eq!(beyond.scsi_status, 2);
        assert_eq!(beyond.sense.get(12), Some(&0x21), "LBA out of range");
        assert!(machine.device.memory().iommu_faults().is_empty());
        machine.finish();
    }
}
