//! Scenarios: task management, resets, lost interrupts, `DEVICE_NEEDS_RESET` and power
//! transitions, each with hundreds of requests held by the device.
//!
//! Every scenario checks the same three things besides its own: each SRB is completed exactly
//! once (the simulator records any violation, [`Machine::finish`] asserts there is none), no
//! write reaches a LUN after its SRB completed with a failure (the device's write journal,
//! against the completion times the simulator records, and a read-back of every region
//! written), and I/O works afterwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rvscsi::storport::{
    SRB_STATUS_ABORT_FAILED, SRB_STATUS_ABORTED, SRB_STATUS_BUS_RESET, SRB_STATUS_BUSY,
    SRB_STATUS_SUCCESS,
};
use rvscsi_tests::device::{
    CompletionMode, DeviceOptions, FaultAction, RequestInfo, TmfAction, TmfRecord,
};
use rvscsi_tests::harness::Machine;
use rvscsi_tests::scenario::{
    Io, LONG_TIMEOUT, ResumeCheck, anonymous_disk, boot_standard, check_and_finish, complete_all,
    fault_by_unit, first_block_read, full_resets, read10, stamped, statuses, submit_load, tmf_hook,
    wait_held, wait_until, write10,
};
use rvscsi_tests::sim::abi::{SRB_FUNCTION_RESET_DEVICE, SRB_FUNCTION_RESET_LOGICAL_UNIT};
use rvscsi_tests::sim::{Completion, Request, SimOptions};
use rvscsi_tests::tmf_counter;
use virtio_core::scsi::{Response, TmfSubtype};

const BLOCKS: u64 = 1 << 16; // 32 MiB per LUN
/// Requests the device holds in the big scenarios.
const IN_FLIGHT: usize = 300;
/// The miniport's task management deadline, and a margin for the timer's period.
const DEADLINE: Duration = Duration::from_secs(2);
/// Where the end of every scenario checks that I/O works: every LUN, every processor.
const RESUME: ResumeCheck = ResumeCheck {
    first_lba: 60_000,
    placements: &[(0, (0, 0)), (1, (0, 1)), (2, (1, 0)), (3, (0, 0))],
};

fn sim(messages: Option<u32>) -> SimOptions {
    SimOptions {
        processors: 4,
        messages,
        // The miniport ends a reset asynchronously, within its task management deadline.
        reset_grace: Some(Duration::from_secs(5)),
        ..SimOptions::default()
    }
}

/// A device whose `cmd_per_lun` lets StorPort keep [`IN_FLIGHT`] requests on one LUN (the
/// port driver holds back whatever goes beyond a unit's queue depth).
fn deep() -> DeviceOptions {
    DeviceOptions {
        cmd_per_lun: IN_FLIGHT as u32,
        ..DeviceOptions::default()
    }
}

/// The standard bus (LUNs 0:0, 0:1 and 1:0), the write journal on.
fn machine(sim: SimOptions, device: DeviceOptions) -> Machine {
    let machine = boot_standard(sim, device, || anonymous_disk(BLOCKS).unwrap()).unwrap();
    machine.device.journal_writes(true);
    machine
}

fn lba_of(cdb: &[u8]) -> Option<u32> {
    matches!(cdb.first(), Some(0x28 | 0x2A))
        .then(|| u32::from_be_bytes([cdb[2], cdb[3], cdb[4], cdb[5]]))
}

/// Submits `count` requests spread evenly over `units` and waits until the device holds them
/// all.
fn submit_held(machine: &Machine, units: &[(u8, u8)], count: usize) -> Vec<Io> {
    let per_unit = count / units.len();
    let load = units
        .iter()
        .flat_map(|&(target, lun)| submit_load(machine, target, lun, per_unit, 0))
        .collect();
    wait_held(machine, count);
    load
}

/// Waits for every request of `load` and checks that each completed with `status`; `case`
/// names the scenario's variant in the failure message.
fn complete_all_with(
    machine: &Machine,
    load: &[Io],
    status: u8,
    case: impl std::fmt::Debug,
) -> Vec<(Io, Completion)> {
    let done = complete_all(machine, load);
    assert_eq!(
        statuses(&done),
        HashMap::from([(status, load.len())]),
        "{case:?}"
    );
    done
}

