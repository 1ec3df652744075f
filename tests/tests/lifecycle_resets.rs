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
use rvscsi_tests::device::target::{Lun, LunIdentity};
use rvscsi_tests::device::{
    CompletionMode, DeviceOptions, FaultAction, RequestInfo, TmfAction, TmfInfo,
};
use rvscsi_tests::harness::{Machine, boot};
use rvscsi_tests::sim::abi::{SRB_FUNCTION_RESET_DEVICE, SRB_FUNCTION_RESET_LOGICAL_UNIT};
use rvscsi_tests::sim::{Completion, Request, SimOptions, Ticket};
use virtio_core::scsi::{Response, TmfSubtype};

const BLOCKS: u64 = 1 << 16; // 32 MiB per LUN
/// Requests the device holds in the big scenarios.
const IN_FLIGHT: usize = 300;
/// Blocks per request (each request has its own range).
const SPAN: u16 = 8;
/// SRB timeout of held requests (3,000 s, 30 s of simulated time): StorPort's own timeout must
/// not interfere unless a scenario wants it to.
const LONG_TIMEOUT: u32 = 3000;
/// The miniport's task management deadline, and a margin for the timer's period.
const DEADLINE: Duration = Duration::from_secs(2);

fn disk() -> Lun {
    Lun::memory(BLOCKS, 512)
        .unwrap()
        .with_identity(LunIdentity {
            naa_id: None,
            ..LunIdentity::default()
        })
}

fn sim(messages: Option<u32>) -> SimOptions {
    SimOptions {
        processors: 4,
        messages,
        // The miniport ends a reset asynchronously, within its task management deadline.
        reset_grace: Some(Duration::from_secs(5)),
        ..SimOptions::default()
    }
}

/// LUNs 0:0, 0:1 and 1:0, the write journal on.
fn machine(sim: SimOptions, device: DeviceOptions) -> Machine {
    let machine = boot(
        sim,
        device,
        vec![(0, 0, disk()), (0, 1, disk()), (1, 0, disk())],
    )
    .unwrap();
    machine.device.journal_writes(true);
    machine
}

