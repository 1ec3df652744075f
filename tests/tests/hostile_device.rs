//! The hostile device at the miniport level, on fixed scripts: the sessions the fuzz target
//! `hostile_device` (tools/fuzz) runs on the fuzzer's bytes, run here on seeded sequences and on
//! the inputs that once broke an invariant, so CI runs them on stable everywhere.

use std::time::Duration;

use rvscsi::storport::{
    IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE, SRB_STATUS_BUS_RESET, SRB_STATUS_SUCCESS,
};
use rvscsi_tests::device::hostile::{Answered, HostileAnswer};
use rvscsi_tests::device::target::Lun;
use rvscsi_tests::device::{DeviceOptions, WriteRecord};
use rvscsi_tests::harness::{Machine, iommu_from_environment, ring_from_env};
use rvscsi_tests::hostile::{run, seeded_script};
use rvscsi_tests::scenario::{boot_standard, stamped, wait_until, write10};
use rvscsi_tests::sim::{IoctlRequest, Lock, Request, SimOptions, Ticket, abi};
use virtio_core::pci::VIRTIO_MSI_NO_VECTOR;

/// Seeded sessions: each boots the miniport, lets the script lie for up to 64 operations, then
/// checks the invariants (see `rvscsi_tests::hostile`).
#[test]
fn seeded_sessions_keep_every_invariant() {
    let mut answered = 0;
    for seed in 0..24 {
        eprintln!("seed {seed}: running");
        let figures = run(&seeded_script(seed, 400));
        answered += figures.answered;
        eprintln!("seed {seed}: {figures:?}");
    }
    // The scripts must reach the device's lies, not only submit.
    assert!(answered > 0);
}

/// A machine on the standard bus with the device hostile and its write journal on.
fn hostile_machine(packed: bool) -> Machine {
    let machine = boot_standard(
        SimOptions::default(),
        DeviceOptions {
            packed,
            ..DeviceOptions::default()
        },
        || Lun::memory(1024, 512).unwrap(),
    )
    .unwrap();
    machine.device.journal_writes(true);
    machine.device.set_hostile(true);
    machine
}

/// Submits a WRITE of one block at `lba` and waits until the hostile device holds it; returns
/// its ticket and the (queue, id) of its chain.
fn held_write(machine: &Machine, lba: u32) -> (Ticket, (u16, u16)) {
    held_write_from(machine, 0, lba)
}

/// [`held_write`] from simulated processor `processor`, beside what the device holds already.
fn held_write_from(machine: &Machine, processor: u32, lba: u32) -> (Ticket, (u16, u16)) {
    let before = machine.device.hostile_held_ids();
    let data = stamped(0xFEED_0000 + u64::from(lba), 512);
    let ticket = machine
        .adapter
        .submit(
            processor,
            &Request::new(0, 0, &write10(lba, 1)).writing(&data),
        )
        .unwrap();
    let mut new = None;
    assert!(wait_until(Duration::from_secs(5), || {
        let _ = machine.device.hostile_take();
        new = machine
            .device
            .hostile_held_ids()
            .into_iter()
            .find(|held| !before.contains(held));
        new.is_some()
    }));
    (ticket, new.unwrap())
}

/// Parks the first thread whose release of a spin lock `here` picks (from the processor, the
/// lock and the locks it still holds) until the returned sender is used (or 30 s pass); the
/// returned receiver says which processor was parked.
fn park_at_release(
    machine: &Machine,
    mut here: impl FnMut(u32, Lock, usize) -> bool + Send + 'static,
) -> (std::sync::mpsc::Receiver<u32>, std::sync::mpsc::Sender<()>) {
    let (parked_tx, parked_rx) = std::sync::mpsc::channel::<u32>();
    let (resume_tx, resume_rx) = std::sync::mpsc::channel::<()>();
    let resume_rx = std::sync::Mutex::new(resume_rx);
    machine
        .adapter
        .on_lock_released(Some(Box::new(move |processor, lock, still_held| {
            if !here(processor, lock, still_held) {
                return true;
            }
            let _ = parked_tx.send(processor);
            let _ = resume_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
            false
        })));
    (parked_rx, resume_tx)
}

/// Submits a WRITE of one block at `lba` from processor 0 and waits until it is available on
/// `queue`, not taken; returns its ticket.
fn available_write(machine: &Machine, queue: u16, lba: u32) -> Ticket {
    let data = stamped(0xFEED_0000 + u64::from(lba), 512);
    let ticket = machine
        .adapter
        .submit(0, &Request::new(0, 0, &write10(lba, 1)).writing(&data))
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || machine
        .device
        .hostile_has_available(queue)));
    ticket
}