/// A LUN reset of `target`/`lun`, which must succeed; how long it took.
fn reset_lun(machine: &Machine, target: u8, lun: u8) -> Duration {
    let mut reset = Request::control(SRB_FUNCTION_RESET_LOGICAL_UNIT, target, lun);
    // Scaled like every simulated timeout (1 s = 10 ms): StorPort must not time the reset out
    // and call HwResetBus while the miniport's deadline (real time) runs.
    reset.timeout_seconds = LONG_TIMEOUT;
    let started = Instant::now();
    let done = machine.adapter.execute(1, &reset).unwrap();
    assert_eq!(
        done.status(),
        SRB_STATUS_SUCCESS,
        "LUN reset of {target}:{lun}"
    );
    started.elapsed()
}

/// The one task management function the device received, which must be `subtype`.
fn only_tmf(machine: &Machine, subtype: TmfSubtype) -> TmfRecord {
    let log = machine.device.tmf_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].info.subtype, subtype.raw());
    log[0]
}

/// Waits (up to a second) for `condition`: for counters the miniport updates after the
/// completions a test waits for.
fn eventually(what: &str, condition: impl Fn() -> bool) {
    assert!(wait_until(Duration::from_secs(1), condition), "{what}");
}

macro_rules! recovery_counter {
    ($machine:expr, $name:ident) => {
        $machine
            .miniport()
            .unwrap()
            .recovery()
            .$name
            .load(Ordering::Relaxed)
    };
}

#[test]
fn a_lun_reset_with_300_requests_held_resets_that_lun_only() {
    let machine = machine(sim(None), deep());
    // LUN 0:1 holds everything; LUN 0:0 (the one vioscsi would reset) keeps working, slowly.
    fault_by_unit(&machine, |target, lun| match (target, lun) {
        (0, 1) => FaultAction::Drop,
        _ => FaultAction::Delay(Duration::from_millis(300)),
    });
    let held = submit_held(&machine, &[(0, 1)], IN_FLIGHT);
    let bystanders = submit_load(&machine, 0, 0, 40, 0);
    let took = reset_lun(&machine, 0, 1);
    // Information only, never asserted: the figure for the report.
    eprintln!("LUN reset with {IN_FLIGHT} requests held: {took:?}");
    let held = complete_all_with(&machine, &held, SRB_STATUS_BUS_RESET, ());
    let bystanders = complete_all_with(&machine, &bystanders, SRB_STATUS_SUCCESS, ());
    let tmf = only_tmf(&machine, TmfSubtype::LogicalUnitReset);
    assert_eq!((tmf.info.target, tmf.info.lun), (0, 1));
    assert_eq!(tmf.response, Some(Response::FUNCTION_COMPLETE));
    assert_eq!(full_resets(&machine), 0);
    assert_eq!(tmf_counter!(machine, lun_resets), 1);
    assert_eq!(tmf_counter!(machine, completed), 1);
    check_and_finish(machine, &[&held, &bystanders], &RESUME);
}

#[test]
fn a_target_reset_resets_every_lun_of_that_target_only() {
    let machine = machine(sim(None), deep());
    fault_by_unit(&machine, |target, _| match target {
        0 => FaultAction::Drop,
        _ => FaultAction::Delay(Duration::from_millis(200)),
    });
    let held = submit_held(&machine, &[(0, 0), (0, 1)], IN_FLIGHT);
    let bystanders = submit_load(&machine, 1, 0, 40, 0);
    let mut reset = Request::control(SRB_FUNCTION_RESET_DEVICE, 0, 0);
    reset.timeout_seconds = LONG_TIMEOUT;
    let reset = machine.adapter.execute(0, &reset).unwrap();
    assert_eq!(reset.status(), SRB_STATUS_SUCCESS);
    let held = complete_all_with(&machine, &held, SRB_STATUS_BUS_RESET, ());
    complete_all_with(&machine, &bystanders, SRB_STATUS_SUCCESS, ());
    assert_eq!(only_tmf(&machine, TmfSubtype::ITNexusReset).info.target, 0);
    assert_eq!(full_resets(&machine), 0);
    check_and_finish(machine, &[&held], &RESUME);
}