fn rw10(opcode: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut cdb = vec![opcode, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

fn lba_of(cdb: &[u8]) -> Option<u32> {
    matches!(cdb.first(), Some(0x28 | 0x2A))
        .then(|| u32::from_be_bytes([cdb[2], cdb[3], cdb[4], cdb[5]]))
}

/// Data whose first 8 bytes are `stamp` (the journal records them) and the rest derived
/// from it.
fn stamped(stamp: u64, len: usize) -> Vec<u8> {
    let mut data: Vec<u8> = (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(stamp) as u8)
        .collect();
    data[..8].copy_from_slice(&stamp.to_le_bytes());
    data
}

/// One request of a load.
#[derive(Clone)]
struct Io {
    ticket: Ticket,
    target: u8,
    lun: u8,
    lba: u32,
    /// What it writes (`None`: a read).
    data: Option<Vec<u8>>,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.data.is_some() { "write" } else { "read" };
        write!(
            f,
            "{kind} {:?} of {}:{} at LBA {}",
            self.ticket, self.target, self.lun, self.lba
        )
    }
}

/// Submits `count` requests to `target`/`lun` on disjoint ranges from `first_lba`, writes and
/// reads alternating, over every processor.
fn submit_load(machine: &Machine, target: u8, lun: u8, count: usize, first_lba: u32) -> Vec<Io> {
    (0..count)
        .map(|i| {
            let lba = first_lba + (i as u32) * u32::from(SPAN);
            let bytes = usize::from(SPAN) * 512;
            let (mut request, data) = if i % 2 == 0 {
                let stamp = (u64::from(target) << 56) | (u64::from(lun) << 48) | u64::from(lba);
                let data = stamped(stamp, bytes);
                (
                    Request::new(target, lun, &rw10(0x2A, lba, SPAN)).writing(&data),
                    Some(data),
                )
            } else {
                (
                    Request::new(target, lun, &rw10(0x28, lba, SPAN)).reading(bytes as u32),
                    None,
                )
            };
            request.timeout_seconds = LONG_TIMEOUT;
            let ticket = machine.adapter.submit(i as u32 % 4, &request).unwrap();
            Io {
                ticket,
                target,
                lun,
                lba,
                data,
            }
        })
        .collect()
}

/// Waits until the device holds at least `count` requests.
fn wait_held(machine: &Machine, count: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while machine.device.stats().pending < count {
        assert!(Instant::now() < until, "{:?}", machine.device.stats());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits for every request of `load`.
fn complete_all(machine: &Machine, load: &[Io]) -> Vec<(Io, Completion)> {
    load.iter()
        .map(|io| {
            let done = machine
                .adapter
                .wait(io.ticket, Duration::from_secs(15))
                .unwrap_or_else(|error| panic!("{io:?}: {error:?}"));
            (io.clone(), done)
        })
        .collect()
}

fn statuses(done: &[(Io, Completion)]) -> HashMap<u8, usize> {
    let mut counts = HashMap::new();
    for (_, completion) in done {
        *counts.entry(completion.status()).or_default() += 1;
    }
    counts
}

/// No write reached its LUN after its SRB completed with a failure, every successful write
/// did, and every region holds what the journal says: the write's data if it executed, zeros
/// (the disk's initial content) if not.
fn check_writes(machine: &Machine, done: &[(Io, Completion)]) {
    // Delayed requests the device still holds execute now or never: wait for them.
    machine.device.quiesce();
    let journal = machine.device.write_journal();
    for (io, completion) in done {
        let Some(data) = &io.data else { continue };
        let stamp: [u8; 8] = data[..8].try_into().unwrap();
        let executed: Vec<_> = journal.iter().filter(|w| w.stamp == stamp).collect();
        assert!(executed.len() <= 1, "{io:?} executed twice");
        if completion.status() == SRB_STATUS_SUCCESS {
            assert_eq!(executed.len(), 1, "{io:?} succeeded but never executed");
        } else {
            let failed_at = machine.adapter.completed_at(io.ticket).unwrap();
            for write in &executed {
                assert!(
                    write.at <= failed_at,
                    "{io:?} ({:#x}) written {:?} after its SRB failed",
                    completion.srb_status,
                    write.at - failed_at
                );
            }
        }
        let read = machine
            .adapter
            .execute(
                0,
                &Request::new(io.target, io.lun, &rw10(0x28, io.lba, SPAN))
                    .reading(u32::from(SPAN) * 512),
            )
            .unwrap();
        assert_eq!(read.status(), SRB_STATUS_SUCCESS);
        if executed.is_empty() {
            assert!(
                read.data.iter().all(|&b| b == 0),
                "{io:?}: data without a write"
            );
        } else {
            assert!(read.data == *data, "{io:?}: not its data");
        }
    }
}

/// I/O works on every LUN from every processor.
fn check_resumes(machine: &Machine) {
    for (processor, (target, lun)) in [(0u32, (0u8, 0u8)), (1, (0, 1)), (2, (1, 0)), (3, (0, 0))] {
        let lba = 60_000 + processor * 16;
        let data = stamped(0xD00D_0000 + u64::from(processor), 4096);
        let write = machine
            .adapter
            .execute(
                processor,
                &Request::new(target, lun, &rw10(0x2A, lba, 8)).writing(&data),
            )
            .unwrap();
        assert_eq!(write.status(), SRB_STATUS_SUCCESS, "{target}:{lun}");
        let read = machine
            .adapter
            .execute(
                processor,
                &Request::new(target, lun, &rw10(0x28, lba, 8)).reading(4096),
            )
            .unwrap();
        assert_eq!(read.status(), SRB_STATUS_SUCCESS, "{target}:{lun}");
        assert!(read.data == data, "{target}:{lun}");
    }
}

fn fault_by_unit(
    machine: &Machine,
    action: impl Fn(u8, u16) -> FaultAction + Send + Sync + 'static,
) {
    machine
        .device
        .set_fault_hook(Some(Arc::new(move |info: &RequestInfo| {
            if info.cdb.first().is_some_and(|&op| op == 0x28 || op == 0x2A) {
                action(info.target, info.lun)
            } else {
                FaultAction::Normal
            }
        })));
}

fn tmf_hook(machine: &Machine, action: TmfAction) {
    machine
        .device
        .set_tmf_hook(Some(Arc::new(move |_: &TmfInfo| action)));
}

fn reset_lun(machine: &Machine, target: u8, lun: u8) -> (Completion, Duration) {
    let mut reset = Request::control(SRB_FUNCTION_RESET_LOGICAL_UNIT, target, lun);
    // Scaled like every simulated timeout (1 s = 10 ms): StorPort must not time the reset out
    // and call HwResetBus while the miniport's deadline (real time) runs.
    reset.timeout_seconds = LONG_TIMEOUT;
    let started = Instant::now();
    let done = machine.adapter.execute(1, &reset).unwrap();
    (done, started.elapsed())
}

fn full_resets(machine: &Machine) -> u64 {
    machine.miniport().unwrap().resets.load(Ordering::Relaxed)
}

/// Waits (up to a second) for `condition`: for counters the miniport updates after the
/// completions a test waits for.
fn eventually(what: &str, condition: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(1);
    while !condition() {
        assert!(Instant::now() < until, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

macro_rules! tmf_counter {
    ($machine:expr, $name:ident) => {
        $machine
            .miniport()
            .unwrap()
            .tmfs()
            .counters
            .$name
            .load(Ordering::Relaxed)
    };
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
    let machine = machine(sim(None), DeviceOptions::default());
    // LUN 0:1 holds everything; LUN 0:0 (the one vioscsi would reset) keeps working, slowly.
    fault_by_unit(&machine, |target, lun| match (target, lun) {
        (0, 1) => FaultAction::Drop,
        _ => FaultAction::Delay(Duration::from_millis(300)),
    });
    let held = submit_load(&machine, 0, 1, IN_FLIGHT, 0);
    wait_held(&machine, IN_FLIGHT);
    let bystanders = submit_load(&machine, 0, 0, 40, 0);
    let (reset, took) = reset_lun(&machine, 0, 1);
    assert_eq!(reset.status(), SRB_STATUS_SUCCESS);
    // Information only, never asserted: the figure for the report.
    eprintln!("LUN reset with {IN_FLIGHT} requests held: {took:?}");
    let held = complete_all(&machine, &held);
    assert_eq!(
        statuses(&held),
        HashMap::from([(SRB_STATUS_BUS_RESET, IN_FLIGHT)])
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
    assert_eq!(tmf_counter!(machine, lun_resets), 1);
    assert_eq!(tmf_counter!(machine, completed), 1);
    machine.device.set_fault_hook(None);
    check_writes(&machine, &held);
    check_writes(&machine, &bystanders);
    check_resumes(&machine);
    machine.finish();
}

#[test]
fn a_target_reset_resets_every_lun_of_that_target_only() {
    let machine = machine(sim(None), DeviceOptions::default());
    fault_by_unit(&machine, |target, _| match target {
        0 => FaultAction::Drop,
        _ => FaultAction::Delay(Duration::from_millis(200)),
    });
    let mut held = submit_load(&machine, 0, 0, IN_FLIGHT / 2, 0);
    held.extend(submit_load(&machine, 0, 1, IN_FLIGHT / 2, 0));
    wait_held(&machine, IN_FLIGHT);
    let bystanders = submit_load(&machine, 1, 0, 40, 0);
    let mut reset = Request::control(SRB_FUNCTION_RESET_DEVICE, 0, 0);
    reset.timeout_seconds = LONG_TIMEOUT;
    let reset = machine.adapter.execute(0, &reset).unwrap();
    assert_eq!(reset.status(), SRB_STATUS_SUCCESS);
    let held = complete_all(&machine, &held);
    assert_eq!(
        statuses(&held),
        HashMap::from([(SRB_STATUS_BUS_RESET, IN_FLIGHT)])
    );
    let bystanders = complete_all(&machine, &bystanders);
    assert_eq!(
        statuses(&bystanders),
        HashMap::from([(SRB_STATUS_SUCCESS, 40)])
    );
    let log = machine.device.tmf_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].info.subtype, TmfSubtype::ITNexusReset.raw());
    assert_eq!(log[0].info.target, 0);
    assert_eq!(full_resets(&machine), 0);
    machine.device.set_fault_hook(None);
    check_writes(&machine, &held);
    check_resumes(&machine);
    machine.finish();
}

/// The device fails the function: the full reset takes everything back, the bystanders too.
#[test]
fn a_failed_lun_reset_escalates_to_a_full_reset() {
    for response in [Response::FunctionRejected, Response::Failure] {
        let machine = machine(sim(None), DeviceOptions::default());
        fault_by_unit(&machine, |target, lun| match (target, lun) {
            (0, 1) => FaultAction::Drop,
            // Long enough to be caught in flight by the full reset.
            _ => FaultAction::Delay(Duration::from_secs(3)),
        });
        tmf_hook(&machine, TmfAction::Respond(response));
        let held = submit_load(&machine, 0, 1, IN_FLIGHT, 0);
        let bystanders = submit_load(&machine, 0, 0, 40, 0);
        wait_held(&machine, IN_FLIGHT + 40);
        let (reset, _) = reset_lun(&machine, 0, 1);
        assert_eq!(reset.status(), SRB_STATUS_SUCCESS, "{response:?}");
        let mut all = complete_all(&machine, &held);
        all.extend(complete_all(&machine, &bystanders));
        assert_eq!(
            statuses(&all),
            HashMap::from([(SRB_STATUS_BUS_RESET, IN_FLIGHT + 40)]),
            "{response:?}"
        );
        assert_eq!(machine.device.tmf_log()[0].response, Some(response));
        assert_eq!(full_resets(&machine), 1, "{response:?}");
        assert_eq!(tmf_counter!(machine, failed), 1, "{response:?}");
        assert_eq!(tmf_counter!(machine, superseded), 1, "{response:?}");
        machine.device.set_fault_hook(None);
        machine.device.set_tmf_hook(None);
        check_writes(&machine, &all);
        check_resumes(&machine);
        machine.finish();
    }
}

#[test]
fn a_lun_reset_never_answered_escalates_at_the_deadline() {
    let machine = machine(sim(None), DeviceOptions::default());
    fault_by_unit(&machine, |_, _| FaultAction::Drop);
    tmf_hook(&machine, TmfAction::Ignore);
    let held = submit_load(&machine, 0, 1, IN_FLIGHT, 0);
    wait_held(&machine, IN_FLIGHT);
    let (reset, took) = reset_lun(&machine, 0, 1);
    assert_eq!(reset.status(), SRB_STATUS_SUCCESS);
    eprintln!("LUN reset never answered, escalated after {took:?}");
    assert!(
        took >= DEADLINE && took < DEADLINE * 3,
        "the escalation came after {took:?}"
    );
    let held = complete_all(&machine, &held);
    assert_eq!(
        statuses(&held),
        HashMap::from([(SRB_STATUS_BUS_RESET, IN_FLIGHT)])
    );
    assert_eq!(machine.device.tmf_log()[0].response, None);
    assert_eq!(full_resets(&machine), 1);
    assert_eq!(tmf_counter!(machine, timed_out), 1);
    machine.device.set_fault_hook(None);
    machine.device.set_tmf_hook(None);
    check_writes(&machine, &held);
    check_resumes(&machine);
    machine.finish();
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
        let machine = machine(sim(None), DeviceOptions::default());
        let action = hold.clone();
        fault_by_unit(&machine, move |_, _| action.clone());
        tmf_hook(&machine, TmfAction::AnswerWithoutCancelling);
        let held = submit_load(&machine, 0, 1, IN_FLIGHT, 0);
        wait_held(&machine, IN_FLIGHT);
        let (reset, took) = reset_lun(&machine, 0, 1);
        assert_eq!(reset.status(), SRB_STATUS_SUCCESS);
        let held = complete_all(&machine, &held);
        if returned {
            assert_eq!(
                statuses(&held),
                HashMap::from([(SRB_STATUS_SUCCESS, IN_FLIGHT)])
            );
            assert!(took < DEADLINE, "{took:?}");
            assert_eq!(full_resets(&machine), 0);
            assert_eq!(tmf_counter!(machine, waited), 1);
        } else {
            assert_eq!(
                statuses(&held),
                HashMap::from([(SRB_STATUS_BUS_RESET, IN_FLIGHT)])
            );
            assert!(took >= DEADLINE, "{took:?}");
            assert_eq!(full_resets(&machine), 1);
            assert_eq!(tmf_counter!(machine, stranded), 1);
        }
        machine.device.set_fault_hook(None);
        machine.device.set_tmf_hook(None);
        check_writes(&machine, &held);
        check_resumes(&machine);
        machine.finish();
    }
}

/// StorPort's timeout recovery: HwResetBus polls, then resets the nexus of each target that
/// still holds requests. Answered, the requests come back reset; never answered, the full
/// reset takes them back at the deadline.
#[test]
fn hw_reset_bus_resets_each_target_holding_requests() {
    for action in [TmfAction::Normal, TmfAction::Ignore] {
        let machine = machine(sim(None), DeviceOptions::default());
        fault_by_unit(&machine, |_, _| FaultAction::Drop);
        tmf_hook(&machine, action);
        let mut held = submit_load(&machine, 0, 0, IN_FLIGHT / 2, 0);
        held.extend(submit_load(&machine, 1, 0, IN_FLIGHT / 2, 0));
        wait_held(&machine, IN_FLIGHT);
        // One request with a short timeout: StorPort calls HwResetBus for it.
        let mut trigger = Request::new(0, 1, &rw10(0x28, 0, 1)).reading(512);
        trigger.timeout_seconds = 1;
        let trigger = machine.adapter.submit(0, &trigger).unwrap();
        held.push(Io {
            ticket: trigger,
            target: 0,
            lun: 1,
            lba: 0,
            data: None,
        });
        let held = complete_all(&machine, &held);
        assert_eq!(
            statuses(&held),
            HashMap::from([(SRB_STATUS_BUS_RESET, IN_FLIGHT + 1)]),
            "{action:?}"
        );
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
        machine.device.set_fault_hook(None);
        machine.device.set_tmf_hook(None);
        check_writes(&machine, &held);
        check_resumes(&machine);
        machine.finish();
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
        let machine = machine(options, DeviceOptions::default());
        abort_one_of_300(&machine);
        machine.finish();
    }
}

fn abort_one_of_300(machine: &Machine) {
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
    let load = submit_load(machine, 0, 0, IN_FLIGHT, 0);
    wait_held(machine, IN_FLIGHT);
    let victim = load[42].clone(); // a write
    assert!(victim.data.is_some());
    let mut abort = Request::abort(0, 0, victim.ticket);
    abort.timeout_seconds = LONG_TIMEOUT;
    let abort = machine.adapter.execute(2, &abort).unwrap();
    assert_eq!(abort.status(), SRB_STATUS_SUCCESS);
    let done = complete_all(machine, &load);
    for (io, completion) in &done {
        let expected = if io.ticket == victim.ticket {
            SRB_STATUS_ABORTED
        } else {
            SRB_STATUS_SUCCESS
        };
        assert_eq!(completion.status(), expected, "{io:?}");
    }
    let log = machine.device.tmf_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].info.subtype, TmfSubtype::AbortTask.raw());
    let tag = tags.lock().unwrap()[&(0, 0, victim.lba)];
    assert_eq!(
        (log[0].info.target, log[0].info.lun, log[0].info.tag),
        (0, 0, tag)
    );
    assert_eq!(tmf_counter!(machine, aborts), 1);
    assert_eq!(full_resets(machine), 0);
    // A command no longer in flight cannot be aborted.
    let again = machine
        .adapter
        .execute(2, &Request::abort(0, 0, victim.ticket))
        .unwrap();
    assert_eq!(again.status(), SRB_STATUS_ABORT_FAILED);
    assert_eq!(machine.device.tmf_log().len(), 1);
    machine.device.set_fault_hook(None);
    check_writes(machine, &done);
    check_resumes(machine);
}

/// The device sets DEVICE_NEEDS_RESET with 300 requests held: the configuration interrupt
/// (per-queue MSI-X, line) or the health timer (one shared message) finds it, and the full
/// reset takes everything back.
#[test]
fn a_device_needing_a_reset_is_reset_and_loses_nothing() {
    for messages in [None, Some(1), Some(0)] {
        let machine = machine(sim(messages), DeviceOptions::default());
        fault_by_unit(&machine, |_, _| FaultAction::Drop);
        let mut held = submit_load(&machine, 0, 0, IN_FLIGHT / 2, 0);
        held.extend(submit_load(&machine, 1, 0, IN_FLIGHT / 2, 0));
        wait_held(&machine, IN_FLIGHT);
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
        machine.device.set_fault_hook(None);
        check_writes(&machine, &held);
        check_resumes(&machine);
        machine.finish();
    }
}

/// The device completes but never interrupts: the health timer finds the completions and
/// drains them; no request is lost, reset or completed twice.
#[test]
fn lost_interrupts_are_recovered_by_polling() {
    for messages in [None, Some(0)] {
        let machine = machine(sim(messages), DeviceOptions::default());
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
        check_writes(&machine, &done);
        check_resumes(&machine);
        machine.finish();
    }
}

/// A request times out because its interrupt was lost: HwResetBus polls first and finds it
/// completed, so nothing is reset.
#[test]
fn a_timeout_from_a_lost_interrupt_is_recovered_without_a_reset() {
    let machine = machine(sim(None), DeviceOptions::default());
    machine.device.suppress_interrupts(true);
    let data = stamped(77, 4096);
    let mut write = Request::new(0, 1, &rw10(0x2A, 64, 8)).writing(&data);
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
    check_resumes(&machine);
    machine.finish();
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
    let machine = machine(sim(None), DeviceOptions::default());
    let before = negotiated(&machine);
    fault_by_unit(&machine, |_, _| FaultAction::Drop);
    let held = submit_load(&machine, 0, 0, IN_FLIGHT, 0);
    wait_held(&machine, IN_FLIGHT);
    assert_eq!(machine.adapter.stop_adapter().unwrap(), 0);
    let held = complete_all(&machine, &held);
    assert_eq!(
        statuses(&held),
        HashMap::from([(SRB_STATUS_BUS_RESET, IN_FLIGHT)])
    );
    let requests_seen: u64 = machine
        .device
        .stats()
        .queues
        .iter()
        .map(|q| q.requests)
        .sum();
    let refused = machine
        .adapter
        .execute(1, &Request::new(0, 0, &rw10(0x28, 0, 1)).reading(512))
        .unwrap();
    assert_eq!(refused.status(), SRB_STATUS_BUSY);
    let (reset, _) = reset_lun(&machine, 0, 0);
    assert_eq!(reset.status(), SRB_STATUS_SUCCESS);
    let seen_after: u64 = machine
        .device
        .stats()
        .queues
        .iter()
        .map(|q| q.requests)
        .sum();
    assert_eq!(
        seen_after, requests_seen,
        "nothing reached the stopped device"
    );
    assert_eq!(machine.adapter.restart_adapter().unwrap(), 0);
    assert_eq!(negotiated(&machine), before);
    assert_eq!(recovery_counter!(machine, stops), 1);
    assert_eq!(recovery_counter!(machine, restarts), 1);
    assert_eq!(recovery_counter!(machine, busy_while_stopped), 1);
    machine.device.set_fault_hook(None);
    check_writes(&machine, &held);
    check_resumes(&machine);
    machine.finish();
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
                        let write =
                            Request::new(0, 1, &rw10(0x2A, base + offset, 8)).writing(&data);
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
                        let read = Request::new(0, 1, &rw10(0x28, base, 64)).reading(64 * 512);
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
        check_resumes(&machine);
        let machine = Arc::try_unwrap(machine).ok().unwrap();
        machine.finish();
    }
}

/// ScsiRestartAdapter with a device that cannot be brought back (it refuses FEATURES_OK):
/// the restart is unsuccessful, the adapter stays stopped and requests get BUSY; once the
/// device cooperates, the next restart brings back the same negotiated state.
#[test]
fn a_failed_restart_leaves_the_adapter_stopped() {
    let machine = machine(sim(None), DeviceOptions::default());
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
    let refused = machine
        .adapter
        .execute(0, &Request::new(0, 0, &rw10(0x28, 0, 1)).reading(512))
        .unwrap();
    assert_eq!(refused.status(), SRB_STATUS_BUSY);
    registers.set_refuse_features_ok(false);
    assert_eq!(machine.adapter.restart_adapter().unwrap(), 0);
    assert_eq!(negotiated(&machine), before);
    check_resumes(&machine);
    machine.finish();
}