fn good(interrupt: bool) -> HostileAnswer {
    HostileAnswer {
        response: 0,
        status: 0,
        status_qualifier: 0,
        sense_len: 0,
        sense_fill: 0,
        resid: 0,
        used_len: None,
        interrupt,
    }
}

/// The hostile device's rule (module `rvscsi_tests::device::hostile`): OK/GOOD is written only
/// for a command it executed, any other answer without executing; the write journal shows it.
#[test]
fn the_hostile_device_executes_exactly_the_commands_it_answers_good() {
    for packed in [false, true] {
        let machine = hostile_machine(packed);
        let (ticket, _) = held_write(&machine, 10);
        let answered = machine.device.hostile_answer(0, &good(true));
        assert_eq!(answered, Answered::Published { executed: true });
        let done = machine
            .adapter
            .wait(ticket, Duration::from_secs(5))
            .unwrap();
        assert_eq!(done.status(), SRB_STATUS_SUCCESS);
        assert_eq!(machine.device.write_journal().len(), 1);
        let (ticket, _) = held_write(&machine, 20);
        let failure = HostileAnswer {
            response: 9, // VIRTIO_SCSI_S_FAILURE
            ..good(true)
        };
        let answered = machine.device.hostile_answer(0, &failure);
        assert_eq!(answered, Answered::Published { executed: false });
        let done = machine
            .adapter
            .wait(ticket, Duration::from_secs(5))
            .unwrap();
        assert_ne!(done.status(), SRB_STATUS_SUCCESS);
        assert_eq!(machine.device.write_journal().len(), 1, "packed {packed}");
        machine.device.set_hostile(false);
        machine.finish();
    }
}

/// A used element naming a WRITE the device holds, its response never written, with a used
/// length the driver must reject (shorter than the response header, or longer than the
/// device-writable part): the write fails and the device is reset.
#[test]
fn a_write_given_back_with_an_impossible_length_fails() {
    for packed in [false, true] {
        for len in [0, 11, 4096] {
            let machine = hostile_machine(packed);
            let (ticket, (queue, id)) = held_write(&machine, 30);
            assert!(
                machine
                    .device
                    .hostile_publish_raw(queue, id, len, None, true)
            );
            let done = machine
                .adapter
                .wait(ticket, Duration::from_secs(10))
                .unwrap();
            assert!(machine.device.write_journal().is_empty());
            assert_ne!(
                done.status(),
                SRB_STATUS_SUCCESS,
                "packed {packed}, len {len}"
            );
            machine.device.set_hostile(false);
            machine.finish();
        }
    }
}

/// A used element naming a WRITE the device holds, its response never written, with a used
/// length that covers the response header: the driver cannot tell it from a real completion,
/// but it must not read SUCCESS out of a response buffer the device never wrote. Found by the
/// hostile-device sessions (seed 21 of `seeded_sessions_keep_every_invariant`): the miniport
/// zeroed the response header before posting the request, and zero is `VIRTIO_SCSI_S_OK` with
/// status GOOD, so the write completed SUCCESS although nothing reached the medium. Fixed: the
/// header starts as `VIRTIO_SCSI_S_FAILURE` (`io::UNWRITTEN_RESPONSE_HEADER`), so an unwritten
/// header reads as a failure.
#[test]
fn a_write_whose_response_the_device_never_wrote_does_not_succeed() {
    for packed in [false, true] {
        for len in [12, 108] {
            let machine = hostile_machine(packed);
            let (ticket, (queue, id)) = held_write(&machine, 30);
            assert!(
                machine
                    .device
                    .hostile_publish_raw(queue, id, len, None, true)
            );
            let done = machine
                .adapter
                .wait(ticket, Duration::from_secs(10))
                .unwrap();
            assert!(machine.device.write_journal().is_empty());
            assert_ne!(
                done.status(),
                SRB_STATUS_SUCCESS,
                "packed {packed}, len {len}: the write completed SUCCESS, but the device never \
                 executed it"
            );
            machine.device.set_hostile(false);
            machine.finish();
        }
    }
}

