//! The soak: random reads and writes from every processor over every request queue while faults
//! are injected at random (device errors, BUSY and TASK SET FULL, commands the device never
//! answers until StorPort's timeout resets the bus, DEVICE_NEEDS_RESET mid-I/O, windows of
//! lost interrupts, hot-unplug and re-plug), every byte read checked against a shadow copy,
//! and every region read back at the end. `cargo xtask soak` runs it (one million I/Os).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rvscsi::storport::SRB_STATUS_SUCCESS;
use virtio_core::scsi::Response;

use crate::device::target::Lun;
use crate::device::{CompletionMode, DeviceOptions, FaultAction, RequestInfo};
use crate::harness::{Machine, boot};
use crate::scenario::{Rng, STANDARD_BUS, read10, write10};
use crate::sim::{Request, SimOptions};

/// Blocks of each unit (8 MiB).
const BLOCKS: u64 = 1 << 14;
/// The largest transfer, in blocks.
const MAX_BLOCKS: u64 = 256;
/// Attempts of one I/O before the soak gives up on it (a fault that never heals).
const MAX_ATTEMPTS: u32 = 2000;

/// How a soak runs.
#[derive(Clone, Copy, Debug)]
pub struct SoakOptions {
    /// I/Os to complete (each counted once, however many attempts it took).
    pub ios: usize,
    /// Seed of every random choice (loads, faults, their timing).
    pub seed: u64,
    /// Simulated processors, each submitting on its own thread to its own queue.
    pub processors: u32,
}

/// Faults injected, per kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Commands answered with a failure without executing (`VIRTIO_SCSI_S_FAILURE`, or
    /// CHECK CONDITION with MEDIUM ERROR sense).
    pub device_errors: u64,
    /// Commands answered BUSY or TASK SET FULL (queue full) without executing.
    pub busy: u64,
    /// Commands never answered: StorPort's timeout and the miniport's bus reset end them.
    pub timeouts: u64,
    /// DEVICE_NEEDS_RESET raised with I/O in flight.
    pub needs_reset: u64,
    /// Windows in which the device raised no queue interrupt.
    pub lost_interrupt_windows: u64,
    /// Units hot-unplugged (and plugged back).
    pub unplugs: u64,
}

/// What a soak did.
#[derive(Clone, Debug, Default)]
pub struct SoakFigures {
    /// I/Os completed with SUCCESS and checked.
    pub ios: u64,
    /// Bytes they moved.
    pub bytes: u64,
    /// Failed attempts sent again, by SRB status.
    pub retries: BTreeMap<u8, u64>,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Full device resets the miniport did.
    pub resets: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl std::fmt::Display for SoakFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        let per_second =
            f64::from(u32::try_from(self.ios).unwrap_or(u32::MAX)) / seconds.max(f64::EPSILON);
        write!(
            f,
            "{} I/Os ({} MiB) in {seconds:.1} s ({per_second:.0} I/Os per second); faults: {:?}; \
             miniport device resets: {}; retried attempts by SRB status: {:x?}",
            self.ios,
            self.bytes >> 20,
            self.faults,
            self.resets,
            self.retries
        )
    }
}

/// A generator many threads draw from: SplitMix64 over a shared counter.
struct SharedRandom(AtomicU64);

