//! The rings' driver/device interplay under shuttle, a concurrency model checker: the driver
//! and a device on two threads, switched at every DMA access either makes (virtio-core's
//! `access-hook`), over thousands of random and PCT schedules.
//!
//! What is checked is liveness across the two races of a virtqueue: the driver re-arming
//! interrupts after draining (disable, drain, enable, re-check: a buffer used between the last
//! pop and the re-arm must be found by the re-check, or the driver sleeps forever) and the
//! device re-enabling kicks after draining (the same on the other side, with the driver's
//! kick decision, EVENT_IDX or flags). A lost interrupt or a lost kick leaves both threads
//! waiting, which shuttle reports when a schedule runs past its step bound. Planted offenders
//! (a driver or a device without the re-check) prove the checker finds the race.
//!
//! Shuttle explores interleavings under sequential consistency; the orderings themselves
//! (weak memory) are Miri's job (`cargo xtask miri`, the rings' two-thread tests).

use std::sync::Arc;

use shuttle::scheduler::{PctScheduler, RandomScheduler};
use shuttle::sync::atomic::{AtomicBool, Ordering};
use shuttle::{Config, MaxSteps, Runner, thread};
use virtio_core::dma::access_hook;
use virtio_core::fake::FakeHal;
use virtio_core::fake::packed_device::{PackedAreas, PackedDevice, PackedFeatures};
use virtio_core::hal::{Hal, Segment};
use virtio_core::queue::packed::PackedQueue;
use virtio_core::queue::{QueueFeatures, Slot, Virtqueue};

/// A ring small enough that chains wrap it many times in one schedule.
const SIZE: u16 = 4;
/// Chains the driver sends per schedule.
const CHAINS: usize = 12;
/// Schedules per scheduler and configuration.
const SCHEDULES: usize = 1500;
/// Steps (scheduling points) after which a schedule counts as hung: a correct run takes a few
/// thousand; waiting threads spin forever.
const STEP_BOUND: usize = 60_000;

/// How the driver handles an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DriverIsr {
    /// Disable, drain, re-enable; drain again while the re-enable reports used buffers.
    Recheck,
    /// The planted offender: disable, drain, re-enable, and sleep whatever it reports.
    NoRecheck,
}

/// How the device ends a drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeviceDrain {
    /// Re-enable kicks, then drain again while the ring has buffers (the spec device's own
    /// `enable_kicks` re-check).
    Recheck,
    /// The planted offender: re-enable kicks and stop, whatever was made available meanwhile.
    NoRecheck,
}