/// The simulator delivers only messages the adapter was granted: a device raising another
/// (VIRTIO_MSI_NO_VECTOR for a queue without a vector) signals nothing, and the miniport's
/// message routine never sees such a number (it used to, and the miniport then took a message
/// lock that does not exist: `NoSuchMessage { message: 65535 }`).
#[test]
fn a_message_the_adapter_was_not_granted_is_not_delivered() {
    let machine = hostile_machine(false);
    let granted = machine.adapter.found_adapter().messages;
    assert!(granted > 0);
    let lost = machine.adapter.lost_interrupts();
    for vector in [VIRTIO_MSI_NO_VECTOR, u16::try_from(granted).unwrap()] {
        machine.device.hostile_interrupt(vector);
    }
    assert!(wait_until(Duration::from_secs(5), || {
        machine.adapter.lost_interrupts() == lost + 2
    }));
    machine.device.set_hostile(false);
    machine.finish();
}

/// The session's clock (`SimOptions::clock_rate`): a LUN reset whose task management answer
/// the device never gives ends at the miniport's deadline (2 s on its system time), which on a
/// machine running 50 times faster is 40 ms of real time; at real time it has not ended after
/// a second.
#[test]
fn an_unanswered_task_management_request_ends_at_the_deadline_of_the_machine_clock() {
    for (clock_rate, ends_within_a_second) in [(50, true), (1, false)] {
        let machine = boot_standard(
            SimOptions {
                clock_rate,
                // The reset ends asynchronously, at the deadline.
                reset_grace: Some(Duration::from_secs(10)),
                ..SimOptions::default()
            },
            DeviceOptions::default(),
            || Lun::memory(1024, 512).unwrap(),
        )
        .unwrap();
        machine.device.set_hostile(true);
        let reset = machine
            .adapter
            .submit(
                0,
                &Request::control(
                    rvscsi_tests::sim::abi::SRB_FUNCTION_RESET_LOGICAL_UNIT,
                    0,
                    0,
                ),
            )
            .unwrap();
        assert!(wait_until(Duration::from_secs(5), || {
            let _ = machine.device.hostile_take();
            machine.device.hostile_held().1 == 1
        }));
        let ended = machine.adapter.wait(reset, Duration::from_secs(1));
        assert_eq!(
            ended.is_ok(),
            ends_within_a_second,
            "clock rate {clock_rate}: {ended:?}"
        );
        machine.device.set_hostile(false);
        if ended.is_err() {
            machine
                .adapter
                .wait(reset, Duration::from_secs(10))
                .unwrap();
        }
        machine.finish();
    }
}

/// Inputs the fuzz campaign found breaking an invariant, replayed (each names what broke):
/// - `packed-lie-ahead-of-avail.bin` (campaign of 2026-12-07): on the packed ring, a visible
///   lie moved the device's used position past its available one, and a later invisible lie
///   written there looked available; the device then took its own lie for the driver's next
///   buffer and blamed the driver (`MalformedChain { IndirectWithNext }`). The device model now
///   keeps an invisible lie from looking available at any slot.
const FOUND_BY_THE_CAMPAIGN: &[(&str, &[u8])] = &[(
    "packed-lie-ahead-of-avail.bin",
    include_bytes!("data/hostile/packed-lie-ahead-of-avail.bin"),
)];

#[test]
fn inputs_that_once_broke_an_invariant_keep_every_invariant() {
    for (name, input) in FOUND_BY_THE_CAMPAIGN {
        eprintln!("{name}: running");
        let figures = run(input);
        eprintln!("{name}: {figures:?}");
    }
}