/// The device fails the function: the full reset takes everything back, the bystanders too.
#[test]
fn a_failed_lun_reset_escalates_to_a_full_reset() {
    for response in [Response::FunctionRejected, Response::Failure] {
        let machine = machine(sim(None), deep());
        fault_by_unit(&machine, |target, lun| match (target, lun) {
            (0, 1) => FaultAction::Drop,
            // Long enough to be caught in flight by the full reset.
            _ => FaultAction::Delay(Duration::from_secs(3)),
        });
        tmf_hook(&machine, TmfAction::Respond(response));
        let held = submit_load(&machine, 0, 1, IN_FLIGHT, 0);
        let bystanders = submit_load(&machine, 0, 0, 40, 0);
        wait_held(&machine, IN_FLIGHT + 40);
        reset_lun(&machine, 0, 1);
        let mut all = held;
        all.extend(bystanders);
        let all = complete_all_with(&machine, &all, SRB_STATUS_BUS_RESET, response);
        assert_eq!(machine.device.tmf_log()[0].response, Some(response));
        assert_eq!(full_resets(&machine), 1, "{response:?}");
        assert_eq!(tmf_counter!(machine, failed), 1, "{response:?}");
        assert_eq!(tmf_counter!(machine, superseded), 1, "{response:?}");
        check_and_finish(machine, &[&all], &RESUME);
    }
}

#[test]
fn a_lun_reset_never_answered_escalates_at_the_deadline() {
    let machine = machine(sim(None), deep());
    fault_by_unit(&machine, |_, _| FaultAction::Drop);
    tmf_hook(&machine, TmfAction::Ignore);
    let held = submit_held(&machine, &[(0, 1)], IN_FLIGHT);
    let took = reset_lun(&machine, 0, 1);
    eprintln!("LUN reset never answered, escalated after {took:?}");
    assert!(
        took >= DEADLINE && took < DEADLINE * 3,
        "the escalation came after {took:?}"
    );
    let held = complete_all_with(&machine, &held, SRB_STATUS_BUS_RESET, ());
    assert_eq!(machine.device.tmf_log()[0].response, None);
    assert_eq!(full_resets(&machine), 1);
    assert_eq!(tmf_counter!(machine, timed_out), 1);
    check_and_finish(machine, &[&held], &RESUME);
}

/// The device answers FUNCTION COMPLETE but keeps the commands. Those that come back before
/// the deadline complete with their real status and no reset is needed; those that do not are
/// taken back by the full reset at the deadline, and never executed afterwards.
#[test]
fn covered_commands_the_device_keeps_are_waited_for_then_reset() {
    for (hold, returned) in [
        (FaultAction::Delay(Duration::from_millis(500)), true),
        (FaultAction::Delay(Duration::from_secs(4)), false),
    ] {
        let machine = machine(sim(None), deep());
        let action = hold.clone();
        fault_by_unit(&machine, move |_, _| action.clone());
        tmf_hook(&machine, TmfAction::AnswerWithoutCancelling);
        let held = submit_held(&machine, &[(0, 1)], IN_FLIGHT);
        let took = reset_lun(&machine, 0, 1);
        let held = if returned {
            let held = complete_all_with(&machine, &held, SRB_STATUS_SUCCESS, &hold);
            assert!(took < DEADLINE, "{took:?}");
            assert_eq!(full_resets(&machine), 0);
            assert_eq!(tmf_counter!(machine, waited), 1);
            held
        } else {
            let held = complete_all_with(&machine, &held, SRB_STATUS_BUS_RESET, &hold);
            assert!(took >= DEADLINE, "{took:?}");
            assert_eq!(full_resets(&machine), 1);
            assert_eq!(tmf_counter!(machine, stranded), 1);
            held
        };
        check_and_finish(machine, &[&held], &RESUME);
    }
}

/// StorPort's timeout recovery: HwResetBus polls, then resets the nexus of each target that
/// still holds requests. Answered, the requests come back reset; never answered, the full
/// reset takes them back at the deadline.
#[test]
fn hw_reset_bus_resets_each_target_holding_requests() {
    for action in [TmfAction::Normal, TmfAction::Ignore] {
        let machine = machine(sim(None), deep());
        fault_by_unit(&machine, |_, _| FaultAction::Drop);
        tmf_hook(&machine, action);
        let mut held = submit_held(&machine, &[(0, 0), (1, 0)], IN_FLIGHT);
        // One request with a short timeout: StorPort calls HwResetBus for it.
        let mut trigger = Request::new(0, 1, &read10(0, 1)).reading(512);
        trigger.timeout_seconds = 1;
        let trigger = machine.adapter.submit(0, &trigger).unwrap();
        held.push(Io {
            ticket: trigger,
            target: 0,
            lun: 1,
            lba: 0,
            data: None,
        });
        let held = complete_all_with(&machine, &held, SRB_STATUS_BUS_RESET, action);
        let mut targets: Vec<_> = machine
            .device
            .tmf_log()
            .iter()
            .map(|record| {
                assert_eq!(record.info.subtype, TmfSubtype::ITNexusReset.raw());
                record.info.target
            })
            .collect();
        targets.sort_unstable();
        assert_eq!(targets, [0, 1], "{action:?}");
        assert!(recovery_counter!(machine, bus_resets) >= 1);
        let expected_resets = u64::from(action == TmfAction::Ignore);
        assert_eq!(full_resets(&machine), expected_resets, "{action:?}");
        // The first function past its deadline escalates; the reset ends the other one too.
        assert_eq!(tmf_counter!(machine, timed_out), expected_resets);
        // Ended after the requests were failed, which is what the test waited for.
        eventually("both functions ended", || {
            tmf_counter!(machine, superseded) == expected_resets * 2
        });
        check_and_finish(machine, &[&held], &RESUME);
    }
}

