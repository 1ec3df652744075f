//! Scenarios of HwStorUnitControl: StorPort surprise-removes (or removes) a LUN while the device
//! holds its commands and another LUN runs checked I/O, then starts it again; the query and the
//! contract the simulator holds the miniport to.
//!
//! Every scenario checks that each SRB is completed exactly once (the simulator records any
//! violation, [`Machine::finish`] asserts there is none), that no write of the removed LUN
//! reaches the device after its SRB failed (the device's write journal, against the completion
//! times the simulator records, and a read-back of every region written), and that I/O works
//! on every LUN afterwards.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rvscsi::storport::{SRB_STATUS_NO_DEVICE, SRB_STATUS_SUCCESS};
use rvscsi::trace::TraceEvent;
use rvscsi_tests::device::{DeviceOptions, FaultAction, TmfAction};
use rvscsi_tests::harness::Machine;
use rvscsi_tests::scenario::{
    ResumeCheck, anonymous_disk, boot_standard, check_and_finish, complete_all, fault_by_unit,
    full_resets, read10, stamped, statuses, submit_load, tmf_hook, wait_held, wait_until, write10,
};
use rvscsi_tests::sim::abi::{
    self, SCSI_UNIT_CONTROL_SUCCESS, SCSI_UNIT_CONTROL_UNSUCCESSFUL, SCSI_UNIT_REMOVE,
    SCSI_UNIT_START, SCSI_UNIT_SURPRISE_REMOVAL, StorAddrBtl8,
};
use rvscsi_tests::sim::{PnpEvent, Request, SimOptions, Violation};
use rvscsi_tests::tmf_counter;
use virtio_core::scsi::{Response, TmfSubtype};

const BLOCKS: u64 = 1 << 15;
/// Commands of the removed LUN the device holds.
const HELD: usize = 128;
/// The miniport's task management deadline.
const DEADLINE: Duration = Duration::from_secs(2);
/// The LUN removed; the other LUN of its target runs I/O beside it.
const REMOVED: (u8, u8) = (0, 1);
const BYSTANDER: (u8, u8) = (0, 0);
/// Where the end of a scenario checks that I/O works: every LUN of the standard bus.
const RESUME: ResumeCheck = ResumeCheck {
    first_lba: 30_000,
    placements: &[(0, (0, 0)), (1, (0, 1)), (2, (1, 0))],
};

fn machine() -> Machine {
    let sim = SimOptions {
        processors: 4,
        reset_grace: Some(Duration::from_secs(5)),
        ..SimOptions::default()
    };
    let machine = boot_standard(sim, DeviceOptions::default(), || {
        anonymous_disk(BLOCKS).unwrap()
    })
    .unwrap();
    machine.device.journal_writes(true);
    machine
}

/// The device holds every READ/WRITE of the removed LUN (until a function or a reset takes it
/// back) and delays the bystander's by `bystander_delay`.
fn hold_removed(machine: &Machine, bystander_delay: Duration) {
    fault_by_unit(machine, move |target, lun| {
        if (target, lun) == (REMOVED.0, u16::from(REMOVED.1)) {
            FaultAction::Drop
        } else {
            FaultAction::Delay(bystander_delay)
        }
    });
}

/// The miniport's UnitControl trace records: (control type, target << 16 | lun, in flight).
fn unit_records(machine: &Machine) -> Vec<(u32, u64, u64)> {
    machine
        .trace()
        .into_iter()
        .filter(|entry| entry.event == TraceEvent::UnitControl as u16)
        .map(|entry| entry.args)
        .collect()
}

fn address_word((target, lun): (u8, u8)) -> u64 {
    u64::from(target) << 16 | u64::from(lun)
}

/// A write to `unit` while it is removed: NO_DEVICE, and the device never sees it.
fn write_refused(machine: &Machine, unit: (u8, u8), lba: u32, stamp: u64) {
    let data = stamped(stamp, 512);
    let done = machine
        .adapter
        .execute(
            2,
            &Request::new(unit.0, unit.1, &write10(lba, 1)).writing(&data),
        )
        .unwrap();
    assert_eq!(done.status(), SRB_STATUS_NO_DEVICE, "{unit:?}");
    let read = machine
        .adapter
        .execute(
            3,
            &Request::new(unit.0, unit.1, &read10(lba, 1)).reading(512),
        )
        .unwrap();
    assert_eq!(read.status(), SRB_STATUS_NO_DEVICE, "{unit:?}");
    assert!(
        machine
            .device
            .write_journal()
            .iter()
            .all(|write| write.stamp != stamp.to_le_bytes()),
        "a refused write reached the device"
    );
}

