//! Unit tests of the reservation state, driven through the logical unit as SCSI commands from
//! several nexuses.
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::super::target::{CHECK_CONDITION, GOOD, Lun, Outcome, opcode, sense_key};
use super::*;

const A: Nexus = Nexus::new(1);
const B: Nexus = Nexus::new(2);
const C: Nexus = Nexus::new(3);
/// A nexus that only looks (never registers, so never gets unit attentions).
const OBSERVER: Nexus = Nexus::new(99);

const WE: u8 = 0x1;
const EA: u8 = 0x3;
const WE_RO: u8 = 0x5;
const EA_RO: u8 = 0x6;
const WE_AR: u8 = 0x7;
const EA_AR: u8 = 0x8;

fn unit() -> Lun {
    Lun::memory(64, 512).unwrap()
}

/// A PERSISTENT RESERVE OUT CDB and its basic parameter list.
fn pr_out_command(action: u8, kind: u8, key: u64, sa_key: u64, flags: u8) -> (Vec<u8>, Vec<u8>) {
    let mut cdb = vec![opcode::PERSISTENT_RESERVE_OUT, action, kind, 0, 0];
    cdb.extend_from_slice(&(PR_OUT_PARAMETER_LIST_LEN as u32).to_be_bytes());
    cdb.push(0);
    let mut parameters = key.to_be_bytes().to_vec();
    parameters.extend_from_slice(&sa_key.to_be_bytes());
    parameters.extend_from_slice(&[0, 0, 0, 0, flags, 0, 0, 0]);
    (cdb, parameters)
}

fn out(lun: &Lun, nexus: Nexus, action: u8, kind: u8, key: u64, sa_key: u64) -> Outcome {
    out_flags(lun, nexus, action, kind, key, sa_key, 0)
}

fn out_flags(
    lun: &Lun,
    nexus: Nexus,
    action: u8,
    kind: u8,
    key: u64,
    sa_key: u64,
    flags: u8,
) -> Outcome {
    let (cdb, parameters) = pr_out_command(action, kind, key, sa_key, flags);
    lun.execute_from(nexus, &cdb, &parameters, &[0])
}

fn pr_in(lun: &Lun, nexus: Nexus, action: u8, allocation: u16) -> Outcome {
    let mut cdb = vec![opcode::PERSISTENT_RESERVE_IN, action, 0, 0, 0, 0, 0];
    cdb.extend_from_slice(&allocation.to_be_bytes());
    cdb.push(0);
    lun.execute_from(nexus, &cdb, &[], &[0])
}

fn write(lun: &Lun, nexus: Nexus, lba: u8, fill: u8) -> Outcome {
    let cdb = [opcode::WRITE_10, 0, 0, 0, 0, lba, 0, 0, 1, 0];
    lun.execute_from(nexus, &cdb, &[fill; 512], &[0])
}

fn read(lun: &Lun, nexus: Nexus, lba: u8) -> Outcome {
    let cdb = [opcode::READ_10, 0, 0, 0, 0, lba, 0, 0, 1, 0];
    lun.execute_from(nexus, &cdb, &[], &[0])
}

fn command(lun: &Lun, nexus: Nexus, cdb: &[u8]) -> Outcome {
    lun.execute_from(nexus, cdb, &[], &[0])
}

fn medium(lun: &Lun, lba: u8) -> u8 {
    let mut block = [0u8; 512];
    lun.read_at(u64::from(lba) * 512, &mut block).unwrap();
    block[0]
}

fn sense(outcome: &Outcome) -> (u8, u8, u8) {
    assert_eq!(outcome.status, CHECK_CONDITION, "{outcome:?}");
    (outcome.sense[2], outcome.sense[12], outcome.sense[13])
}

fn is_conflict(outcome: &Outcome) -> bool {
    outcome.status == RESERVATION_CONFLICT && outcome.sense.is_empty()
}

fn register(lun: &Lun, nexus: Nexus, key: u64) {
    assert_eq!(
        out(lun, nexus, pr_out::REGISTER, 0, 0, key).status,
        GOOD,
        "register {nexus:?}"
    );
}

fn reserve(lun: &Lun, nexus: Nexus, key: u64, kind: u8) {
    assert_eq!(
        out(lun, nexus, pr_out::RESERVE, kind, key, 0).status,
        GOOD,
        "reserve {nexus:?}"
    );
}

/// Every unit attention pending for `nexus`, taken with REQUEST SENSE.
fn drain(lun: &Lun, nexus: Nexus) -> Vec<(u8, u8)> {
    let mut seen = Vec::new();
    loop {
        let sense = command(lun, nexus, &[opcode::REQUEST_SENSE, 0, 0, 0, 18, 0]);
        assert_eq!(sense.status, GOOD);
        if sense.data_in[2] & 0x0F == sense_key::NO_SENSE {
            return seen;
        }
        assert_eq!(sense.data_in[2] & 0x0F, sense_key::UNIT_ATTENTION);
        seen.push((sense.data_in[12], sense.data_in[13]));
    }
}

fn keys(lun: &Lun) -> (u32, Vec<u64>) {
    let data = pr_in(lun, OBSERVER, pr_in::READ_KEYS, 1024).data_in;
    let generation = u32::from_be_bytes(data[..4].try_into().unwrap());
    let length = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
    assert_eq!(data.len(), 8 + length);
    let keys = data[8..]
        .chunks(8)
        .map(|k| u64::from_be_bytes(k.try_into().unwrap()))
        .collect();
    (generation, keys)
}