#[test]
fn an_abort_ends_its_command_and_nothing_else() {
    // Both SRB shapes keep the request to abort in NextSrb.
    for force_classic in [false, true] {
        let options = SimOptions {
            force_scsi_request_block: force_classic,
            ..sim(None)
        };
        abort_one_of_300(machine(options, deep()));
    }
}

fn abort_one_of_300(machine: Machine) {
    // Every command waits 1.5 s; the tags are noted by LBA.
    let tags = Arc::new(Mutex::new(HashMap::new()));
    let noted = Arc::clone(&tags);
    machine
        .device
        .set_fault_hook(Some(Arc::new(move |info: &RequestInfo| {
            if let Some(lba) = lba_of(&info.cdb) {
                noted
                    .lock()
                    .unwrap()
                    .insert((info.target, info.lun, lba), info.tag);
                FaultAction::Delay(Duration::from_millis(1500))
            } else {
                FaultAction::Normal
            }
        })));
    let load = submit_load(&machine, 0, 0, IN_FLIGHT, 0);
    wait_held(&machine, IN_FLIGHT);
    let victim = load[42].clone(); // a write
    assert!(victim.data.is_some());
    let mut abort = Request::abort(0, 0, victim.ticket);
    abort.timeout_seconds = LONG_TIMEOUT;
    let abort = machine.adapter.execute(2, &abort).unwrap();
    assert_eq!(abort.status(), SRB_STATUS_SUCCESS);
    let done = complete_all(&machine, &load);
    for (io, completion) in &done {
        let expected = if io.ticket == victim.ticket {
            SRB_STATUS_ABORTED
        } else {
            SRB_STATUS_SUCCESS
        };
        assert_eq!(completion.status(), expected, "{io:?}");
    }
    let tmf = only_tmf(&machine, TmfSubtype::AbortTask);
    let tag = tags.lock().unwrap()[&(0, 0, victim.lba)];
    assert_eq!((tmf.info.target, tmf.info.lun, tmf.info.tag), (0, 0, tag));
    assert_eq!(tmf_counter!(&machine, aborts), 1);
    assert_eq!(full_resets(&machine), 0);
    // A command no longer in flight cannot be aborted.
    let again = machine
        .adapter
        .execute(2, &Request::abort(0, 0, victim.ticket))
        .unwrap();
    assert_eq!(again.status(), SRB_STATUS_ABORT_FAILED);
    assert_eq!(machine.device.tmf_log().len(), 1);
    check_and_finish(machine, &[&done], &RESUME);
}

/// The device sets DEVICE_NEEDS_RESET with 300 requests held: the configuration interrupt
/// (per-queue MSI-X, line) or the health timer (one shared message) finds it, and the full
/// reset takes everything back.
#[test]
fn a_device_needing_a_reset_is_reset_and_loses_nothing() {
    for messages in [None, Some(1), Some(0)] {
        let machine = machine(sim(messages), deep());
        fault_by_unit(&machine, |_, _| FaultAction::Drop);
        let held = submit_held(&machine, &[(0, 0), (1, 0)], IN_FLIGHT);
        let broken = machine.device.stats().device_errors;
        machine.device.raise_needs_reset();
        let started = Instant::now();
        let held = complete_all(&machine, &held);
        eprintln!(
            "DEVICE_NEEDS_RESET ({messages:?} messages): all back after {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{messages:?}");
        assert_eq!(
            statuses(&held),
            HashMap::from([(SRB_STATUS_BUS_RESET, IN_FLIGHT)]),
            "{messages:?}"
        );
        assert_eq!(machine.device.stats().device_errors, broken + 1);
        assert_eq!(recovery_counter!(machine, needs_reset), 1, "{messages:?}");
        assert_eq!(full_resets(&machine), 1, "{messages:?}");
        check_and_finish(machine, &[&held], &RESUME);
    }
}

