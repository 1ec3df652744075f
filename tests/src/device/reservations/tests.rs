//! Unit tests of the reservation state, driven through the logical unit as SCSI commands from
//! several nexuses.

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