#[test]
fn register_reserve_and_write_exclusive_registrants_only_gating() {
    let lun = unit();
    register(&lun, A, 0xAA);
    register(&lun, B, 0xBB);
    reserve(&lun, A, 0xAA, WE_RO);
    let status = lun.pr_status();
    assert_eq!(status.generation, 2);
    assert_eq!(
        status.reservation,
        Some(PersistentReservation {
            kind: ReservationType::WriteExclusiveRegistrantsOnly,
            holder: Some(A),
        })
    );
    // Registrants write, the unregistered nexus C cannot, and its write changes nothing.
    assert_eq!(write(&lun, A, 1, 0x11).status, GOOD);
    assert_eq!(write(&lun, B, 2, 0x22).status, GOOD);
    assert!(is_conflict(&write(&lun, C, 3, 0x33)));
    assert_eq!(medium(&lun, 3), 0);
    let sync = [opcode::SYNCHRONIZE_CACHE_10, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    assert!(is_conflict(&command(&lun, C, &sync)));
    // Everyone reads under Write Exclusive.
    assert_eq!(read(&lun, C, 1).data_in[0], 0x11);
    assert_eq!(
        command(&lun, C, &[opcode::MODE_SENSE_6, 0, 0x3F, 0, 255, 0]).status,
        GOOD
    );
    // Once registered, C writes too.
    register(&lun, C, 0xCC);
    assert_eq!(write(&lun, C, 3, 0x33).status, GOOD);
    assert_eq!(medium(&lun, 3), 0x33);
}

#[test]
fn exclusive_access_registrants_only_blocks_unregistered_reads() {
    let lun = unit();
    register(&lun, A, 1);
    register(&lun, B, 2);
    reserve(&lun, A, 1, EA_RO);
    assert_eq!(read(&lun, B, 0).status, GOOD);
    assert!(is_conflict(&read(&lun, C, 0)));
    assert!(is_conflict(&command(
        &lun,
        C,
        &[opcode::MODE_SENSE_6, 0, 0x3F, 0, 255, 0]
    )));
    assert!(is_conflict(&write(&lun, C, 0, 9)));
    // Commands that touch neither medium nor parameters pass every reservation.
    for cdb in [
        &[opcode::TEST_UNIT_READY, 0, 0, 0, 0, 0][..],
        &[opcode::INQUIRY, 0, 0, 0, 36, 0],
        &[opcode::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[opcode::REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0],
    ] {
        assert_eq!(command(&lun, C, cdb).status, GOOD, "{cdb:?}");
    }
    assert_eq!(pr_in(&lun, C, pr_in::READ_KEYS, 64).status, GOOD);
}

#[test]
fn write_exclusive_and_exclusive_access_belong_to_the_holder_alone() {
    let lun = unit();
    register(&lun, A, 1);
    register(&lun, B, 2);
    reserve(&lun, A, 1, WE);
    // Under plain Write Exclusive even a registrant that is not the holder cannot write.
    assert!(is_conflict(&write(&lun, B, 0, 1)));
    assert!(is_conflict(&write(&lun, C, 0, 1)));
    assert_eq!(read(&lun, B, 0).status, GOOD);
    assert_eq!(read(&lun, C, 0).status, GOOD);
    assert_eq!(write(&lun, A, 0, 7).status, GOOD);
    assert_eq!(
        out(&lun, A, pr_out::RELEASE, WE, 1, 0).status,
        GOOD,
        "release"
    );
    // Releasing a Write Exclusive reservation tells nobody.
    assert!(lun.unit_attentions(B).is_empty());
    reserve(&lun, B, 2, EA);
    for nexus in [A, C] {
        assert!(is_conflict(&read(&lun, nexus, 0)));
        assert!(is_conflict(&write(&lun, nexus, 0, 9)));
    }
    assert_eq!(read(&lun, B, 0).data_in[0], 7);
    assert_eq!(medium(&lun, 0), 7);
}

#[test]
fn all_registrants_types_make_every_registrant_a_holder() {
    for (kind, exclusive) in [(WE_AR, false), (EA_AR, true)] {
        let lun = unit();
        register(&lun, A, 1);
        register(&lun, B, 2);
        reserve(&lun, A, 1, kind);
        assert_eq!(lun.pr_status().reservation.unwrap().holder, None);
        // B holds it too: reserving again with the same type is a no-op, and it writes.
        reserve(&lun, B, 2, kind);
        assert_eq!(write(&lun, B, 0, 5).status, GOOD);
        assert!(is_conflict(&write(&lun, C, 0, 6)));
        assert_eq!(is_conflict(&read(&lun, C, 0)), exclusive);
        // READ RESERVATION reports key zero for an all-registrants reservation.
        let data = pr_in(&lun, C, pr_in::READ_RESERVATION, 64).data_in;
        assert_eq!(data.len(), 8 + 16);
        assert_eq!(&data[8..16], &[0; 8]);
        assert_eq!(data[21], kind);
        // The reservation outlives its creator's registration, and ends with the last one.
        register_with(&lun, A, 1, 0);
        assert!(lun.pr_status().reservation.is_some());
        assert!(lun.unit_attentions(B).is_empty());
        register_with(&lun, B, 2, 0);
        assert_eq!(lun.pr_status().reservation, None);
        assert_eq!(write(&lun, C, 0, 6).status, GOOD);
    }
}

fn register_with(lun: &Lun, nexus: Nexus, key: u64, new_key: u64) {
    assert_eq!(
        out(lun, nexus, pr_out::REGISTER, 0, key, new_key).status,
        GOOD
    );
}

#[test]
fn register_checks_keys_and_counts_generations() {
    let lun = unit();
    // An unregistered nexus must send key zero.
    assert!(is_conflict(&out(&lun, A, pr_out::REGISTER, 0, 5, 6)));
    // Registering "no key" while unregistered does nothing, generation included.
    register_with(&lun, A, 0, 0);
    assert_eq!(keys(&lun), (0, vec![]));
    register(&lun, A, 0x1111);
    register(&lun, B, 0x2222);
    assert_eq!(keys(&lun), (2, vec![0x1111, 0x2222]));
    // A registered nexus must name its current key to change it ...
    assert!(is_conflict(&out(
        &lun,
        A,
        pr_out::REGISTER,
        0,
        0x9999,
        0x3333
    )));
    assert!(is_conflict(&out(&lun, A, pr_out::REGISTER, 0, 0, 0x3333)));
    assert_eq!(keys(&lun), (2, vec![0x1111, 0x2222]));
    register_with(&lun, A, 0x1111, 0x3333);
    assert_eq!(keys(&lun), (3, vec![0x3333, 0x2222]));
    // ... unless it ignores the existing key.
    let ignore = pr_out::REGISTER_AND_IGNORE_EXISTING_KEY;
    assert_eq!(out(&lun, B, ignore, 0, 0xDEAD, 0x4444).status, GOOD);
    assert_eq!(out(&lun, C, ignore, 0, 0xDEAD, 0x5555).status, GOOD);
    assert_eq!(keys(&lun), (5, vec![0x3333, 0x4444, 0x5555]));
    // Unregistering with either action.
    assert_eq!(out(&lun, C, ignore, 0, 0, 0).status, GOOD);
    register_with(&lun, B, 0x4444, 0);
    assert_eq!(keys(&lun), (7, vec![0x3333]));
    // RESERVE and RELEASE do not count.
    reserve(&lun, A, 0x3333, WE_RO);
    assert_eq!(out(&lun, A, pr_out::RELEASE, WE_RO, 0x3333, 0).status, GOOD);
    assert_eq!(keys(&lun).0, 7);
}

#[test]
fn reservation_commands_from_unregistered_or_wrong_key_nexuses_conflict() {
    let lun = unit();
    register(&lun, A, 1);
    for action in [
        pr_out::RESERVE,
        pr_out::RELEASE,
        pr_out::CLEAR,
        pr_out::PREEMPT,
        pr_out::PREEMPT_AND_ABORT,
    ] {
        assert!(is_conflict(&out(&lun, B, action, WE_RO, 0, 1)), "{action}");
        assert!(is_conflict(&out(&lun, A, action, WE_RO, 2, 1)), "{action}");
    }
    assert_eq!(lun.pr_status().registrations.len(), 1);
    assert_eq!(lun.pr_status().generation, 1);
    reserve(&lun, A, 1, WE_RO);
    // A second reservation, or the holder asking for another type, conflicts.
    register(&lun, B, 2);
    assert!(is_conflict(&out(&lun, B, pr_out::RESERVE, WE_RO, 2, 0)));
    assert!(is_conflict(&out(&lun, A, pr_out::RESERVE, EA_RO, 1, 0)));
    reserve(&lun, A, 1, WE_RO);
}

#[test]
fn invalid_fields_are_illegal_requests() {
    let lun = unit();
    register(&lun, A, 1);
    // Unknown type, non-LU scope.
    assert_eq!(
        sense(&out(&lun, A, pr_out::RESERVE, 0x2, 1, 0)),
        (5, 0x24, 0)
    );
    assert_eq!(
        sense(&out(&lun, A, pr_out::RESERVE, 0x10 | WE, 1, 0)),
        (5, 0x24, 0)
    );
    // REGISTER AND MOVE and reserved service actions.
    assert_eq!(sense(&out(&lun, A, 0x07, 0, 1, 2)), (5, 0x24, 0));
    assert_eq!(sense(&out(&lun, A, 0x1F, 0, 1, 2)), (5, 0x24, 0));
    // SPEC_I_PT is not supported.
    let spec = out_flags(&lun, B, pr_out::REGISTER, 0, 0, 2, SPEC_I_PT);
    assert_eq!(sense(&spec), (5, 0x26, 0));
    // A parameter list that is not 24 bytes.
    let (mut cdb, mut parameters) = pr_out_command(pr_out::REGISTER, 0, 0, 2, 0);
    cdb[8] = 23;
    parameters.pop();
    assert_eq!(
        sense(&lun.execute_from(B, &cdb, &parameters, &[0])),
        (5, 0x1A, 0)
    );
    // Unknown PR IN service action.
    assert_eq!(sense(&pr_in(&lun, A, 0x04, 64)), (5, 0x24, 0));
    // Releasing with the wrong type.
    reserve(&lun, A, 1, WE_RO);
    assert_eq!(
        sense(&out(&lun, A, pr_out::RELEASE, EA_RO, 1, 0)),
        (5, 0x26, 0x04)
    );
    // A non-holder's RELEASE succeeds without effect.
    register(&lun, B, 2);
    assert_eq!(out(&lun, B, pr_out::RELEASE, WE_RO, 2, 0).status, GOOD);
    assert!(lun.pr_status().reservation.is_some());
    // PREEMPT with a zero key needs an all-registrants reservation.
    assert_eq!(
        sense(&out(&lun, B, pr_out::PREEMPT, WE_RO, 2, 0)),
        (5, 0x26, 0)
    );
    assert_eq!(lun.pr_status().generation, 2);
}

#[test]
fn all_target_ports_and_aptpl_are_recorded_and_reported() {
    let lun = unit();
    let flags = ALL_TG_PT | APTPL;
    assert_eq!(
        out_flags(&lun, A, pr_out::REGISTER, 0, 0, 1, flags).status,
        GOOD
    );
    let status = lun.pr_status();
    assert!(status.registrations[0].all_target_ports);
    assert!(status.persist_through_power_loss);
    let capabilities = pr_in(&lun, B, pr_in::REPORT_CAPABILITIES, 8).data_in;
    assert_eq!(capabilities, [0, 8, 0x15, 0xB1, 0xEA, 0x01, 0, 0]);
    reserve(&lun, A, 1, WE_RO);
    // With APTPL the state survives a power cycle ...
    lun.power_cycle();
    assert_eq!(lun.pr_status().registrations.len(), 1);
    assert!(lun.pr_status().reservation.is_some());
    // ... without, it does not.
    register(&lun, B, 2);
    lun.power_cycle();
    assert_eq!(lun.pr_status().registrations, vec![]);
    assert_eq!(lun.pr_status().reservation, None);
    assert_eq!(
        pr_in(&lun, B, pr_in::REPORT_CAPABILITIES, 8).data_in[3],
        0xB0
    );
}

#[test]
fn read_full_status_describes_each_registration_with_its_transport_id() {
    let lun = unit();
    register(&lun, A, 0xA);
    assert_eq!(
        out_flags(&lun, B, pr_out::REGISTER, 0, 0, 0xB, ALL_TG_PT).status,
        GOOD
    );
    reserve(&lun, B, 0xB, EA_RO);
    let full = pr_in(&lun, C, pr_in::READ_FULL_STATUS, 1024).data_in;
    assert_eq!(&full[..4], &2u32.to_be_bytes());
    assert_eq!(&full[4..8], &96u32.to_be_bytes());
    assert_eq!(full.len(), 8 + 2 * 48);
    let (a, b) = (&full[8..56], &full[56..104]);
    assert_eq!(&a[..8], &0xAu64.to_be_bytes());
    assert_eq!((a[12], a[13]), (0, 0));
    assert_eq!(&b[..8], &0xBu64.to_be_bytes());
    assert_eq!((b[12], b[13]), (0x03, EA_RO));
    assert_eq!(&b[18..24], &[0, 1, 0, 0, 0, 24]);
    assert_eq!(&b[24..], &B.transport_id());
    let transport = A.transport_id();
    assert_eq!(transport[0], 0x06);
    assert_eq!(&a[24..], &transport);
    assert_eq!(transport[4] >> 4, 5);
    assert_eq!(&transport[4..12], &A.sas_address().to_be_bytes());
    // The allocation length truncates; the header still tells the whole length.
    let short = pr_in(&lun, C, pr_in::READ_FULL_STATUS, 12);
    assert_eq!(short.data_in.len(), 12);
    assert_eq!(&short.data_in[4..8], &96u32.to_be_bytes());
    let short_keys = pr_in(&lun, C, pr_in::READ_KEYS, 10).data_in;
    assert_eq!(short_keys.len(), 10);
    assert_eq!(&short_keys[4..8], &16u32.to_be_bytes());
    assert_eq!(pr_in(&lun, C, pr_in::READ_RESERVATION, 0).data_in, vec![]);
    let reservation = pr_in(&lun, C, pr_in::READ_RESERVATION, 64).data_in;
    assert_eq!(&reservation[8..16], &0xBu64.to_be_bytes());
    assert_eq!(reservation[21], EA_RO);
}

#[test]
fn preempt_takes_the_reservation_and_removes_the_holders_registrations() {
    let lun = unit();
    register(&lun, A, 0xA);
    register(&lun, B, 0xB);
    register(&lun, C, 0xC);
    reserve(&lun, A, 0xA, WE_RO);
    // B preempts A's key: A loses registration and reservation; B holds a new one.
    assert_eq!(out(&lun, B, pr_out::PREEMPT, EA_RO, 0xB, 0xA).status, GOOD);
    let status = lun.pr_status();
    assert_eq!(status.generation, 4);
    assert_eq!(status.key_of(A), None);
    assert_eq!(
        status.reservation,
        Some(PersistentReservation {
            kind: ReservationType::ExclusiveAccessRegistrantsOnly,
            holder: Some(B),
        })
    );
    // A hears its registration went; C, still registered, that the type changed.
    assert_eq!(drain(&lun, A), vec![pr_asc::REGISTRATIONS_PREEMPTED]);
    assert_eq!(drain(&lun, C), vec![pr_asc::RESERVATIONS_RELEASED]);
    assert!(drain(&lun, B).is_empty());
    assert!(is_conflict(&write(&lun, A, 0, 1)));
    assert!(is_conflict(&read(&lun, A, 0)));
    assert_eq!(write(&lun, C, 0, 2).status, GOOD);
    // Preempting a key nobody has conflicts and changes nothing.
    assert!(is_conflict(&out(
        &lun,
        B,
        pr_out::PREEMPT,
        EA_RO,
        0xB,
        0x77
    )));
    assert_eq!(lun.pr_status().generation, 4);
    // Preempting a non-holder's key removes only that registration.
    assert_eq!(out(&lun, B, pr_out::PREEMPT, WE, 0xB, 0xC).status, GOOD);
    let status = lun.pr_status();
    assert_eq!(status.generation, 5);
    assert_eq!(status.key_of(C), None);
    assert_eq!(
        status.reservation.unwrap().kind,
        ReservationType::ExclusiveAccessRegistrantsOnly
    );
    assert_eq!(drain(&lun, C), vec![pr_asc::REGISTRATIONS_PREEMPTED]);
}

#[test]
fn preempt_without_a_reservation_and_of_all_registrants() {
    let lun = unit();
    register(&lun, A, 0xA);
    register(&lun, B, 0xB);
    register(&lun, C, 0xB);
    // No reservation: every registration with the key goes, none is created.
    assert_eq!(out(&lun, A, pr_out::PREEMPT, WE, 0xA, 0xB).status, GOOD);
    assert_eq!(keys(&lun), (4, vec![0xA]));
    assert_eq!(lun.pr_status().reservation, None);
    assert_eq!(drain(&lun, B), vec![pr_asc::REGISTRATIONS_PREEMPTED]);
    assert_eq!(drain(&lun, C), vec![pr_asc::REGISTRATIONS_PREEMPTED]);
    // An all-registrants reservation taken over with key zero: everyone else goes.
    register(&lun, B, 0xB);
    register(&lun, C, 0xC);
    reserve(&lun, B, 0xB, WE_AR);
    assert_eq!(out(&lun, A, pr_out::PREEMPT, EA_RO, 0xA, 0).status, GOOD);
    let status = lun.pr_status();
    assert_eq!(status.registrations.len(), 1);
    assert_eq!(
        status.reservation,
        Some(PersistentReservation {
            kind: ReservationType::ExclusiveAccessRegistrantsOnly,
            holder: Some(A),
        })
    );
    assert_eq!(drain(&lun, B), vec![pr_asc::REGISTRATIONS_PREEMPTED]);
    // A holder preempting its own key changes the type and keeps its registration.
    register(&lun, B, 0xB);
    assert_eq!(out(&lun, A, pr_out::PREEMPT, WE_RO, 0xA, 0xA).status, GOOD);
    assert_eq!(lun.pr_status().key_of(A), Some(0xA));
    assert_eq!(
        lun.pr_status().reservation.unwrap().kind,
        ReservationType::WriteExclusiveRegistrantsOnly
    );
    assert_eq!(drain(&lun, B), vec![pr_asc::RESERVATIONS_RELEASED]);
}

#[test]
fn preempt_and_abort_aborts_the_victims_received_tasks() {
    let lun = unit();
    register(&lun, A, 0xA);
    register(&lun, B, 0xB);
    reserve(&lun, A, 0xA, WE_RO);
    // A write from A was received (and is held by its device) before B's PREEMPT AND ABORT.
    let held = lun.receive(A);
    let later_of_b = lun.receive(B);
    assert_eq!(
        out(&lun, B, pr_out::PREEMPT_AND_ABORT, WE_RO, 0xB, 0xA).status,
        GOOD
    );
    let cdb = [opcode::WRITE_10, 0, 0, 0, 0, 4, 0, 0, 1, 0];
    assert_eq!(lun.execute_task(held, &cdb, &[0x5A; 512], &[0]), None);
    assert_eq!(medium(&lun, 4), 0);
    // The preemptor's own tasks are untouched.
    assert_eq!(
        lun.execute_task(later_of_b, &cdb, &[0x5B; 512], &[0])
            .unwrap()
            .status,
        GOOD
    );
    // A's new commands: the unit attention first, then conflicts.
    let first = write(&lun, A, 5, 1);
    assert_eq!(sense(&first), (6, 0x2A, 0x05));
    assert!(is_conflict(&write(&lun, A, 5, 1)));
    assert_eq!(medium(&lun, 5), 0);
    // Plain PREEMPT aborts nothing.
    register(&lun, A, 0xA);
    let held = lun.receive(A);
    assert_eq!(out(&lun, B, pr_out::PREEMPT, WE_RO, 0xB, 0xA).status, GOOD);
    assert!(lun.execute_task(held, &cdb, &[0; 512], &[0]).is_some());
}

#[test]
fn clear_removes_everything_and_tells_the_other_registrants() {
    let lun = unit();
    register(&lun, A, 0xA);
    register(&lun, B, 0xB);
    reserve(&lun, A, 0xA, EA_RO);
    assert_eq!(out(&lun, B, pr_out::CLEAR, 0, 0xB, 0).status, GOOD);
    assert_eq!(keys(&lun), (3, vec![]));
    assert_eq!(lun.pr_status().reservation, None);
    assert_eq!(drain(&lun, A), vec![pr_asc::RESERVATIONS_PREEMPTED]);
    assert!(drain(&lun, B).is_empty());
    assert_eq!(write(&lun, C, 0, 1).status, GOOD);
}

#[test]
fn releasing_or_unregistering_a_registrants_only_reservation_tells_the_registrants() {
    let lun = unit();
    register(&lun, A, 0xA);
    register(&lun, B, 0xB);
    reserve(&lun, A, 0xA, WE_RO);
    assert_eq!(out(&lun, A, pr_out::RELEASE, WE_RO, 0xA, 0).status, GOOD);
    assert_eq!(drain(&lun, B), vec![pr_asc::RESERVATIONS_RELEASED]);
    assert!(drain(&lun, A).is_empty());
    reserve(&lun, A, 0xA, EA_RO);
    register_with(&lun, A, 0xA, 0);
    assert_eq!(lun.pr_status().reservation, None);
    assert_eq!(drain(&lun, B), vec![pr_asc::RESERVATIONS_RELEASED]);
}

#[test]
fn unit_attentions_spare_inquiry_and_report_luns_and_are_reported_once() {
    let lun = unit();
    register(&lun, A, 0xA);
    register(&lun, B, 0xB);
    assert_eq!(out(&lun, A, pr_out::CLEAR, 0, 0xA, 0).status, GOOD);
    assert_eq!(lun.unit_attentions(B), vec![pr_asc::RESERVATIONS_PREEMPTED]);
    assert_eq!(
        command(&lun, B, &[opcode::INQUIRY, 0, 0, 0, 36, 0]).status,
        GOOD
    );
    let report = [opcode::REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0];
    assert_eq!(command(&lun, B, &report).status, GOOD);
    let tur = command(&lun, B, &[opcode::TEST_UNIT_READY, 0, 0, 0, 0, 0]);
    assert_eq!(sense(&tur), (6, 0x2A, 0x03));
    assert_eq!(
        command(&lun, B, &[opcode::TEST_UNIT_READY, 0, 0, 0, 0, 0]).status,
        GOOD
    );
    // Pending on one nexus only.
    assert!(lun.unit_attentions(A).is_empty());
}

fn reserve6(lun: &Lun, nexus: Nexus) -> Outcome {
    command(lun, nexus, &[opcode::RESERVE_6, 0, 0, 0, 0, 0])
}

fn release6(lun: &Lun, nexus: Nexus) -> Outcome {
    command(lun, nexus, &[opcode::RELEASE_6, 0, 0, 0, 0, 0])
}

#[test]
fn scsi2_reserve_excludes_other_nexuses() {
    let lun = unit();
    assert_eq!(reserve6(&lun, A).status, GOOD);
    assert_eq!(reserve6(&lun, A).status, GOOD);
    assert_eq!(lun.pr_status().scsi2_holder, Some(A));
    assert!(is_conflict(&reserve6(&lun, B)));
    assert!(is_conflict(&write(&lun, B, 0, 1)));
    assert!(is_conflict(&read(&lun, B, 0)));
    assert!(is_conflict(&command(
        &lun,
        B,
        &[opcode::TEST_UNIT_READY, 0, 0, 0, 0, 0]
    )));
    assert_eq!(
        command(&lun, B, &[opcode::INQUIRY, 0, 0, 0, 36, 0]).status,
        GOOD
    );
    // Another nexus's RELEASE succeeds and releases nothing.
    assert_eq!(release6(&lun, B).status, GOOD);
    assert_eq!(lun.pr_status().scsi2_holder, Some(A));
    assert_eq!(medium(&lun, 0), 0);
    assert_eq!(write(&lun, A, 0, 3).status, GOOD);
    // Persistent reservation commands conflict while it exists, even from the holder.
    assert!(is_conflict(&out(&lun, A, pr_out::REGISTER, 0, 0, 1)));
    assert!(is_conflict(&pr_in(&lun, B, pr_in::READ_KEYS, 64)));
    // RESERVE(10) / RELEASE(10) work alike; third-party reservations are refused.
    assert_eq!(
        command(&lun, A, &[opcode::RELEASE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0]).status,
        GOOD
    );
    assert_eq!(lun.pr_status().scsi2_holder, None);
    let third_party = [opcode::RESERVE_10, 0x10, 0, 7, 0, 0, 0, 0, 0, 0];
    assert_eq!(sense(&command(&lun, B, &third_party)), (5, 0x24, 0));
    let reserve10 = [opcode::RESERVE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(command(&lun, B, &reserve10).status, GOOD);
    assert!(is_conflict(&write(&lun, A, 0, 1)));
}

#[test]
fn resets_end_scsi2_reservations_but_not_persistent_ones() {
    let lun = unit();
    assert_eq!(reserve6(&lun, A).status, GOOD);
    lun.nexus_loss(B);
    assert_eq!(lun.pr_status().scsi2_holder, Some(A));
    lun.nexus_loss(A);
    assert_eq!(lun.pr_status().scsi2_holder, None);
    assert_eq!(reserve6(&lun, B).status, GOOD);
    lun.logical_unit_reset();
    assert_eq!(lun.pr_status().scsi2_holder, None);
    register(&lun, A, 1);
    reserve(&lun, A, 1, EA);
    lun.logical_unit_reset();
    assert!(lun.pr_status().reservation.is_some());
}

#[test]
fn scsi2_commands_under_persistent_registrations() {
    let lun = unit();
    register(&lun, A, 1);
    // Registered but no reservation: RESERVE/RELEASE conflict from everyone.
    assert!(is_conflict(&reserve6(&lun, A)));
    assert!(is_conflict(&reserve6(&lun, C)));
    register(&lun, B, 2);
    reserve(&lun, A, 1, WE_RO);
    // The holder, and a registrant of a registrants-only type: GOOD without effect.
    for nexus in [A, B] {
        assert_eq!(reserve6(&lun, nexus).status, GOOD);
        assert_eq!(release6(&lun, nexus).status, GOOD);
    }
    assert_eq!(lun.pr_status().scsi2_holder, None);
    assert!(lun.pr_status().reservation.is_some());
    assert!(is_conflict(&reserve6(&lun, C)));
    assert!(is_conflict(&release6(&lun, C)));
}

/// One step of the property test, from nexus `who` (0-2).
#[derive(Clone, Debug)]
enum Step {
    /// REGISTER (or with `ignore`, REGISTER AND IGNORE EXISTING KEY) of `new_key`, naming the
    /// current key if `right_key`, else a wrong one.
    Register {
        who: usize,
        new_key: u64,
        right_key: bool,
        ignore: bool,
    },
    /// RESERVE, RELEASE or CLEAR (`action`) with TYPE `code`.
    Simple {
        who: usize,
        action: u8,
        code: u8,
        right_key: bool,
    },
    /// PREEMPT (AND ABORT) of `victim_key` with TYPE `code`.
    Preempt {
        who: usize,
        victim_key: u64,
        code: u8,
        right_key: bool,
        abort: bool,
    },
    /// WRITE(10) of one block at `lba`.
    Write { who: usize, lba: u8 },
}

/// What a PERSISTENT RESERVE OUT ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Good,
    Conflict,
    Illegal,
}

fn verdict(outcome: &Outcome) -> Verdict {
    match outcome.status {
        GOOD => Verdict::Good,
        RESERVATION_CONFLICT => Verdict::Conflict,
        _ => {
            assert_eq!(outcome.sense[2], sense_key::ILLEGAL_REQUEST, "{outcome:?}");
            Verdict::Illegal
        }
    }
}

/// The reference model, written from the SPC-4 rules as a table of registrations plus an
/// optional (type code, holder) pair, with `None` as the holder of all-registrants types.
#[derive(Clone, Debug, Default)]
struct Model {
    keys: BTreeMap<usize, u64>,
    reservation: Option<(u8, Option<usize>)>,
    generation: u32,
}

impl Model {
    fn all_registrants(code: u8) -> bool {
        code == WE_AR || code == EA_AR
    }

    fn holds(&self, who: usize) -> bool {
        match self.reservation {
            Some((code, None)) if Self::all_registrants(code) => self.keys.contains_key(&who),
            Some((_, holder)) => holder == Some(who),
            None => false,
        }
    }

    /// Who may write: SBC-3 table 13's WRITE row.
    fn may_write(&self, who: usize) -> bool {
        match self.reservation {
            None => true,
            Some((code, _)) if code == WE || code == EA => self.holds(who),
            Some(_) => self.keys.contains_key(&who),
        }
    }

    fn drop_registrations(&mut self, gone: impl Fn(usize, u64) -> bool) {
        self.keys.retain(|&who, &mut key| !gone(who, key));
        let orphaned = match self.reservation {
            Some((code, None)) => Self::all_registrants(code) && self.keys.is_empty(),
            Some((_, Some(holder))) => !self.keys.contains_key(&holder),
            None => false,
        };
        if orphaned {
            self.reservation = None;
        }
    }

    fn establish(&mut self, who: usize, code: u8) {
        let holder = (!Self::all_registrants(code)).then_some(who);
        self.reservation = Some((code, holder));
    }

    fn register(&mut self, who: usize, named: u64, new_key: u64, ignore: bool) -> Verdict {
        let current = self.keys.get(&who).copied();
        if !ignore && named != current.unwrap_or(0) {
            return Verdict::Conflict;
        }
        match (current, new_key) {
            (None, 0) => return Verdict::Good,
            (_, 0) => self.drop_registrations(|w, _| w == who),
            (_, key) => {
                self.keys.insert(who, key);
            }
        }
        self.generation += 1;
        Verdict::Good
    }

    fn simple(&mut self, who: usize, action: u8, code: u8) -> Verdict {
        let valid = ReservationType::from_raw(code).is_some();
        match action {
            pr_out::RESERVE => match self.reservation {
                _ if !valid => Verdict::Illegal,
                None => {
                    self.establish(who, code);
                    Verdict::Good
                }
                Some((held, _)) if held == code && self.holds(who) => Verdict::Good,
                Some(_) => Verdict::Conflict,
            },
            pr_out::RELEASE => match self.reservation {
                Some((held, _)) if self.holds(who) => {
                    if held != code {
                        return Verdict::Illegal;
                    }
                    self.reservation = None;
                    Verdict::Good
                }
                _ => Verdict::Good,
            },
            _ => {
                self.keys.clear();
                self.reservation = None;
                self.generation += 1;
                Verdict::Good
            }
        }
    }

    fn preempt(&mut self, who: usize, victim_key: u64, code: u8) -> Verdict {
        let holder_key = match self.reservation {
            Some((_, Some(holder))) => self.keys.get(&holder).copied(),
            _ => None,
        };
        let all = self
            .reservation
            .is_some_and(|(held, _)| Self::all_registrants(held));
        if (all && victim_key == 0) || (holder_key.is_some() && holder_key == Some(victim_key)) {
            if ReservationType::from_raw(code).is_none() {
                return Verdict::Illegal;
            }
            self.reservation = None;
            self.drop_registrations(|w, k| w != who && (victim_key == 0 || k == victim_key));
            self.establish(who, code);
        } else {
            if victim_key == 0 {
                return Verdict::Illegal;
            }
            if !self.keys.values().any(|&k| k == victim_key) {
                return Verdict::Conflict;
            }
            self.drop_registrations(|w, k| w != who && k == victim_key);
        }
        self.generation += 1;
        Verdict::Good
    }

    fn apply(&mut self, step: &Step) -> Option<Verdict> {
        let (who, right_key) = match *step {
            Step::Register { .. } | Step::Write { .. } => return None,
            Step::Simple { who, right_key, .. } | Step::Preempt { who, right_key, .. } => {
                (who, right_key)
            }
        };
        // Everything but REGISTER needs a registered nexus naming its own key.
        if !right_key || !self.keys.contains_key(&who) {
            return Some(Verdict::Conflict);
        }
        Some(match *step {
            Step::Simple { action, code, .. } => self.simple(who, action, code),
            Step::Preempt {
                victim_key, code, ..
            } => self.preempt(who, victim_key, code),
            _ => return None,
        })
    }
}

fn step() -> impl Strategy<Value = Step> {
    let who = 0..3usize;
    let key = prop_oneof![Just(0u64), 1..4u64];
    // Valid types mostly, and now and then the reserved code 2h.
    let code = prop_oneof![
        6 => prop::sample::select(vec![WE, EA, WE_RO, EA_RO, WE_AR, EA_AR]),
        1 => Just(0x2u8),
    ];
    let right = prop::bool::weighted(0.85);
    prop_oneof![
        3 => (who.clone(), key.clone(), right, any::<bool>()).prop_map(
            |(who, new_key, right_key, ignore)| Step::Register { who, new_key, right_key, ignore }
        ),
        3 => (
            who.clone(),
            prop::sample::select(vec![pr_out::RESERVE, pr_out::RELEASE, pr_out::CLEAR]),
            code.clone(),
            right
        )
            .prop_map(|(who, action, code, right_key)| Step::Simple { who, action, code, right_key }),
        2 => (who.clone(), key, code, right, any::<bool>()).prop_map(
            |(who, victim_key, code, right_key, abort)| Step::Preempt {
                who, victim_key, code, right_key, abort
            }
        ),
        4 => (who, 0..4u8).prop_map(|(who, lba)| Step::Write { who, lba }),
    ]
}

proptest! {
    #[test]
    fn random_reservation_traffic_matches_the_model(steps in prop::collection::vec(step(), 1..60)) {
        let lun = unit();
        let nexus = [A, B, C];
        let mut model = Model::default();
        for (index, step) in steps.iter().enumerate() {
            let who = match *step {
                Step::Register { who, .. } | Step::Simple { who, .. }
                | Step::Preempt { who, .. } | Step::Write { who, .. } => who,
            };
            let me = nexus[who];
            // Unit attentions are tested on their own; clear them so each command is judged
            // on reservations alone.
            drain(&lun, me);
            let current = model.keys.get(&who).copied().unwrap_or(0);
            let named = |right: bool| if right { current } else { current + 100 };
            let before = model.generation;
            match *step {
                Step::Register { new_key, right_key, ignore, .. } => {
                    let action = if ignore {
                        pr_out::REGISTER_AND_IGNORE_EXISTING_KEY
                    } else {
                        pr_out::REGISTER
                    };
                    let got = verdict(&out(&lun, me, action, 0, named(right_key), new_key));
                    let expected = model.register(who, named(right_key), new_key, ignore);
                    prop_assert_eq!(got, expected, "step {}: {:?}", index, step);
                }
                Step::Simple { action, code, right_key, .. } => {
                    let got = verdict(&out(&lun, me, action, code, named(right_key), 0));
                    prop_assert_eq!(Some(got), model.apply(step), "step {}: {:?}", index, step);
                }
                Step::Preempt { victim_key, code, right_key, abort, .. } => {
                    let action = if abort { pr_out::PREEMPT_AND_ABORT } else { pr_out::PREEMPT };
                    let got = verdict(&out(&lun, me, action, code, named(right_key), victim_key));
                    prop_assert_eq!(Some(got), model.apply(step), "step {}: {:?}", index, step);
                }
                Step::Write { lba, .. } => {
                    let fill = (index as u8).wrapping_add(1);
                    let old = medium(&lun, lba);
                    let result = write(&lun, me, lba, fill);
                    if model.may_write(who) {
                        prop_assert_eq!(result.status, GOOD, "step {}: {:?}", index, step);
                        prop_assert_eq!(medium(&lun, lba), fill);
                    } else {
                        prop_assert!(is_conflict(&result), "step {}: {:?} {:?}", index, step, result);
                        prop_assert_eq!(medium(&lun, lba), old);
                    }
                }
            }
            // PRgeneration moves exactly when the model says (REGISTER, CLEAR, PREEMPT), and
            // the registrations and reservation agree.
            prop_assert!(model.generation == before || model.generation == before + 1);
            let (generation, mut got_keys) = keys(&lun);
            prop_assert_eq!(generation, model.generation, "step {}: {:?}", index, step);
            let mut want_keys: Vec<u64> = model.keys.values().copied().collect();
            got_keys.sort_unstable();
            want_keys.sort_unstable();
            prop_assert_eq!(got_keys, want_keys);
            let status = lun.pr_status();
            let reservation = status.reservation.map(|r| {
                (r.kind.raw(), r.holder.map(|h| nexus.iter().position(|&n| n == h).unwrap()))
            });
            prop_assert_eq!(reservation, model.reservation, "step {}: {:?}", index, step);
        }
    }
}

/// A CDB biased towards the reservation commands, with random fields.
fn any_command() -> impl Strategy<Value = (usize, Vec<u8>, Vec<u8>)> {
    let op = prop::sample::select(vec![
        opcode::PERSISTENT_RESERVE_IN,
        opcode::PERSISTENT_RESERVE_OUT,
        opcode::RESERVE_6,
        opcode::RELEASE_6,
        opcode::RESERVE_10,
        opcode::RELEASE_10,
        opcode::WRITE_10,
        opcode::READ_10,
        opcode::TEST_UNIT_READY,
        opcode::REQUEST_SENSE,
    ]);
    (
        0..3usize,
        op,
        prop::collection::vec(any::<u8>(), 0..16),
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(who, op, mut rest, data)| {
            rest.insert(0, op);
            (who, rest, data)
        })
}

proptest! {
    #[test]
    fn random_commands_from_several_nexuses_never_panic(
        commands in prop::collection::vec(any_command(), 1..40)
    ) {
        let lun = unit();
        let nexus = [A, B, C];
        for (who, cdb, data) in commands {
            let outcome = lun.execute_from(nexus[who], &cdb, &data, &[0]);
            // CHECK CONDITION carries sense; GOOD and RESERVATION CONFLICT carry none.
            match outcome.status {
                CHECK_CONDITION => prop_assert_eq!(outcome.sense.len(), 18),
                GOOD | RESERVATION_CONFLICT => prop_assert!(outcome.sense.is_empty()),
                other => prop_assert!(false, "status {other:#x}"),
            }
        }
    }
}
