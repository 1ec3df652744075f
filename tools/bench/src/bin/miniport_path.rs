//! Miniport path benchmark: the real miniport booted by the StorPort simulator on the virtio-scsi
//! device model, 4 KiB reads kept `--depth` deep on each of `--processors` simulated processors
//! (one request queue each, every completion on the submitting processor), counting kicks and
//! interrupts per I/O and timing I/Os per second.
//!
//! `--device iothread` (the default) is the device as QEMU runs it with an iothread
//! ([`CompletionMode::QEMU_IOTHREAD`]: batches, a poll window after each kick, EVENT_IDX
//! suppression as QEMU does it); `--device inline` completes every request in the notifying
//! register write, which no real host does, and is kept as the second row.
//!
//! Instructions per I/O are counted by `cargo xtask bench`, which runs this binary under
//! `valgrind --tool=callgrind` twice with different I/O counts and keeps only the functions of
//! the miniport (`rvscsi::`) and the virtio-core code it calls (`virtio_core::`): the
//! difference per I/O leaves out boot and the bus scan, the symbol filter leaves out the
//! simulator, the device model and this harness. The wall-clock rate is information only: it
//! measures the simulator and the device as much as the miniport, and nothing asserts it.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rvscsi::storport::SRB_STATUS_SUCCESS;
use rvscsi_tests::device::{CompletionMode, DeviceOptions, DeviceStats, Lun};
use rvscsi_tests::harness::{Machine, boot};
use rvscsi_tests::sim::{Request, SimOptions, Ticket};

/// Bytes per read.
const READ_LEN: u32 = 4096;
/// Blocks of the disk (512-byte blocks, 32 MiB, sparse: reads of unwritten blocks are zeroes).
const DISK_BLOCKS: u64 = 1 << 16;
/// Index of the first request queue (0 is the controlq, 1 the eventq).
const FIRST_REQUEST_QUEUE: usize = 2;
/// How long one request may take before the run is declared stalled. Generous because
/// callgrind slows everything down some fifty times.
const WAIT: Duration = Duration::from_mins(2);

/// The device the miniport runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Device {
    /// QEMU with an iothread.
    IoThread,
    /// Completions inside the kick.
    Inline,
}

impl Device {
    fn name(self) -> &'static str {
        match self {
            Self::IoThread => "iothread",
            Self::Inline => "inline",
        }
    }

    fn completion(self) -> CompletionMode {
        match self {
            Self::IoThread => CompletionMode::QEMU_IOTHREAD,
            Self::Inline => CompletionMode::Inline,
        }
    }
}

/// What one run measures.
#[derive(Clone, Copy, Debug)]
struct Config {
    /// Reads in flight per processor.
    depth: usize,
    /// Reads in all.
    ios: u64,
    device: Device,
    /// Simulated processors, each with its own request queue.
    processors: u32,
}

/// What one run counted over the measured reads only (not boot or the bus scan).
struct Counts {
    kicks: u64,
    interrupts: u64,
    /// SCSI completions on another processor than the submitter.
    completed_elsewhere: u64,
    elapsed: Duration,
}

