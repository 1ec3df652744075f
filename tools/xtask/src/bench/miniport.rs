//! The miniport path figure: instructions per I/O of the miniport's own code (submit and
//! complete) under the StorPort simulator, with kicks, interrupts and I/Os per second, against
//! a given device ([`Device`]) on one or more simulated processors.
//!
//! `rvscsi-miniport-bench` runs under `valgrind --tool=callgrind --separate-callers=3` twice,
//! with [`IOS_SHORT`] and [`IOS_LONG`] reads; the difference of the counted instructions over
//! the difference of the reads is the per-I/O figure, so boot and the bus scan (identical in
//! both runs) drop out. What is counted, function by function (exclusive cost, after fat-LTO
//! inlining, so inlined core/alloc helpers are already inside our functions):
//!
//! - every function of the miniport (`rvscsi::`);
//! - virtio-core's functions (`virtio_core::`, not its `fake` register file, which is the
//!   device model's) when the miniport called them, directly or through other virtio-core
//!   functions; the device model's own calls into virtio-core are left out;
//! - out-of-line helpers the miniport calls directly (libc `mem*`, which rvscsi-rt provides in
//!   the kernel image, and non-inlined `core::`/`alloc::` functions).
//!
//! Not counted: the StorPort exports the miniport calls (the simulator plays storport.sys),
//! the device model (register accesses end there), the harness, and the kernel's own cost of
//! an MMIO write or an interrupt.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use super::field;
use crate::util::workspace_root;

/// Reads in the short and the long callgrind run; their difference is what is measured.
pub const IOS_SHORT: u64 = 1_000;
/// See [`IOS_SHORT`].
pub const IOS_LONG: u64 = 5_000;
/// Reads in the native run that reports kicks, interrupts and I/Os per second.
const IOS_NATIVE: u64 = 20_000;
/// Callers callgrind keeps apart per function (enough to see past a virtio-core helper that
/// calls another).
const CALLER_DEPTH: u32 = 3;

/// The device model a row ran against (`rvscsi-miniport-bench --device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// QEMU with an iothread: batches, a poll window after each kick, EVENT_IDX as QEMU
    /// applies it (tests/src/device/iothread.rs).
    IoThread,
    /// Every request completed inside the kick's register write.
    Inline,
}

impl Device {
    /// The name `rvscsi-miniport-bench --device` takes and the table prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::IoThread => "iothread",
            Self::Inline => "inline",
        }
    }
}

/// One row of the miniport path table: what runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    /// The device model.
    pub device: Device,
    /// Simulated processors, each with its own request queue and reads in flight.
    pub processors: u32,
    /// Reads kept in flight per processor.
    pub depth: u32,
}

impl Row {
    fn args(self) -> [String; 6] {
        [
            "--device".into(),
            self.device.name().into(),
            "--processors".into(),
            self.processors.to_string(),
            "--depth".into(),
            self.depth.to_string(),
        ]
    }
}

/// The miniport path for one [`Row`].
pub struct PathMeasurement {
    /// What ran.
    pub row: Row,
    /// Instructions per I/O in the miniport path (see the module documentation).
    pub instructions_per_io: f64,
    /// Device notifications per I/O (native run).
    pub kicks_per_io: f64,
    /// Interrupts per I/O (native run).
    pub interrupts_per_io: f64,
    /// Interrupts per I/O in the measured part of the callgrind runs (their batching can
    /// differ from the native run's: the simulator's threads are serialised there).
    pub interrupts_per_io_callgrind: f64,
    /// Kicks per I/O in the measured part of the callgrind runs (never below zero).
    pub kicks_per_io_callgrind: f64,
    /// I/Os per second of the native run (information only).
    pub iops: f64,
    /// Counted instructions per I/O by function, highest first.
    pub functions: Vec<(String, f64)>,
}

/// Whether `name` is a function of the miniport or of virtio-core outside its fakes.
fn is_ours(name: &str) -> bool {
    let name = name.trim_start_matches('<');
    name.starts_with("rvscsi::")
        || (name.starts_with("virtio_core::") && !name.starts_with("virtio_core::fake::"))
}

fn is_miniport(name: &str) -> bool {
    name.trim_start_matches('<').starts_with("rvscsi::")
}

fn is_virtio_core(name: &str) -> bool {
    is_ours(name) && !is_miniport(name)
}

/// Out-of-line helpers that belong to whoever calls them.
fn is_helper(name: &str) -> bool {
    let name = name.trim_start_matches('<');
    name.starts_with("mem")
        || name.starts_with("__mem")
        || name.starts_with("core::")
        || name.starts_with("alloc::")
}