/// One schedule: a driver sending `CHAINS` chains of one readable and one writable segment and
/// sleeping on interrupts, a device thread sleeping on kicks. Returns when every chain came
/// back; hangs (and so fails the schedule) if a kick or an interrupt is lost.
fn round_trips(event_idx: bool, isr: DriverIsr, drain: DeviceDrain) {
    access_hook::set(Some(thread::yield_now));
    let hal = Arc::new(FakeHal::new());
    let ring = hal
        .dma_alloc(PackedQueue::<Vec<Slot>>::ring_len(SIZE), 16)
        .unwrap();
    let features = QueueFeatures {
        event_idx,
        indirect: false,
    };
    let mut queue = PackedQueue::new(
        0,
        SIZE,
        ring,
        vec![Slot::EMPTY; usize::from(SIZE)],
        features,
    )
    .unwrap();
    let addresses = queue.addresses();
    let mut device = PackedDevice::new(
        SIZE,
        PackedAreas {
            descriptors: addresses.descriptors,
            driver_event: addresses.driver,
            device_event: addresses.device,
        },
        PackedFeatures {
            indirect: false,
            event_idx,
        },
    );
    // The notify register and the interrupt line: level flags each side clears when it runs.
    let kick = Arc::new(AtomicBool::new(false));
    let interrupt = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));

    let device_thread = {
        let (hal, kick, interrupt, done) = (
            Arc::clone(&hal),
            Arc::clone(&kick),
            Arc::clone(&interrupt),
            Arc::clone(&done),
        );
        thread::spawn(move || serve(&mut device, &hal, &kick, &interrupt, &done, drain))
    };

    let buffer = |index: u64| Segment::new(0x10_0000 + index * 0x1000, 64);
    let mut sent = 0;
    let mut completed = 0;
    assert!(!queue.enable_interrupts(), "nothing used yet");
    while completed < CHAINS {
        while sent < CHAINS && queue.free_descriptors() >= 2 {
            let index = sent as u64;
            queue
                .add(&[buffer(2 * index)], &[buffer(2 * index + 1)], None)
                .unwrap();
            sent += 1;
            if queue.kick_prepare() {
                kick.store(true, Ordering::SeqCst);
            }
        }
        // Sleeps until interrupted; a lost interrupt or kick leaves it here for good.
        while !interrupt.swap(false, Ordering::SeqCst) {
            thread::yield_now();
        }
        loop {
            queue.disable_interrupts();
            while let Some(used) = queue.pop_used().unwrap() {
                assert_eq!(used.written, 8);
                completed += 1;
            }
            let pending = queue.enable_interrupts();
            if !pending || isr == DriverIsr::NoRecheck {
                break;
            }
        }
    }
    done.store(true, Ordering::SeqCst);
    device_thread.join().unwrap();
    assert_eq!(queue.in_flight(), 0);
}

/// The device thread: sleeps until kicked, drains the ring, interrupts if the driver asks,
/// until the driver is done.
fn serve(
    device: &mut PackedDevice,
    hal: &FakeHal,
    kick: &AtomicBool,
    interrupt: &AtomicBool,
    done: &AtomicBool,
    drain: DeviceDrain,
) {
    access_hook::set(Some(thread::yield_now));
    loop {
        while !kick.swap(false, Ordering::SeqCst) {
            if done.load(Ordering::SeqCst) {
                return;
            }
            thread::yield_now();
        }
        let mut used = 0;
        loop {
            device.disable_kicks(hal).unwrap();
            while let Some(chain) = device.pop(hal).unwrap() {
                device
                    .push_used(hal, chain.id, 8, chain.descriptors, true)
                    .unwrap();
                used += 1;
            }
            let more = device.enable_kicks(hal).unwrap();
            if !more || drain == DeviceDrain::NoRecheck {
                break;
            }
        }
        if used > 0 && device.needs_interrupt(hal).unwrap() {
            interrupt.store(true, Ordering::SeqCst);
        }
    }
}

fn config() -> Config {
    let mut config = Config::new();
    config.max_steps = MaxSteps::FailAfter(STEP_BOUND);
    config
}

/// Runs `round_trips` under random schedules and under PCT (depth 3: bugs that need up to two
/// preemptions at the right places).
fn check(event_idx: bool, isr: DriverIsr, drain: DeviceDrain) {
    Runner::new(RandomScheduler::new(SCHEDULES), config())
        .run(move || round_trips(event_idx, isr, drain));
    Runner::new(PctScheduler::new(3, SCHEDULES), config())
        .run(move || round_trips(event_idx, isr, drain));
}

#[test]
fn no_interrupt_or_kick_is_lost_with_event_idx() {
    check(true, DriverIsr::Recheck, DeviceDrain::Recheck);
}

#[test]
fn no_interrupt_or_kick_is_lost_with_flag_suppression() {
    check(false, DriverIsr::Recheck, DeviceDrain::Recheck);
}

#[test]
#[should_panic(expected = "max_steps")]
fn a_driver_that_does_not_recheck_after_rearming_hangs() {
    check(true, DriverIsr::NoRecheck, DeviceDrain::Recheck);
}

#[test]
#[should_panic(expected = "max_steps")]
fn a_device_that_does_not_recheck_after_reenabling_kicks_hangs() {
    check(true, DriverIsr::Recheck, DeviceDrain::NoRecheck);
}