/// A lie that runs the packed ring's used position past the available one (used descriptors
/// for an id the device does not hold) makes the device's next honest used descriptor land on
/// a chain the driver made available and the device has not read yet. The malformed chain the
/// device then finds is its own lie's doing: it needs a reset, but it is not recorded as the
/// driver's violation (the likeliest cause of the campaign's open controlq finding, see
/// tools/fuzz/CAMPAIGNS.md).
#[test]
fn a_chain_the_device_overwrote_after_its_own_lie_is_not_blamed_on_the_driver() {
    let machine = boot_standard(
        SimOptions::default(),
        DeviceOptions {
            packed: true,
            // Direct chains: a one-block WRITE takes three slots (header, data, response).
            indirect_desc: false,
            ..DeviceOptions::default()
        },
        || Lun::memory(1024, 512).unwrap(),
    )
    .unwrap();
    machine.device.journal_writes(true);
    machine.device.set_hostile(true);
    let (first, (queue, _)) = held_write(&machine, 10);
    // Five used descriptors for an id the device does not hold, no interrupt: the used
    // position is two slots past the available one (the first write took three).
    for _ in 0..5 {
        assert!(
            machine
                .device
                .hostile_publish_raw(queue, 999, 0, None, false)
        );
    }
    // A second write from the same processor, on the same queue: the three slots after the
    // first; available, not taken.
    let second = available_write(&machine, queue, 20);
    // The honest answer to the first write lands on the second's last descriptor.
    assert!(matches!(
        machine.device.hostile_answer(0, &good(false)),
        Answered::Published { .. }
    ));
    let _ = machine.device.hostile_take();
    assert_eq!(
        machine.device.stats().device_errors,
        1,
        "the device found the chain it overwrote malformed"
    );
    assert_eq!(machine.device.violations(), Vec::new());
    machine.device.set_hostile(false);
    for ticket in [first, second] {
        machine
            .adapter
            .wait(ticket, Duration::from_secs(30))
            .unwrap();
    }
    machine.finish();
}

/// What became of a lie about a free id ([`lie_about_the_next_id`]).
struct ReusedIdLie {
    /// How the second write, the one the driver gave the lied-about id, completed.
    second: u8,
    /// The device's chain errors, device resets since boot and excused IOMMU faults after it
    /// took what was available.
    device_errors: u64,
    resets: u64,
    excused_faults: usize,
    /// The write journal at the end (after the device answered GOOD whatever it held).
    journal: Vec<WriteRecord>,
}

/// On the split ring, under DMA remapping if `iommu`: a first write is answered (its id goes back to the
/// driver's free list, first in line); the device then publishes a used element of `len` bytes
/// naming that free id, with no interrupt; a second write takes the same id; the queue's
/// interrupt makes the driver drain the lie as the second write's completion; then the device
/// takes what is available and answers GOOD whatever it holds. `None` on the packed ring (`RVSCSI_RING=packed`), where the lie is
/// written in the very slot the second chain then takes, so the driver never reads it.
fn lie_about_the_next_id(len: u32, iommu: bool) -> Option<ReusedIdLie> {
    if ring_from_env(DeviceOptions::default()).packed {
        return None;
    }
    let machine = boot_standard(
        SimOptions {
            iommu,
            ..SimOptions::default()
        },
        DeviceOptions::default(),
        || Lun::memory(1024, 512).unwrap(),
    )
    .unwrap();
    machine.device.journal_writes(true);
    machine.device.set_hostile(true);
    let (first, (queue, id)) = held_write(&machine, 10);
    assert!(matches!(
        machine.device.hostile_answer(0, &good(true)),
        Answered::Published { .. }
    ));
    let done = machine
        .adapter
        .wait(first, Duration::from_secs(30))
        .unwrap();
    assert_eq!(done.srb_status, SRB_STATUS_SUCCESS);
    // The completion was signalled from inside the DPC's drain, which then looks at the ring
    // once more: a miniport IOCTL on the same simulated processor runs only after that DPC has
    // returned (whatever it answers), so the drain cannot see the lie before the second write
    // is available.
    let barrier = IoctlRequest::new(
        *b"CLUSDISK",
        IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE,
        30,
        &[],
    );
    machine.adapter.ioctl(0, &barrier).unwrap();
    assert!(
        machine
            .device
            .hostile_publish_raw(queue, id, len, None, false)
    );
    let second = available_write(&machine, queue, 20);
    let vector = machine.device.registers().queue(queue).unwrap().msix_vector;
    machine.device.hostile_interrupt(vector);
    let second = machine
        .adapter
        .wait(second, Duration::from_secs(30))
        .unwrap()
        .srb_status;
    // The DPC that completed the second write may go on to reset the device: let it return.
    machine.adapter.ioctl(0, &barrier).unwrap();
    let _ = machine.device.hostile_take();
    while let Answered::Published { .. } = machine.device.hostile_answer(0, &good(false)) {}
    let stats = machine.device.stats();
    let lie = ReusedIdLie {
        second,
        device_errors: stats.device_errors,
        resets: stats.resets,
        excused_faults: machine.device.memory().excused_iommu_faults().len(),
        journal: machine.device.write_journal(),
    };
    assert_eq!(machine.device.violations(), Vec::new());
    // No IOMMU fault charged, no violation on either side.
    machine.finish();
    Some(lie)
}

