//! Scenarios of the event queue: hot-plug and hot-unplug of LUNs under load, lost events, a
//! capacity change, garbage from the device, configuration changes, and events after device
//! resets and power cycles. The real miniport, driven by the StorPort simulator (whose PnP side
//! rescans on BusChangeDetected as storport.sys does), against the virtio-scsi device model.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rvscsi::storport::{SRB_STATUS_NO_DEVICE, SRB_STATUS_SUCCESS};
use rvscsi_tests::device::target::Lun;
use rvscsi_tests::device::DeviceOptions;
use rvscsi_tests::harness::{Machine, boot};
use rvscsi_tests::sim::{Notification, PnpEvent, PnpView, Request, SimOptions};

const WAIT: Duration = Duration::from_secs(30);
const BLOCKS: u64 = 1 << 14; // 8 MiB per LUN

fn disk() -> Lun {
    Lun::memory(BLOCKS, 512).unwrap()
}

fn hotplug() -> DeviceOptions {
    DeviceOptions {
        hotplug: true,
        change: true,
        ..DeviceOptions::default()
    }
}

fn machine(sim: SimOptions, device: DeviceOptions) -> Machine {
    let machine = boot(
        sim,
        device,
        vec![(0, 0, disk()), (0, 1, disk()), (1, 0, disk())],
    )
    .unwrap();
    machine.adapter.scan_bus().unwrap();
    machine
}

fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut cdb = vec![0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

fn write10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut cdb = read10(lba, blocks);
    cdb[0] = 0x2A;
    cdb
}

fn has_disk(view: &PnpView, target: u8, lun: u8) -> bool {
    view.disks.iter().any(|d| (d.target, d.lun) == (target, lun))
}

/// Writes then reads back one block of `target`/`lun`.
fn round_trip(machine: &Machine, target: u8, lun: u8, lba: u32, fill: u8) {
    let data = vec![fill; 512];
    let done = machine
        .adapter
        .execute(0, &Request::new(target, lun, &write10(lba, 1)).writing(&data))
        .unwrap();
    assert_eq!(done.status(), SRB_STATUS_SUCCESS, "write {target}:{lun}");
    let done = machine
        .adapter
        .execute(1, &Request::new(target, lun, &read10(lba, 1)).reading(512))
        .unwrap();
    assert_eq!(done.status(), SRB_STATUS_SUCCESS, "read {target}:{lun}");
    assert_eq!(done.data, data);
}

#[test]
fn a_hot_plugged_lun_is_discovered_and_usable() {
    let machine = machine(SimOptions::default(), hotplug());
    let before = machine.adapter.pnp();
    assert_eq!(before.disks.len(), 3);
    assert!(machine.device.hot_plug(0, 2, disk()).unwrap());
    let view = machine
        .adapter
        .wait_pnp(WAIT, |view| view.idle && has_disk(view, 0, 2))
        .unwrap();
    assert!(view.history.contains(&PnpEvent::Arrived { target: 0, lun: 2 }));
    round_trip(&machine, 0, 2, 7, 0x5A);
    let counters = machine.miniport().events().counters();
    assert_eq!(counters.appeared.load(Ordering::Relaxed), 1);
    machine.finish();
}