impl SharedRandom {
    fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The fault counters the hook and the controller share.
#[derive(Default)]
struct Counters {
    device_errors: AtomicU64,
    busy: AtomicU64,
    timeouts: AtomicU64,
    needs_reset: AtomicU64,
    lost_interrupt_windows: AtomicU64,
    unplugs: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> FaultCounts {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FaultCounts {
            device_errors: load(&self.device_errors),
            busy: load(&self.busy),
            timeouts: load(&self.timeouts),
            needs_reset: load(&self.needs_reset),
            lost_interrupt_windows: load(&self.lost_interrupt_windows),
            unplugs: load(&self.unplugs),
        }
    }
}

/// Runs a soak.
///
/// # Panics
/// On a data mismatch, an I/O that never succeeds, or a breach of the simulator's or the
/// device's rules.
#[must_use]
pub fn soak(options: SoakOptions) -> SoakFigures {
    let started = Instant::now();
    let device = DeviceOptions {
        request_queues: 4,
        seg_max: 1024,
        queue_size: 256,
        hotplug: true,
        completion: CompletionMode::Delayed {
            max_delay: Duration::from_micros(100),
            shuffle: true,
        },
        seed: options.seed,
        ..DeviceOptions::default()
    };
    let sim = SimOptions {
        processors: options.processors,
        // The miniport ends a reset asynchronously, within its task management deadline.
        reset_grace: Some(Duration::from_secs(5)),
        ..SimOptions::default()
    };
    let luns = STANDARD_BUS
        .iter()
        .map(|&(target, lun)| (target, lun, Lun::memory(BLOCKS, 512).expect("a disk")))
        .collect();
    let machine = Arc::new(boot(sim, device, luns).expect("boot"));
    let counters = Arc::new(Counters::default());
    install_fault_hook(&machine, &counters, options.seed);
    let stop = Arc::new(AtomicBool::new(false));
    let controller = {
        let machine = Arc::clone(&machine);
        let counters = Arc::clone(&counters);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || inject_faults(&machine, &counters, &stop, options.seed))
    };
    let remaining = Arc::new(AtomicU64::new(options.ios as u64));
    let loads: Vec<_> = (0..options.processors)
        .map(|processor| {
            let machine = Arc::clone(&machine);
            let remaining = Arc::clone(&remaining);
            std::thread::spawn(move || load(&machine, processor, options, &remaining))
        })
        .collect();
    let mut figures = SoakFigures::default();
    let mut shadows = Vec::new();
    for thread in loads {
        let (load, shadow) = thread.join().expect("a load thread panicked");
        figures.ios += load.ios;
        figures.bytes += load.bytes;
        for (status, count) in load.retries {
            *figures.retries.entry(status).or_default() += count;
        }
        shadows.push(shadow);
    }
    stop.store(true, Ordering::SeqCst);
    controller.join().expect("the fault controller panicked");
    machine.device.set_fault_hook(None);
    machine.device.suppress_interrupts(false);
    for (processor, shadow) in (0..options.processors).zip(&shadows) {
        read_back(&machine, processor, options.processors, shadow);
    }
    figures.faults = counters.snapshot();
    figures.resets = machine
        .miniport()
        .map_or(0, |m| m.resets.load(Ordering::Relaxed));
    let machine = Arc::try_unwrap(machine)
        .ok()
        .expect("every thread is done with the machine");
    machine.finish();
    figures.elapsed = started.elapsed();
    figures
}

/// The device fails, refuses or drops READ(10)/WRITE(10) commands at random, without
/// executing them.
fn install_fault_hook(machine: &Machine, counters: &Arc<Counters>, seed: u64) {
    let random = SharedRandom(AtomicU64::new(seed ^ 0xFA17));
    let counters = Arc::clone(counters);
    machine
        .device
        .set_fault_hook(Some(Arc::new(move |info: &RequestInfo| {
            if !matches!(info.cdb.first(), Some(0x28 | 0x2A)) {
                return FaultAction::Normal;
            }
            match random.next() % 100_000 {
                0..100 => {
                    counters.device_errors.fetch_add(1, Ordering::Relaxed);
                    FaultAction::Respond(Response::Failure)
                }
                100..200 => {
                    counters.device_errors.fetch_add(1, Ordering::Relaxed);
                    // CHECK CONDITION, fixed sense: MEDIUM ERROR, UNRECOVERED READ ERROR.
                    let mut sense = vec![0x70, 0, 0x03, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x11, 0];
                    sense.resize(18, 0);
                    FaultAction::ScsiStatus {
                        status: 0x02,
                        sense,
                    }
                }
                200..300 => {
                    counters.busy.fetch_add(1, Ordering::Relaxed);
                    FaultAction::ScsiStatus {
                        status: if random.next().is_multiple_of(2) {
                            0x08
                        } else {
                            0x28
                        },
                        sense: Vec::new(),
                    }
                }
                300..302 => {
                    counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    FaultAction::Drop
                }
                _ => FaultAction::Normal,
            }
        })));
}

/// Until `stop`: every 20 to 120 ms one of DEVICE_NEEDS_RESET, a window of lost interrupts,
/// or a hot-unplug and re-plug of a unit.
fn inject_faults(machine: &Machine, counters: &Counters, stop: &AtomicBool, seed: u64) {
    let mut rng = Rng(seed ^ 0xC017_201E | 1);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20 + rng.next_u64() % 100));
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match rng.next_u64() % 8 {
            0 => {
                counters.needs_reset.fetch_add(1, Ordering::Relaxed);
                machine.device.raise_needs_reset();
            }
            1 => {
                counters
                    .lost_interrupt_windows
                    .fetch_add(1, Ordering::Relaxed);
                machine.device.suppress_interrupts(true);
                std::thread::sleep(Duration::from_millis(1 + rng.next_u64() % 5));
                machine.device.suppress_interrupts(false);
            }
            2 => {
                let (target, lun) = STANDARD_BUS[(rng.next_u64() % 3) as usize];
                if let Some(unplugged) = machine.device.hot_unplug(target, lun) {
                    counters.unplugs.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1 + rng.next_u64() % 10));
                    machine
                        .device
                        .hot_plug(target, lun, unplugged.unit)
                        .expect("a LUN number in range");
                }
            }
            _ => {}
        }
    }
}