/// The device resets of a boot (`lie_about_the_next_id`'s device with no lie at all).
const BOOT_RESETS: u64 = 3;

/// A used element for the lied-about id that does not even hold the response header: the
/// driver sees the device is broken and leaves the request to the reset, which completes it
/// (BUS_RESET) only once the device has stopped, so nothing reads the chain after the driver
/// gave its memory back. (Before, the driver completed it at once with SRB_STATUS_ERROR and
/// reset after: the device could read the unmapped chain in between, the CI runs' `Unmapped`
/// finding.)
#[test]
fn a_short_used_element_leaves_its_request_to_the_reset() {
    let Some(lie) = lie_about_the_next_id(0, true) else {
        eprintln!("split ring only: the packed ring overwrites the lie");
        return;
    };
    assert_eq!(lie.second, SRB_STATUS_BUS_RESET);
    assert_eq!(lie.resets, BOOT_RESETS + 1, "the driver reset the device");
    assert_eq!(lie.device_errors, 0, "the device never read the chain");
    assert_eq!(lie.excused_faults, 0);
    assert_eq!(lie.journal.len(), 1, "only the first write executed");
}

/// A lie naming an id the device does not hold can come true on the split ring, and one with a
/// whole response is indistinguishable from a completion: the driver reads the response it
/// wrote itself (VIRTIO_SCSI_S_FAILURE: the write does not succeed), completes the request and
/// gives its memory back. The device, taking the chain afterwards, reads memory no longer
/// mapped for it. That failure is the lie's consequence: the device needs a reset, but no
/// driver violation and no IOMMU fault is charged (the CI runs' `Unmapped` and controlq
/// `TooShort` findings, tools/fuzz/CAMPAIGNS.md; fails without: `MalformedChain { queue: 2,
/// error: Unmapped }`).
#[test]
fn a_lie_about_a_free_id_the_driver_then_reused_is_not_blamed_on_the_driver() {
    let Some(lie) = lie_about_the_next_id(108, true) else {
        eprintln!("split ring only: the packed ring overwrites the lie");
        return;
    };
    assert_ne!(lie.second, SRB_STATUS_SUCCESS);
    assert_eq!(
        lie.device_errors, 1,
        "the device found the reused chain unreadable"
    );
    assert_eq!(
        lie.excused_faults, 1,
        "the device's read of the reused chain's table faulted, and was excused"
    );
    assert_eq!(lie.journal.len(), 1, "only the first write executed");
}

/// Without DMA remapping the device can read the reused chain of
/// [`a_lie_about_a_free_id_the_driver_then_reused_is_not_blamed_on_the_driver`] and executes
/// the write after the driver failed its SRB on the lie: the journal marks that write as
/// executed after a lie, which the fuzz session's write check excuses (a fuzz run's "WRITE
/// executed after its SRB failed"), while the first write, before any lie, is not marked.
#[test]
fn a_write_executed_after_a_lie_about_its_id_is_marked_in_the_journal() {
    if iommu_from_environment() {
        eprintln!("without DMA remapping only: RVSCSI_IOMMU=1 asks for it");
        return;
    }
    let Some(lie) = lie_about_the_next_id(108, false) else {
        eprintln!("split ring only: the packed ring overwrites the lie");
        return;
    };
    assert_ne!(lie.second, SRB_STATUS_SUCCESS);
    let after_a_lie: Vec<bool> = lie.journal.iter().map(|write| write.after_a_lie).collect();
    assert_eq!(after_a_lie, [false, true]);
}

/// A settle failure says where the request is (the fuzz session's "never completed" message):
/// held by the miniport while the device holds it, completed once answered (and collected by
/// the wait), unknown if never submitted.
#[test]
fn the_port_driver_tells_where_a_request_is() {
    let machine = hostile_machine(false);
    let (ticket, _) = held_write(&machine, 10);
    let held = machine.adapter.whereabouts(ticket);
    assert!(held.starts_with("held by the miniport"), "{held}");
    assert_eq!(
        machine.device.hostile_answer(0, &good(true)),
        Answered::Published { executed: true }
    );
    machine
        .adapter
        .wait(ticket, Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        machine.adapter.whereabouts(ticket),
        "completed (its completion already collected)"
    );
    assert_eq!(
        machine.adapter.whereabouts(Ticket(u64::MAX)),
        "unknown to the port driver"
    );
    machine.device.set_hostile(false);
    machine.finish();
}