/// Whether one `--separate-callers` entry (`function'caller'caller...`) is miniport path work.
pub fn counted(entry: &str) -> bool {
    let mut frames = entry.split('\'');
    let Some(function) = frames.next() else {
        return false;
    };
    let callers: Vec<&str> = frames.collect();
    if is_miniport(function) {
        return true;
    }
    if is_virtio_core(function) {
        // Ours if the first caller outside virtio-core is the miniport; a context made only
        // of virtio-core frames (cut at CALLER_DEPTH) is the miniport's too, since the device
        // model's calls into virtio-core are shallow.
        return callers
            .iter()
            .find(|caller| !is_virtio_core(caller))
            .is_none_or(|caller| is_miniport(caller));
    }
    is_helper(function) && callers.first().is_some_and(|caller| is_ours(caller))
}

/// The counted exclusive instructions of a `callgrind_annotate --inclusive=no` report, by
/// function (callers' contexts merged).
pub fn counted_by_function(report: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut functions = BTreeMap::new();
    let mut rows = 0usize;
    for line in report.lines() {
        let line = line.trim_start();
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        // `(12.34%)  file:function'caller... [object]`
        let Some((_, location)) = rest.split_once(')') else {
            continue;
        };
        let location = location.trim();
        if location.starts_with("PROGRAM TOTALS") {
            continue;
        }
        let Some((_, function)) = location.split_once(':') else {
            continue;
        };
        let function = function
            .rsplit_once(" [")
            .map_or(function, |(name, _)| name);
        rows += 1;
        if counted(function) {
            let name = function.split('\'').next().unwrap_or(function);
            *functions.entry(name.to_string()).or_insert(0) += count;
        }
    }
    if rows == 0 {
        return Err("callgrind_annotate listed no functions".into());
    }
    Ok(functions)
}

/// One callgrind run's figures.
struct CallgrindRun {
    functions: BTreeMap<String, u64>,
    kicks: u64,
    interrupts: u64,
}

fn binary() -> std::path::PathBuf {
    workspace_root().join("target/bench-driver/rvscsi-miniport-bench")
}

/// One callgrind run: the counted instructions by function and the benchmark's kick and
/// interrupt counts.
fn callgrind(row: Row, ios: u64) -> Result<CallgrindRun, String> {
    let out_file = workspace_root().join(format!(
        "target/bench-driver/callgrind.miniport.{}.{}.{}.{ios}",
        row.device.name(),
        row.processors,
        row.depth
    ));
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--dump-instr=no")
        .arg(format!("--separate-callers={CALLER_DEPTH}"))
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(binary())
        .args(row.args())
        .args(["--ios", &ios.to_string()])
        .output()
        .map_err(|e| format!("cannot run valgrind (apt-get install valgrind): {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "miniport path {row:?} under callgrind: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("path=miniport"))
        .ok_or("no miniport benchmark line")?;
    let interrupts = field(line, "interrupts")?;
    let kicks = field(line, "kicks")?;
    let report = Command::new("callgrind_annotate")
        .args(["--inclusive=no", "--auto=no", "--threshold=100"])
        .arg(&out_file)
        .output()
        .map_err(|e| format!("cannot run callgrind_annotate: {e}"))?;
    if !report.status.success() {
        return Err(format!(
            "callgrind_annotate {}: {}",
            out_file.display(),
            String::from_utf8_lossy(&report.stderr)
        ));
    }
    let functions = counted_by_function(&String::from_utf8_lossy(&report.stdout))?;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "kick and interrupt counts printed as integers"
    )]
    Ok(CallgrindRun {
        functions,
        kicks: kicks as u64,
        interrupts: interrupts as u64,
    })
}

