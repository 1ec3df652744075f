//! `cargo xtask bench`: the ring benchmark under callgrind (instructions per I/O) with its
//! kick and interrupt counts, for our split and packed rings and for rcore-os virtio-drivers.
//!
//! Instruction counts are deterministic for a given binary, so they are printed, never timed.
//! The job fails only on what is a correctness property of the rings: a stall (a lost kick or
//! interrupt re-arm, reported by the benchmark itself) or batching that stops working (more than
//! 0.1 kicks per I/O at queue depth 32, the project's target).

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
    for m in results.iter().filter(|m| m.ring != "peer" && m.depth == 32) {
        if m.kicks_per_io > 0.1 {
            return Err(format!(
                "{} ring (indirect {}) needs {:.4} kicks per I/O at depth 32; batching is broken (target 0.1)",
                m.ring, m.indirect, m.kicks_per_io
            ));
        }
    }
    Ok(())
}