/// READ(10) of `READ_LEN` bytes at `lba`.
fn read10(lba: u32) -> Request {
    let blocks = (READ_LEN / 512) as u16;
    let mut cdb = [0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    let mut request = Request::new(0, 0, &cdb).reading(READ_LEN);
    // The simulated clock runs in real time (`timeout_scale` below), so this is a minute of
    // wall time even under callgrind: a timeout here means a lost completion, not slowness.
    request.timeout_seconds = 60;
    request
}

/// Notifications and interrupts of the request queues.
fn request_queue_totals(stats: &DeviceStats) -> (u64, u64) {
    stats
        .queues
        .iter()
        .skip(FIRST_REQUEST_QUEUE)
        .fold((0, 0), |(kicks, interrupts), queue| {
            (kicks + queue.notifications, interrupts + queue.interrupts)
        })
}

/// `config.processors` processors with one request queue each, the device `config.device`.
fn start(config: Config) -> Result<Machine, String> {
    let queues = u16::try_from(config.processors).map_err(|e| format!("processors: {e}"))?;
    let sim = SimOptions {
        processors: config.processors,
        timeout_scale: Duration::from_secs(1),
        watchdog_period: Duration::from_millis(20),
        scan_targets: 1,
        ..SimOptions::default()
    };
    let device = DeviceOptions {
        request_queues: queues,
        completion: config.device.completion(),
        ..DeviceOptions::default()
    };
    let disk = Lun::memory(DISK_BLOCKS, 512).map_err(|e| format!("disk: {e:?}"))?;
    let machine = boot(sim, device, vec![(0, 0, disk)]).map_err(|e| format!("boot: {e:?}"))?;
    let disks = machine
        .adapter
        .scan_bus()
        .map_err(|e| format!("bus scan: {e:?}"))?;
    if disks.len() != 1 {
        return Err(format!("bus scan found {} disks, expected 1", disks.len()));
    }
    Ok(machine)
}

/// Waits for `ticket` and checks the read succeeded in full.
fn finish_one(machine: &Machine, ticket: Ticket) -> Result<(), String> {
    let done = machine
        .adapter
        .wait(ticket, WAIT)
        .map_err(|e| format!("stalled: {e:?}"))?;
    if done.status() != SRB_STATUS_SUCCESS || done.data_transfer_length != READ_LEN {
        return Err(format!(
            "read failed: SRB status {:#x}, {} bytes",
            done.srb_status, done.data_transfer_length
        ));
    }
    Ok(())
}

/// Keeps `depth` reads in flight on `processor` until `ios` completed: submit a window, then
/// each time the oldest completes, submit the next.
fn load(
    machine: &Machine,
    processor: u32,
    depth: usize,
    ios: u64,
    first_lba: u64,
) -> Result<(), String> {
    let blocks_per_read = u64::from(READ_LEN / 512);
    let mut in_flight = VecDeque::with_capacity(depth);
    let mut submitted = 0u64;
    while submitted < ios || !in_flight.is_empty() {
        while in_flight.len() < depth && submitted < ios {
            let lba = (first_lba + submitted * blocks_per_read) % (DISK_BLOCKS - blocks_per_read);
            let request = read10(u32::try_from(lba).map_err(|e| format!("lba: {e}"))?);
            let ticket = machine
                .adapter
                .submit(processor, &request)
                .map_err(|e| format!("submit: {e:?}"))?;
            in_flight.push_back(ticket);
            submitted += 1;
        }
        if let Some(ticket) = in_flight.pop_front() {
            finish_one(machine, ticket)?;
        }
    }
    Ok(())
}

/// Runs [`load`] on every processor at once, `config.ios` reads in all.
fn run(machine: &Machine, config: Config) -> Result<Counts, String> {
    let (kicks_before, interrupts_before) = request_queue_totals(&machine.device.stats());
    let elsewhere_before = machine.adapter.port_queue_figures().completed_elsewhere;
    let processors = u64::from(config.processors);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let loads: Vec<_> = (0..config.processors)
            .map(|processor| {
                let p = u64::from(processor);
                // The reads split as evenly as they go; each processor reads its own region.
                let ios = config.ios / processors + u64::from(p < config.ios % processors);
                scope.spawn(move || load(machine, processor, config.depth, ios, p * 4096))
            })
            .collect();
        loads.into_iter().try_for_each(|load| {
            load.join()
                .map_err(|_| "a load thread panicked".to_string())?
        })
    })?;
    let elapsed = started.elapsed();
    let (kicks_after, interrupts_after) = request_queue_totals(&machine.device.stats());
    Ok(Counts {
        kicks: kicks_after - kicks_before,
        interrupts: interrupts_after - interrupts_before,
        completed_elsewhere: machine.adapter.port_queue_figures().completed_elsewhere
            - elsewhere_before,
        elapsed,
    })
}

fn parse(args: &[String]) -> Result<Config, String> {
    let mut config = Config {
        depth: 1,
        ios: 10_000,
        device: Device::IoThread,
        processors: 1,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--depth" => config.depth = value()?.parse().map_err(|e| format!("--depth: {e}"))?,
            "--ios" => config.ios = value()?.parse().map_err(|e| format!("--ios: {e}"))?,
            "--device" => {
                config.device = match value()?.as_str() {
                    "iothread" => Device::IoThread,
                    "inline" => Device::Inline,
                    other => return Err(format!("--device: {other} is not iothread or inline")),
                }
            }
            "--processors" => {
                config.processors = value()?.parse().map_err(|e| format!("--processors: {e}"))?;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !(1..=8).contains(&config.processors) {
        return Err("processors must be 1..=8".into());
    }
    // The device's cmd_per_lun (128) bounds what the miniport lets one LUN queue.
    if config.depth == 0 || config.depth * config.processors as usize > 128 {
        return Err("depth times processors must be 1..=128".into());
    }
    if config.ios == 0 {
        return Err("--ios must be at least 1".into());
    }
    Ok(config)
}

fn measure(config: Config) -> Result<Counts, String> {
    let machine = start(config)?;
    let counts = run(&machine, config)?;
    let violations = machine.adapter.shutdown();
    if violations.is_empty() {
        Ok(counts)
    } else {
        Err(format!("StorPort contract violations: {violations:?}"))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse(&args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!(
                "rvscsi-miniport-bench: {message}\nusage: rvscsi-miniport-bench [--depth N] [--ios N] \
                 [--device iothread|inline] [--processors N]"
            );
            return ExitCode::from(2);
        }
    };
    let counts = match measure(config) {
        Ok(counts) => counts,
        Err(message) => {
            eprintln!("rvscsi-miniport-bench: depth {}: {message}", config.depth);
            return ExitCode::from(3);
        }
    };
    #[expect(
        clippy::cast_precision_loss,
        reason = "ratios of counts far below 2^52"
    )]
    let per_io = |n: u64| n as f64 / config.ios as f64;
    #[expect(clippy::cast_precision_loss, reason = "I/O counts far below 2^52")]
    let iops = config.ios as f64 / counts.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    println!(
        "path=miniport device={} processors={} depth={} ios={} kicks={} interrupts={} \
         kicks_per_io={:.4} interrupts_per_io={:.4} completed_elsewhere={} iops={:.0}",
        config.device.name(),
        config.processors,
        config.depth,
        config.ios,
        counts.kicks,
        counts.interrupts,
        per_io(counts.kicks),
        per_io(counts.interrupts),
        counts.completed_elsewhere,
        iops,
    );
    ExitCode::SUCCESS
}