/// Measures the miniport path for `row`.
pub fn measure(row: Row) -> Result<PathMeasurement, String> {
    let started = Instant::now();
    let output = Command::new(binary())
        .args(row.args())
        .args(["--ios", &IOS_NATIVE.to_string()])
        .output()
        .map_err(|e| format!("cannot run the miniport benchmark: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "miniport path {row:?}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("path=miniport"))
        .ok_or("no miniport benchmark line")?;
    let short = callgrind(row, IOS_SHORT)?;
    let long = callgrind(row, IOS_LONG)?;
    let (short_total, long_total): (u64, u64) = (
        short.functions.values().sum(),
        long.functions.values().sum(),
    );
    if long_total <= short_total {
        return Err(format!(
            "miniport path {row:?}: {IOS_LONG} reads counted {long_total} instructions, \
             {IOS_SHORT} reads {short_total}; the attribution is broken"
        ));
    }
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let per_io = |n: i128| n as f64 / f64::from(u32::try_from(IOS_LONG - IOS_SHORT).unwrap_or(1));
    let mut functions: Vec<(String, f64)> = long
        .functions
        .iter()
        .map(|(name, &count)| {
            let before = short.functions.get(name).copied().unwrap_or(0);
            (name.clone(), per_io(i128::from(count) - i128::from(before)))
        })
        .collect();
    functions.sort_by(|a, b| b.1.total_cmp(&a.1));
    let steady_per_io =
        |long: u64, short: u64| per_io(i128::from(long) - i128::from(short)).max(0.0);
    eprintln!(
        "xtask: miniport path {row:?} measured in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(PathMeasurement {
        row,
        instructions_per_io: per_io(i128::from(long_total) - i128::from(short_total)),
        kicks_per_io: field(line, "kicks_per_io")?,
        interrupts_per_io: field(line, "interrupts_per_io")?,
        // Differenced like the instructions, so the start of the reads (the first requests
        // kick a device whose thread has not run yet: about a hundred kicks in either run)
        // drops out and the figure is the steady state's. Kicks are that rare at depth 32
        // that the short run can kick once or twice more than the long one; a negative count
        // per read (-0.0013 was printed) means zero.
        interrupts_per_io_callgrind: steady_per_io(long.interrupts, short.interrupts),
        kicks_per_io_callgrind: steady_per_io(long.kicks, short.kicks),
        iops: field(line, "iops")?,
        functions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miniport_functions_count_whoever_calls_them() {
        assert!(counted(
            "rvscsi::hw::hw_build_io'std::sys::backtrace::__rust_begin_short_backtrace"
        ));
        assert!(counted(
            "rvscsi::io::drain'rvscsi::hw::hw_queue_dpc'rvscsi_tests::sim::machine::Machine::run_pending_dpcs"
        ));
    }

    #[test]
    fn virtio_core_counts_only_under_the_miniport() {
        assert!(counted(
            "<virtio_core::queue::split::SplitQueue<S> as virtio_core::queue::Virtqueue>::add'rvscsi::hw::hw_start_io'x"
        ));
        assert!(counted(
            "virtio_core::queue::split::write_chain'<virtio_core::queue::split::SplitQueue<S> as virtio_core::queue::Virtqueue>::add'rvscsi::hw::hw_start_io"
        ));
        assert!(!counted(
            "virtio_core::scsi::Lun::decode'rvscsi_tests::device::VirtioScsiDevice::mmio_write'x"
        ));
        assert!(!counted(
            "virtio_core::fake::pci::FakeVirtioPci::device_config_bytes'rvscsi::hw::hw_start_io"
        ));
    }

    #[test]
    fn helpers_count_only_when_the_miniport_calls_them_directly() {
        assert!(counted(
            "__memcpy_avx_unaligned_erms'rvscsi::hw::hw_build_io'x"
        ));
        assert!(!counted(
            "__memcpy_avx_unaligned_erms'StorPortGetScatterGatherList'rvscsi::hw::hw_build_io"
        ));
        assert!(!counted("malloc'rvscsi::hw::hw_build_io"));
        assert!(!counted("StorPortNotification'rvscsi::io::drain"));
    }

    #[test]
    fn the_report_is_summed_over_counted_rows_only() {
        let report = "\
--------------------------------------------------------------------------------
138,918,614 (100.0%)  PROGRAM TOTALS
--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------
28,260,735 (20.64%)  /rustc/x/uint_macros.rs:<rvscsi_tests::harness::Memory as rvscsi_tests::sim::DmaArena>::alloc'a'b [/bin/x]
 1,340,008 ( 0.98%)  /rustc/x/uint_macros.rs:rvscsi::io::drain'rvscsi::hw::hw_queue_dpc'c [/bin/x]
   125,375 ( 0.09%)  /work/virtio-core/src/queue/split.rs:virtio_core::queue::split::write_chain'rvscsi::hw::hw_start_io [/bin/x]
    12,038 ( 0.01%)  ./string/memmove.S:__memcpy_avx_unaligned_erms'rvscsi::hw::hw_build_io'd [/usr/lib/libc.so.6]
     5,000 ( 0.01%)  ???:virtio_core::fake::pci::FakeVirtioPci::queue'rvscsi_tests::device::x
";
        let functions = counted_by_function(report).unwrap();
        assert_eq!(
            functions.values().sum::<u64>(),
            1_340_008 + 125_375 + 12_038
        );
        assert_eq!(functions["rvscsi::io::drain"], 1_340_008);
        assert!(counted_by_function("no rows here\n").is_err());
    }
}