/// A device reset ends its election (the flag that turns a second resetter away) while it still
/// holds every queue lock. A drain that then finds the device broken and keeps a request for
/// the reset it asks for (a used element without the response header) must get that reset:
/// here processor 0's thread, having reset the device for a lie about an unknown id, is parked
/// by the simulator the moment it released its last lock, and processor 1's drain finds its
/// write given back without a response. Its reset runs and completes the write with
/// SRB_STATUS_BUS_RESET. With the election ended after the release instead, that reset was
/// turned away and the write waited for one that never came (a fuzz run's lost WRITE).
#[test]
fn a_violation_found_as_a_reset_lets_go_of_its_locks_gets_its_own_reset() {
    let machine = hostile_machine(ring_from_env(DeviceOptions::default()).packed);
    let (first, (first_queue, _)) = held_write(&machine, 10);
    let device = machine.device.clone();
    let (parked_rx, resume_tx) = park_at_release(&machine, move |processor, _, still_held| {
        processor != 1 && still_held == 0 && device.stats().resets > BOOT_RESETS
    });
    assert!(
        machine
            .device
            .hostile_publish_raw(first_queue, 999, 0, None, true)
    );
    let parked = parked_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the reset let go of its locks");
    // Processor 1's write, held by the device, then given back without a response.
    let (second, (queue, id)) = held_write_from(&machine, 1, 20);
    assert!(machine.device.hostile_publish_raw(queue, id, 0, None, true));
    let second = machine.adapter.wait(second, Duration::from_secs(10));
    resume_tx.send(()).unwrap();
    assert_ne!(parked, 1);
    assert_eq!(
        second.expect("the write's reset ran").srb_status,
        SRB_STATUS_BUS_RESET
    );
    machine.adapter.on_lock_released(None);
    machine.device.set_hostile(false);
    let first = machine
        .adapter
        .wait(first, Duration::from_secs(10))
        .unwrap();
    assert_eq!(first.srb_status, SRB_STATUS_BUS_RESET);
    machine.finish();
}

/// Once a drain has kept a request for the reset (its used element lacked the response header),
/// the queue completes nothing more before that reset: the device may still use the chains it
/// gave back. Here two writes on processor 0's queue are given back without a response; a bus
/// reset SRB on processor 1 polls every queue, keeps the first write, and is parked by the
/// simulator right after it lets go of that queue's lock, before it resets; the queue's
/// interrupt then drains it again on processor 0. The second write completes with
/// SRB_STATUS_BUS_RESET once a reset stopped the device; before, that drain failed it at once
/// with SRB_STATUS_ERROR, while the device could still read or write its buffers.
#[test]
fn after_a_request_kept_for_the_reset_its_queue_completes_nothing_before_the_reset() {
    let machine = hostile_machine(ring_from_env(DeviceOptions::default()).packed);
    let (first, (queue, first_id)) = held_write(&machine, 10);
    let (second, (second_queue, second_id)) = held_write_from(&machine, 0, 20);
    assert_eq!(second_queue, queue, "both on processor 0's queue");
    for id in [first_id, second_id] {
        assert!(
            machine
                .device
                .hostile_publish_raw(queue, id, 0, None, false)
        );
    }
    let vector = machine.device.registers().queue(queue).unwrap().msix_vector;
    let (parked_rx, resume_tx) = park_at_release(&machine, move |processor, lock, _| {
        processor == 1 && lock == Lock::Message(u32::from(vector))
    });
    let bus_reset = machine
        .adapter
        .submit(1, &Request::control(abi::SRB_FUNCTION_RESET_BUS, 0, 0))
        .unwrap();
    parked_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the bus reset's poll let go of the queue's lock");
    machine.device.hostile_interrupt(vector);
    let second = machine.adapter.wait(second, Duration::from_secs(10));
    resume_tx.send(()).unwrap();
    assert_eq!(
        second.expect("the second write completed").srb_status,
        SRB_STATUS_BUS_RESET
    );
    machine.adapter.on_lock_released(None);
    for (ticket, status) in [
        (first, SRB_STATUS_BUS_RESET),
        (bus_reset, SRB_STATUS_SUCCESS),
    ] {
        let done = machine
            .adapter
            .wait(ticket, Duration::from_secs(10))
            .unwrap();
        assert_eq!(done.srb_status, status, "{ticket:?}");
    }
    machine.device.set_hostile(false);
    machine.finish();
}