/// What one processor's load did.
#[derive(Default)]
struct LoadFigures {
    ios: u64,
    bytes: u64,
    retries: BTreeMap<u8, u64>,
}

/// The shadow of one processor's region of every unit.
type Shadow = Vec<Vec<u8>>;

/// The region of `processor` on every unit: its first block and its length.
fn region(processor: u32, processors: u32) -> (u64, u64) {
    let blocks = BLOCKS / u64::from(processors);
    (u64::from(processor) * blocks, blocks)
}

/// One processor's share: random reads and writes in its region of every unit until the soak
/// has done its I/Os, each attempted until it succeeds, each read checked against the shadow.
fn load(
    machine: &Machine,
    processor: u32,
    options: SoakOptions,
    remaining: &AtomicU64,
) -> (LoadFigures, Shadow) {
    let (base, blocks_per_region) = region(processor, options.processors);
    let mut shadow: Shadow = vec![vec![0; (blocks_per_region * 512) as usize]; STANDARD_BUS.len()];
    let mut rng = Rng(options.seed ^ (u64::from(processor) + 1).wrapping_mul(0x9E37_79B9));
    let mut figures = LoadFigures::default();
    while remaining
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        let unit = (rng.next_u64() % STANDARD_BUS.len() as u64) as usize;
        let (target, lun) = STANDARD_BUS[unit];
        let lun = lun as u8;
        let blocks = match rng.next_u64() % 32 {
            0 => 1 + rng.next_u64() % MAX_BLOCKS,
            _ => 1 + rng.next_u64() % 16,
        };
        let start = rng.next_u64() % (blocks_per_region - blocks + 1);
        let lba = u32::try_from(base + start).expect("a small disk");
        let count = u16::try_from(blocks).expect("a small transfer");
        let bytes = (blocks * 512) as usize;
        let offset = (start * 512) as usize;
        let region = &mut shadow[unit];
        let mut request = if rng.next_u64().is_multiple_of(2) {
            let data: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
            region[offset..offset + bytes].copy_from_slice(&data);
            Request::new(target, lun, &write10(lba, count)).writing(&data)
        } else {
            Request::new(target, lun, &read10(lba, count)).reading(bytes as u32)
        };
        request.data_offset = (rng.next_u64() % 8) as u16 * 512;
        let done = execute_until_success(machine, processor, &request, &mut figures.retries);
        if request.data_in_len > 0 {
            assert!(
                done.data == region[offset..offset + bytes],
                "processor {processor}: data mismatch reading {target}:{lun} LBA {lba} x{blocks}"
            );
        }
        figures.ios += 1;
        figures.bytes += bytes as u64;
    }
    (figures, shadow)
}

/// Sends `request` until it succeeds (a failed WRITE is sent again with the same data, so the
/// shadow holds whichever attempt landed), counting the failed attempts by status.
fn execute_until_success(
    machine: &Machine,
    processor: u32,
    request: &Request,
    retries: &mut BTreeMap<u8, u64>,
) -> crate::sim::Completion {
    for _ in 0..MAX_ATTEMPTS {
        let done = machine
            .adapter
            .execute(processor, request)
            .unwrap_or_else(|error| panic!("processor {processor}: {error:?}"));
        if done.status() == SRB_STATUS_SUCCESS {
            return done;
        }
        *retries.entry(done.status()).or_default() += 1;
        // A unit being plugged back in, or a reset being finished: give it a moment.
        std::thread::sleep(Duration::from_micros(200));
    }
    panic!(
        "processor {processor}: {:?} to {}:{} failed {MAX_ATTEMPTS} times",
        request.cdb, request.target, request.lun
    );
}

/// Reads back `processor`'s region of every unit and compares it with its shadow.
fn read_back(machine: &Machine, processor: u32, processors: u32, shadow: &Shadow) {
    let (base, blocks) = region(processor, processors);
    let mut retries = BTreeMap::new();
    for (unit, expected) in shadow.iter().enumerate() {
        let (target, lun) = STANDARD_BUS[unit];
        let lun = lun as u8;
        let mut at = 0;
        while at < blocks {
            let count = MAX_BLOCKS.min(blocks - at);
            let lba = u32::try_from(base + at).expect("a small disk");
            let request = Request::new(
                target,
                lun,
                &read10(lba, u16::try_from(count).expect("a small transfer")),
            )
            .reading((count * 512) as u32);
            let done = execute_until_success(machine, processor, &request, &mut retries);
            let range = (at * 512) as usize..((at + count) * 512) as usize;
            assert!(
                done.data == expected[range],
                "final read-back: {target}:{lun} LBA {lba} x{count} differs from the shadow"
            );
            at += count;
        }
    }
}
