//! `cargo xtask bench`: the ring benchmark under callgrind (instructions per I/O) with its
//! kick and interrupt counts, for our split and packed rings and for rcore-os virtio-drivers;
//! then the miniport path (the real miniport under the StorPort simulator, see [`miniport`])
//! against the QEMU-like iothread device (1 and 4 processors) and the inline device, with the
//! heaviest functions per I/O; last the `bench-summary:` line. `cargo xtask bench --miniport`
//! runs only the summary's two miniport rows (about a minute), for the loop of optimising the
//! path.
//!
//! Instruction counts are deterministic for a given binary, so they are printed, never timed.
//! The job fails on a stall (a lost kick or interrupt re-arm, reported by the benchmark
//! itself), on ring batching that stops working (more than 0.1 kicks per I/O at queue depth
//! 32), and when a summary figure goes past its budget in tools/bench/budgets.toml
//! ([`budgets`]).

mod budgets;
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
/// configuration. `--miniport` measures only the two miniport rows of the summary (the
/// iothread device, one processor, depths 1 and 32) with their profiles, and checks no budget:
/// the quick loop while optimising the path.
pub fn bench(args: &[String]) -> Result<(), String> {
    let quick = match args {
        [] => false,
        [flag] if flag == "--miniport" => true,
        _ => {
            return Err(format!(
                "bench: unknown arguments {args:?} (only --miniport)"
            ));
        }
    };
    crate::util::ensure_tool("valgrind", "--version", "valgrind")?;
    run(cargo().args([
        "build",
        "--profile",
        "bench-driver",
        "--package",
        "rvscsi-bench",
    ]))?;
    if quick {
        return summary_miniport_rows();
    }
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
    let rows = miniport_rows();
    let paths = rows
        .iter()
        .map(|&row| miniport::measure(row))
        .collect::<Result<Vec<_>, _>>()?;
    print_paths(&paths, &results);
    print_profiles(&paths);
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
                "miniport path {:?}: {:.4} kicks and {:.4} interrupts per I/O, more than one",
                path.row, path.kicks_per_io, path.interrupts_per_io
            ));
        }
    }
    let figures = summary(&paths, &results)?;
    println!(
        "\nbench-summary: {}",
        figures
            .iter()
            .map(|(name, value)| if name.contains("instr_") {
                format!("{name}={value:.0}")
            } else {
                format!("{name}={value:.4}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let text = std::fs::read_to_string(workspace_root().join(budgets::PATH))
        .map_err(|e| format!("{}: {e}", budgets::PATH))?;
    let over = budgets::over_budget(&budgets::parse(&text)?, &figures);
    if !over.is_empty() {
        return Err(format!("over budget: {}", over.join("; ")));
    }
    Ok(())
}

/// `--miniport`: the two miniport rows of the summary (the iothread device, one processor,
/// depths 1 and 32), their table and profiles; no budget is checked.
fn summary_miniport_rows() -> Result<(), String> {
    let paths = [1, 32]
        .into_iter()
        .map(|depth| {
            miniport::measure(miniport::Row {
                device: miniport::Device::IoThread,
                processors: 1,
                depth,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    print_paths(&paths, &[]);
    print_profiles(&paths);
    Ok(())
}

/// The miniport path rows: the QEMU-like iothread device on 1 and on 4 processors (4 queues,
/// every completion on its submitter), then the inline device, each at depths 1, 8 and 32.
fn miniport_rows() -> Vec<miniport::Row> {
    let mut rows = Vec::new();
    for (device, processors) in [
        (miniport::Device::IoThread, 1),
        (miniport::Device::IoThread, 4),
        (miniport::Device::Inline, 1),
    ] {
        for depth in [1, 8, 32] {
            rows.push(miniport::Row {
                device,
                processors,
                depth,
            });
        }
    }
    rows
}

/// The summary figures ([`budgets::FIGURES`], in order): the miniport's from the iothread
/// device on one processor, the ring's from the split ring without indirect tables against
/// virtio-drivers, both at depth 32. Kicks and interrupts are the callgrind runs': callgrind
/// runs one thread at a time, so the device's batches, and with them the counts, repeat from
/// run to run. The native run's counts follow the host's scheduling (the device thread racing
/// the simulated processor: 0.03 interrupts per I/O at depth 32 on an idle machine, 0.26 under
/// a loaded CI run), so they are printed in the table for information and not budgeted.
fn summary(
    paths: &[miniport::PathMeasurement],
    rings: &[Measurement],
) -> Result<Vec<(&'static str, f64)>, String> {
    let path = |depth: u32| {
        paths
            .iter()
            .find(|p| {
                p.row
                    == miniport::Row {
                        device: miniport::Device::IoThread,
                        processors: 1,
                        depth,
                    }
            })
            .ok_or_else(|| format!("no iothread row at depth {depth}"))
    };
    let ring = |name: &str| {
        rings
            .iter()
            .find(|m| m.ring == name && !m.indirect && m.depth == 32)
            .ok_or_else(|| format!("no {name} ring row at depth 32"))
    };
    let (qd1, qd32) = (path(1)?, path(32)?);
    let (split, peer) = (ring("split")?, ring("peer")?);
    let figures = [
        qd1.instructions_per_io,
        qd32.instructions_per_io,
        qd32.kicks_per_io_callgrind,
        qd32.interrupts_per_io_callgrind,
        split.instructions_per_io,
        split.instructions_per_io / peer.instructions_per_io,
    ];
    Ok(budgets::FIGURES.into_iter().zip(figures).collect())
}

/// The ten heaviest counted functions per I/O of the iothread rows on one processor.
fn print_profiles(paths: &[miniport::PathMeasurement]) {
    for path in paths
        .iter()
        .filter(|p| p.row.device == miniport::Device::IoThread && p.row.processors == 1)
    {
        println!(
            "\ntop functions per I/O, {} device, depth {} ({:.1} instructions per I/O in all):",
            path.row.device.name(),
            path.row.depth,
            path.instructions_per_io
        );
        for (name, per_io) in path.functions.iter().take(10) {
            println!("{per_io:>9.1}  {name}");
        }
    }
}

/// The miniport path table, with the split ring's indirect figure (the miniport's ring
/// format for these reads) at the same depth for comparison.
fn print_paths(paths: &[miniport::PathMeasurement], rings: &[Measurement]) {
    println!(
        "\nminiport path: real miniport under the StorPort simulator, 4 KiB reads, depth per \
         processor (instructions: rvscsi + the virtio-core it calls, {} minus {} reads; \
         kicks and irqs: native run, (cg) callgrind runs; IOPS: wall clock, information only)",
        miniport::IOS_LONG,
        miniport::IOS_SHORT
    );
    println!(
        "{:<9} {:>4} {:>5} {:>9} {:>13} {:>8} {:>9} {:>13} {:>12} {:>9}",
        "device",
        "cpus",
        "depth",
        "instr/IO",
        "ring instr/IO",
        "kicks/IO",
        "irqs/IO",
        "kicks/IO (cg)",
        "irqs/IO (cg)",
        "IOPS"
    );
    for path in paths {
        let ring = rings
            .iter()
            .find(|m| m.ring == "split" && m.indirect && m.depth == path.row.depth)
            .map_or(String::from("-"), |m| {
                format!("{:.1}", m.instructions_per_io)
            });
        println!(
            "{:<9} {:>4} {:>5} {:>9.1} {:>13} {:>8.4} {:>9.4} {:>13.4} {:>12.4} {:>9.0}",
            path.row.device.name(),
            path.row.processors,
            path.row.depth,
            path.instructions_per_io,
            ring,
            path.kicks_per_io,
            path.interrupts_per_io,
            path.kicks_per_io_callgrind,
            path.interrupts_per_io_callgrind,
            path.iops
        );
    }
}