/// StorPort surprise-removes LUN 0:1 while the device holds 128 of its commands and LUN 0:0
/// runs checked I/O. The miniport resets that LUN only: its commands come back from the device
/// and complete NO_DEVICE (the unit is gone for Windows), new ones are refused without reaching
/// the device, LUN 0:0's all succeed; ScsiUnitStart brings 0:1 back.
#[test]
fn surprise_removal_with_128_commands_held_resets_that_lun_only() {
    let machine = machine();
    // The port driver's enumeration: Windows knows the disk before PnP removes it.
    machine.adapter.scan_bus().unwrap();
    assert!(
        machine
            .adapter
            .pnp()
            .disks
            .iter()
            .any(|d| (d.target, d.lun) == REMOVED)
    );
    hold_removed(&machine, Duration::from_millis(200));
    let held = submit_load(&machine, REMOVED.0, REMOVED.1, HELD, 0);
    wait_held(&machine, HELD);
    let bystanders = submit_load(&machine, BYSTANDER.0, BYSTANDER.1, 40, 0);
    let started = Instant::now();
    assert_eq!(
        machine.adapter.surprise_remove_unit(REMOVED.0, REMOVED.1),
        Ok(SCSI_UNIT_CONTROL_SUCCESS)
    );
    let returned = started.elapsed();
    assert!(returned < DEADLINE, "HwStorUnitControl waited {returned:?}");
    write_refused(&machine, REMOVED, 20_000, 0xDEAD_0001);
    let held = complete_all(&machine, &held);
    let took = started.elapsed();
    eprintln!("surprise removal with {HELD} commands held: all back in {took:?}");
    assert_eq!(
        statuses(&held),
        HashMap::from([(SRB_STATUS_NO_DEVICE, HELD)])
    );
    let bystanders = complete_all(&machine, &bystanders);
    assert_eq!(
        statuses(&bystanders),
        HashMap::from([(SRB_STATUS_SUCCESS, 40)])
    );
    let log = machine.device.tmf_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].info.subtype, TmfSubtype::LogicalUnitReset.raw());
    assert_eq!((log[0].info.target, log[0].info.lun), (0, 1));
    assert_eq!(log[0].response, Some(Response::FUNCTION_COMPLETE));
    assert_eq!(full_resets(&machine), 0);
    assert!(wait_until(Duration::from_secs(1), || tmf_counter!(
        machine, completed
    ) == 1));
    assert_eq!(
        unit_records(&machine),
        vec![(
            SCSI_UNIT_SURPRISE_REMOVAL,
            address_word(REMOVED),
            HELD as u64
        )]
    );
    let view = machine.adapter.pnp();
    assert!(!view.disks.iter().any(|d| (d.target, d.lun) == REMOVED));
    assert!(view.history.contains(&PnpEvent::Removed {
        target: REMOVED.0,
        lun: REMOVED.1
    }));
    // Still removed once everything is back.
    write_refused(&machine, REMOVED, 20_008, 0xDEAD_0002);
    assert_eq!(
        machine.adapter.start_unit(REMOVED.0, REMOVED.1),
        Ok(SCSI_UNIT_CONTROL_SUCCESS)
    );
    check_and_finish(machine, &[&held, &bystanders], &RESUME);
}

/// The device never answers the LUN reset: at the deadline the full device reset takes every
/// command back, failed as the removed unit's (NO_DEVICE, not a retryable BUS_RESET), none
/// executes afterwards, and the unit stays removed.
#[test]
fn surprise_removal_whose_lun_reset_is_never_answered_escalates_to_a_full_reset() {
    let machine = machine();
    hold_removed(&machine, Duration::from_millis(50));
    tmf_hook(&machine, TmfAction::Ignore);
    let held = submit_load(&machine, REMOVED.0, REMOVED.1, 64, 0);
    wait_held(&machine, 64);
    let started = Instant::now();
    assert_eq!(
        machine.adapter.surprise_remove_unit(REMOVED.0, REMOVED.1),
        Ok(SCSI_UNIT_CONTROL_SUCCESS)
    );
    let held = complete_all(&machine, &held);
    let took = started.elapsed();
    eprintln!("surprise removal, LUN reset never answered: all back in {took:?}");
    assert!(took >= DEADLINE && took < DEADLINE * 3, "{took:?}");
    assert_eq!(statuses(&held), HashMap::from([(SRB_STATUS_NO_DEVICE, 64)]));
    assert_eq!(machine.device.tmf_log()[0].response, None);
    assert_eq!(full_resets(&machine), 1);
    assert_eq!(tmf_counter!(machine, timed_out), 1);
    // The reset does not bring the unit back for Windows.
    write_refused(&machine, REMOVED, 20_000, 0xDEAD_0003);
    machine.device.set_tmf_hook(None);
    assert_eq!(
        machine.adapter.start_unit(REMOVED.0, REMOVED.1),
        Ok(SCSI_UNIT_CONTROL_SUCCESS)
    );
    check_and_finish(machine, &[&held], &RESUME);
}