/// The device completes but never interrupts: the health timer finds the completions and
/// drains them; no request is lost, reset or completed twice.
#[test]
fn lost_interrupts_are_recovered_by_polling() {
    for messages in [None, Some(0)] {
        let machine = machine(sim(messages), deep());
        machine.device.suppress_interrupts(true);
        let load = submit_load(&machine, 0, 0, IN_FLIGHT, 0);
        let started = Instant::now();
        let done = complete_all(&machine, &load);
        eprintln!(
            "lost interrupts ({messages:?} messages): {IN_FLIGHT} requests polled in {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(3), "{messages:?}");
        assert_eq!(
            statuses(&done),
            HashMap::from([(SRB_STATUS_SUCCESS, IN_FLIGHT)]),
            "{messages:?}"
        );
        assert!(machine.device.stats().suppressed_interrupts > 0);
        assert!(
            recovery_counter!(machine, lost_interrupts) >= 1,
            "{messages:?}"
        );
        assert_eq!(full_resets(&machine), 0);
        assert!(machine.device.tmf_log().is_empty());
        machine.device.suppress_interrupts(false);
        check_and_finish(machine, &[&done], &RESUME);
    }
}

/// A request times out because its interrupt was lost: HwResetBus polls first and finds it
/// completed, so nothing is reset.
#[test]
fn a_timeout_from_a_lost_interrupt_is_recovered_without_a_reset() {
    let machine = machine(sim(None), deep());
    machine.device.suppress_interrupts(true);
    let data = stamped(77, 4096);
    let mut write = Request::new(0, 1, &write10(64, 8)).writing(&data);
    write.timeout_seconds = 1;
    let done = machine.adapter.execute(0, &write).unwrap();
    assert_eq!(done.status(), SRB_STATUS_SUCCESS);
    assert_eq!(recovery_counter!(machine, bus_resets), 1);
    // Counted once polling is over, which is after the request completed.
    eventually("the bus reset ended with the poll", || {
        recovery_counter!(machine, bus_resets_polled) == 1
    });
    assert!(machine.device.tmf_log().is_empty());
    assert_eq!(full_resets(&machine), 0);
    machine.device.suppress_interrupts(false);
    check_and_finish(machine, &[], &RESUME);
}

/// Requests the device has received on all its queues.
fn requests_sent(machine: &Machine) -> u64 {
    machine
        .device
        .stats()
        .queues
        .iter()
        .map(|q| q.requests)
        .sum()
}

/// What the device negotiated: features, queue count and sizes.
fn negotiated(machine: &Machine) -> (u64, Vec<u16>) {
    let registers = machine.device.registers();
    let sizes = (0..6)
        .map_while(|index| registers.queue(index).map(|queue| queue.size))
        .collect();
    (registers.driver_features().bits(), sizes)
}

/// ScsiStopAdapter with 300 requests held by the device (StorPort did not drain them): they
/// complete with BUS_RESET; requests and resets arriving while stopped never reach the device
/// (BUSY, retryable); ScsiRestartAdapter brings the same negotiated state back.
#[test]
fn stop_with_requests_held_then_restart() {
    let machine = machine(sim(None), deep());
    let before = negotiated(&machine);
    fault_by_unit(&machine, |_, _| FaultAction::Drop);
    let held = submit_held(&machine, &[(0, 0)], IN_FLIGHT);
    assert_eq!(machine.adapter.stop_adapter().unwrap(), 0);
    let held = complete_all_with(&machine, &held, SRB_STATUS_BUS_RESET, ());
    let requests_seen = requests_sent(&machine);
    let refused = machine.adapter.execute(1, &first_block_read()).unwrap();
    assert_eq!(refused.status(), SRB_STATUS_BUSY);
    reset_lun(&machine, 0, 0);
    assert_eq!(
        requests_sent(&machine),
        requests_seen,
        "nothing reached the stopped device"
    );
    assert_eq!(machine.adapter.restart_adapter().unwrap(), 0);
    assert_eq!(negotiated(&machine), before);
    assert_eq!(recovery_counter!(machine, stops), 1);
    assert_eq!(recovery_counter!(machine, restarts), 1);
    // StorPort sends a request answered BUSY again after a hold-off until its timeout runs
    // out, then fails it BUSY to the class driver: every one of those answers is counted.
    assert!(recovery_counter!(machine, busy_while_stopped) > 1);
    assert!(machine.adapter.port_queue_figures().busy_retries > 1);
    check_and_finish(machine, &[&held], &RESUME);
}

/// Power transitions as StorPort makes them, under load from four processors: new requests
/// wait in the port driver, the outstanding ones drain, the adapter stops and restarts with
/// the same negotiated state, and every byte matches a shadow copy throughout.
#[test]
fn power_cycles_under_load_keep_every_byte() {
    for messages in [None, Some(1), Some(0)] {
        let device = DeviceOptions {
            completion: CompletionMode::Delayed {
                max_delay: Duration::from_micros(300),
                shuffle: true,
            },
            ..DeviceOptions::default()
        };
        let machine = Arc::new(machine(sim(messages), device));
        let before = negotiated(&machine);
        let running = Arc::new(AtomicBool::new(true));
        let workers: Vec<_> = (0..4u32)
            .map(|processor| {
                let machine = Arc::clone(&machine);
                let running = Arc::clone(&running);
                std::thread::spawn(move || {
                    // Each worker owns 64 blocks of LUN 0:1 and its shadow of them.
                    let base = processor * 64;
                    let mut shadow = vec![0u8; 64 * 512];
                    let mut round = 0u64;
                    let mut busy = 0usize;
                    while running.load(Ordering::SeqCst) || round < 50 {
                        round += 1;
                        let offset = ((round * 7) % 56) as u32;
                        let data = stamped((u64::from(processor) << 32) | round, 8 * 512);
                        let write = Request::new(0, 1, &write10(base + offset, 8)).writing(&data);
                        loop {
                            let done = machine.adapter.execute(processor, &write).unwrap();
                            match done.status() {
                                SRB_STATUS_SUCCESS => break,
                                SRB_STATUS_BUSY => busy += 1,
                                other => panic!("write: status {other:#x}"),
                            }
                        }
                        let at = offset as usize * 512;
                        shadow[at..at + data.len()].copy_from_slice(&data);
                        let read = Request::new(0, 1, &read10(base, 64)).reading(64 * 512);
                        let done = machine.adapter.execute(processor, &read).unwrap();
                        assert_eq!(done.status(), SRB_STATUS_SUCCESS);
                        assert!(done.data == shadow, "worker {processor} round {round}");
                    }
                    busy
                })
            })
            .collect();
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(60));
            let left = machine
                .adapter
                .power_cycle_under_load(Duration::from_secs(5))
                .unwrap();
            assert_eq!(left, 0, "StorPort drained before stopping ({messages:?})");
            assert_eq!(negotiated(&machine), before, "{messages:?}");
        }
        running.store(false, Ordering::SeqCst);
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(recovery_counter!(machine, restarts), 3);
        assert_eq!(full_resets(&machine), 0);
        check_and_finish(Arc::try_unwrap(machine).ok().unwrap(), &[], &RESUME);
    }
}

/// ScsiRestartAdapter with a device that cannot be brought back (it refuses FEATURES_OK):
/// the restart is unsuccessful, the adapter stays stopped and requests get BUSY; once the
/// device cooperates, the next restart brings back the same negotiated state.
#[test]
fn a_failed_restart_leaves_the_adapter_stopped() {
    let machine = machine(sim(None), deep());
    let before = negotiated(&machine);
    assert_eq!(machine.adapter.stop_adapter().unwrap(), 0);
    let registers = machine.device.registers();
    registers.set_refuse_features_ok(true);
    assert_eq!(
        machine.adapter.restart_adapter().unwrap(),
        1,
        "unsuccessful"
    );
    assert_eq!(recovery_counter!(machine, bring_up_failures), 1);
    assert_eq!(recovery_counter!(machine, restarts), 0);
    let refused = machine.adapter.execute(0, &first_block_read()).unwrap();
    assert_eq!(refused.status(), SRB_STATUS_BUSY);
    registers.set_refuse_features_ok(false);
    assert_eq!(machine.adapter.restart_adapter().unwrap(), 0);
    assert_eq!(negotiated(&machine), before);
    check_and_finish(machine, &[], &RESUME);
}
