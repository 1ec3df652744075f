//! The miniport path figure: instructions per I/O of the miniport's own code (submit and
//! complete) under the StorPort simulator, with kicks, interrupts and I/Os per second.
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

/// The miniport path at one queue depth.
pub struct PathMeasurement {
    /// Reads kept in flight.
    pub depth: u32,
    /// Instructions per I/O in the miniport path (see the module documentation).
    pub instructions_per_io: f64,
    /// Device notifications per I/O (native run).
    pub kicks_per_io: f64,
    /// Interrupts per I/O (native run).
    pub interrupts_per_io: f64,
    /// Interrupts per I/O in the measured part of the callgrind runs (their batching can
    /// differ from the native run's: the simulator's threads are serialised there).
    pub interrupts_per_io_callgrind: f64,
    /// I/Os per second of the native run (information only).
    pub iops: f64,
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

/// Sums the counted exclusive instructions of a `callgrind_annotate --inclusive=no` report.
pub fn counted_instructions(report: &str) -> Result<u64, String> {
    let mut total = 0u64;
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
            total += count;
        }
    }
    if rows == 0 {
        return Err("callgrind_annotate listed no functions".into());
    }
    Ok(total)
}

fn binary() -> std::path::PathBuf {
    workspace_root().join("target/bench-driver/rvscsi-miniport-bench")
}

/// One callgrind run: the counted instructions and the benchmark's interrupt count.
fn callgrind(depth: u32, ios: u64) -> Result<(u64, u64), String> {
    let out_file = workspace_root().join(format!(
        "target/bench-driver/callgrind.miniport.{depth}.{ios}"
    ));
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--dump-instr=no")
        .arg(format!("--separate-callers={CALLER_DEPTH}"))
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(binary())
        .args(["--depth", &depth.to_string(), "--ios", &ios.to_string()])
        .output()
        .map_err(|e| format!("cannot run valgrind (apt-get install valgrind): {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "miniport path depth {depth} under callgrind: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("path=miniport"))
        .ok_or("no miniport benchmark line")?;
    let interrupts = field(line, "interrupts")?;
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
    let instructions = counted_instructions(&String::from_utf8_lossy(&report.stdout))?;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "an interrupt count printed as an integer"
    )]
    Ok((instructions, interrupts as u64))
}

/// Measures the miniport path at `depth`.
pub fn measure(depth: u32) -> Result<PathMeasurement, String> {
    let started = Instant::now();
    let output = Command::new(binary())
        .args([
            "--depth",
            &depth.to_string(),
            "--ios",
            &IOS_NATIVE.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot run the miniport benchmark: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "miniport path depth {depth}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("path=miniport"))
        .ok_or("no miniport benchmark line")?;
    let (short, short_interrupts) = callgrind(depth, IOS_SHORT)?;
    let (long, long_interrupts) = callgrind(depth, IOS_LONG)?;
    let Some(difference) = long.checked_sub(short).filter(|&d| d > 0) else {
        return Err(format!(
            "miniport path depth {depth}: {IOS_LONG} reads counted {long} instructions, \
             {IOS_SHORT} reads {short}; the attribution is broken"
        ));
    };
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let per_io = |n: u64| n as f64 / (IOS_LONG - IOS_SHORT) as f64;
    eprintln!(
        "xtask: miniport path depth {depth} measured in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(PathMeasurement {
        depth,
        instructions_per_io: per_io(difference),
        kicks_per_io: field(line, "kicks_per_io")?,
        interrupts_per_io: field(line, "interrupts_per_io")?,
        interrupts_per_io_callgrind: per_io(long_interrupts.saturating_sub(short_interrupts)),
        iops: field(line, "iops")?,
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
        assert_eq!(
            counted_instructions(report),
            Ok(1_340_008 + 125_375 + 12_038)
        );
        assert!(counted_instructions("no rows here\n").is_err());
    }
}