/// An idle unit is removed without any task management; ScsiUnitRemove does what surprise
/// removal does; a rescan (INQUIRY finds the unit present) brings a removed unit back as
/// ScsiUnitStart does.
#[test]
fn an_idle_unit_is_removed_without_a_reset_and_comes_back_by_start_or_rescan() {
    let machine = machine();
    for (control, remove) in [
        (SCSI_UNIT_SURPRISE_REMOVAL, true),
        (SCSI_UNIT_REMOVE, false),
    ] {
        let status = if remove {
            machine.adapter.surprise_remove_unit(REMOVED.0, REMOVED.1)
        } else {
            machine.adapter.remove_unit(REMOVED.0, REMOVED.1)
        };
        assert_eq!(status, Ok(SCSI_UNIT_CONTROL_SUCCESS));
        write_refused(&machine, REMOVED, 10_000, 0xBEEF_0000 | u64::from(control));
        assert_eq!(
            unit_records(&machine).last(),
            Some(&(control, address_word(REMOVED), 0))
        );
        // The other LUNs are untouched.
        let done = machine
            .adapter
            .execute(0, &Request::new(1, 0, &read10(0, 1)).reading(512))
            .unwrap();
        assert_eq!(done.status(), SRB_STATUS_SUCCESS);
        if remove {
            machine.adapter.start_unit(REMOVED.0, REMOVED.1).unwrap();
        } else {
            // The port driver's rescan: INQUIRY still reaches the device, finds the unit and
            // clears the mark.
            let disks = machine.adapter.scan_bus().unwrap();
            assert!(disks.iter().any(|d| (d.target, d.lun) == REMOVED));
        }
        let done = machine
            .adapter
            .execute(
                1,
                &Request::new(REMOVED.0, REMOVED.1, &read10(0, 1)).reading(512),
            )
            .unwrap();
        assert_eq!(done.status(), SRB_STATUS_SUCCESS, "{control}");
    }
    assert!(machine.device.tmf_log().is_empty());
    assert_eq!(full_resets(&machine), 0);
    check_and_finish(machine, &[], &RESUME);
}

/// The query reports exactly ScsiQuerySupportedUnitControlTypes, ScsiUnitStart, ScsiUnitRemove
/// and ScsiUnitSurpriseRemoval, within any MaxControlType; other types and malformed addresses
/// are answered Unsuccessful and change nothing.
#[test]
fn the_query_and_the_contract() {
    let machine = machine();
    let supported = machine.adapter.supported_unit_controls();
    assert_eq!(supported.len(), abi::SCSI_UNIT_CONTROL_MAX as usize);
    let reported: Vec<usize> = (0..supported.len()).filter(|&t| supported[t]).collect();
    assert_eq!(reported, vec![0, 2, 9, 10]);
    for max in [0, 1, 3, 9, 10, 11, 64] {
        let list = machine.adapter.query_unit_control_types(max).unwrap();
        let reported: Vec<usize> = (0..list.len()).filter(|&t| list[t]).collect();
        let expected: Vec<usize> = [0, 2, 9, 10]
            .into_iter()
            .filter(|&t| t < max as usize)
            .collect();
        assert_eq!(reported, expected, "MaxControlType {max}");
    }
    // Types it did not report: Unsuccessful (the simulator flags a Success).
    for control in [1, abi::SCSI_UNIT_POWER, 11, 15, 200] {
        assert_eq!(
            machine
                .adapter
                .unit_control(control, StorAddrBtl8::new(0, REMOVED.0, REMOVED.1)),
            Ok(SCSI_UNIT_CONTROL_UNSUCCESSFUL),
            "{control}"
        );
    }
    // Malformed addresses: refused, and the unit is not marked.
    let mut wrong_type = StorAddrBtl8::new(0, REMOVED.0, REMOVED.1);
    wrong_type.address_type = 2;
    let mut wrong_length = StorAddrBtl8::new(0, REMOVED.0, REMOVED.1);
    wrong_length.address_length = 16;
    for address in [
        StorAddrBtl8::new(1, REMOVED.0, REMOVED.1),
        wrong_type,
        wrong_length,
    ] {
        for control in [
            SCSI_UNIT_SURPRISE_REMOVAL,
            SCSI_UNIT_REMOVE,
            SCSI_UNIT_START,
        ] {
            assert_eq!(
                machine.adapter.unit_control(control, address),
                Ok(SCSI_UNIT_CONTROL_UNSUCCESSFUL),
                "{control} {address:?}"
            );
        }
    }
    let done = machine
        .adapter
        .execute(
            0,
            &Request::new(REMOVED.0, REMOVED.1, &read10(0, 1)).reading(512),
        )
        .unwrap();
    assert_eq!(done.status(), SRB_STATUS_SUCCESS);
    assert!(unit_records(&machine).is_empty());
    let violations: Vec<Violation> = machine.adapter.violations();
    assert!(violations.is_empty(), "{violations:?}");
    machine.finish();
}
