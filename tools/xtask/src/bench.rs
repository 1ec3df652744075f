//! `cargo xtask bench`: the ring benchmark under callgrind (instructions per I/O) with its
//! kick and interrupt counts, for our split and packed rings and for rcore-os virtio-drivers;
//! then the miniport path (the real miniport under the StorPort simulator, see [`miniport`])
//! next to the ring-only figure.
//!
//! Instruction counts are deterministic for a given binary, so they are printed, never timed.
//! The job fails only on what is a correctness property of the rings: a stall (a lost kick or
//! interrupt re-arm, reported by the benchmark itself) or batching that stops working (more than
//! 0.1 kicks per I/O at queue depth 32, the project's target).

mod miniport;

use std::process::Command;

use crate::util::{cargo, run, workspace_root};

/// I/Os per configuration: enough to wrap the u16 ring indices (65,536) is not needed here (the
/// unit tests do that); enough that setup is negligible in the per-I/O figures.
const IOS: u64 = 20_000;
/// The functions whose instructions count as driver work (see tools/bench/src/main.rs).
const COUNTED: [&str; 4] = [
    "*driver_submit*",
    "*driver_complete*",
    "*peer_submit*",
    "*peer_complete*",
];

/// One measured configuration.
struct Measurement {
    ring: &'static str,
    depth: u32,
    indirect: bool,
    instructions_per_io: f64,
    kicks_per_io: f64,
    interrupts_per_io: f64,
}

/// The value of `key=value` in a benchmark's output line.
fn field(line: &str, key: &str) -> Result<f64, String> {
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .ok_or_else(|| format!("benchmark output lacks {key}: {line}"))?
        .parse()
        .map_err(|e| format!("{key} in {line}: {e}"))
}

fn measure(ring: &'static str, depth: u32, indirect: bool) -> Result<Measurement, String> {
    let binary = workspace_root().join("target/bench-driver/rvscsi-bench");
    let out_file = workspace_root().join(format!(
        "target/bench-driver/callgrind.{ring}.{depth}.{indirect}"
    ));
    let mut command = Command::new("valgrind");
    command
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()));
    for function in COUNTED {
        command.arg(format!("--toggle-collect={function}"));
    }
    command.arg(&binary).args([
        "--ring",
        ring,
        "--depth",
        &depth.to_string(),
        "--ios",
        &IOS.to_string(),
    ]);
    if indirect {
        command.arg("--indirect");
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run valgrind (apt-get install valgrind): {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "{ring} depth {depth} indirect {indirect}: {stdout}{stderr}"
        ));
    }
    let collected: f64 = stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .ok_or_else(|| format!("no callgrind total in: {stderr}"))?
        .trim()
        .parse()
        .map_err(|e| format!("callgrind total: {e}"))?;
    let line = stdout
        .lines()
        .find(|l| l.starts_with("ring="))
        .ok_or("no benchmark line")?;
    #[expect(clippy::cast_precision_loss, reason = "I/O counts far below 2^52")]
    let ios = IOS as f64;
    Ok(Measurement {
        ring,
        depth,
        indirect,
        instructions_per_io: collected / ios,
        kicks_per_io: field(line, "kicks_per_io")?,
        interrupts_per_io: field(line, "interrupts_per_io")?,
    })
}

/// Builds the benchmark with the driver's optimisation settings and measures every
/// configuration.
pub fn bench(_: &[String]) -> Result<(), String> {
    crate::util::ensure_tool("valgrind", "--version", "valgrind")?;
    run(cargo().args([
        "build",
        "--profile",
        "bench-driver",
        "--package",
        "rvscsi-bench",
    ]))?;
    let mut results = Vec::new();
    for ring in ["split", "packed", "peer"] {
        for indirect in [false, true] {
            if ring == "peer" && indirect {
                continue; // virtio-drivers' indirect tables are heap memory (see the benchmark).
            }
            for depth in [1, 8, 32] {
                results.push(measure(ring, depth, indirect)?);
            }
        }
    }
    println!(
        "\n{:<7} {:>5} {:>9} {:>10} {:>8} {:>10} {:>14}",
        "ring", "depth", "indirect", "instr/IO", "kicks/IO", "irqs/IO", "instr vs peer"
    );
    for m in &results {
        let peer = results
            .iter()
            .find(|p| p.ring == "peer" && p.depth == m.depth);
        let ratio = peer.map_or(String::from("-"), |p| {
            format!("{:.2}x", m.instructions_per_io / p.instructions_per_io)
        });
        println!(
            "{:<7} {:>5} {:>9} {:>10.1} {:>8.4} {:>10.4} {:>14}",
            m.ring,
            m.depth,
            m.indirect,
            m.instructions_per_io,
            m.kicks_per_io,
            m.interrupts_per_io,
            ratio
        );
    }
    let paths = [1, 8, 32]
        .into_iter()
        .map(miniport::measure)
        .collect::<Result<Vec<_>, _>>()?;
    print_paths(&paths, &results);
    for m in results.iter().filter(|m| m.ring != "peer" && m.depth == 32) {
        if m.kicks_per_io > 0.1 {
            return Err(format!(
                "{} ring (indirect {}) needs {:.4} kicks per I/O at depth 32; batching is broken (target 0.1)",
                m.ring, m.indirect, m.kicks_per_io
            ));
        }
    }
    for path in &paths {
        // A kick announces at least one new request and an interrupt at least one completion
        // (EVENT_IDX); more of either than I/Os is spurious work.
        if path.kicks_per_io > 1.0 || path.interrupts_per_io > 1.0 {
            return Err(format!(
                "miniport path at depth {}: {:.4} kicks and {:.4} interrupts per I/O, more than one",
                path.depth, path.kicks_per_io, path.interrupts_per_io
            ));
        }
    }
    Ok(())
}

/// The miniport path table, with the split ring's indirect figure (the miniport's ring
/// format for these reads) at the same depth for comparison.
fn print_paths(paths: &[miniport::PathMeasurement], rings: &[Measurement]) {
    println!(
        "\nminiport path: real miniport under the StorPort simulator, 1 processor, 4 KiB reads \
         (instructions: rvscsi + the virtio-core it calls, {} minus {} reads; IOPS: wall clock, information only)",
        miniport::IOS_LONG,
        miniport::IOS_SHORT
    );
    println!(
        "{:>5} {:>12} {:>13} {:>8} {:>9} {:>12} {:>9}",
        "depth", "instr/IO", "ring instr/IO", "kicks/IO", "irqs/IO", "irqs/IO (cg)", "IOPS"
    );
    for path in paths {
        let ring = rings
            .iter()
            .find(|m| m.ring == "split" && m.indirect && m.depth == path.depth)
            .map_or(String::from("-"), |m| {
                format!("{:.1}", m.instructions_per_io)
            });
        println!(
            "{:>5} {:>12.1} {:>13} {:>8.4} {:>9.4} {:>12.4} {:>9.0}",
            path.depth,
            path.instructions_per_io,
            ring,
            path.kicks_per_io,
            path.interrupts_per_io,
            path.interrupts_per_io_callgrind,
            path.iops
        );
    }
}
