//! xtask: the project's jobs, runnable the same way locally and in CI (`cargo xtask <job>`).
#![forbid(unsafe_code)]

mod bench;
mod bmf;
mod catalog;
mod ci;
mod der;
mod fuzz;
mod inf;
mod kernel_link;
mod miri;
mod package;
mod resources;
mod sim_image;
mod soak;
mod util;
mod vmtest;

use std::process::ExitCode;

/// One job: its name on the command line, a line of help, and what it runs.
struct Job {
    name: &'static str,
    help: &'static str,
    run: fn(&[String]) -> Result<(), String>,
}

const JOBS: &[Job] = &[
    Job {
        name: "ci",
        help: "every check CI runs (fmt, clippy, doc, tests, ...)",
        run: ci::run_all,
    },
    Job {
        name: "fmt",
        help: "cargo fmt --check",
        run: ci::fmt,
    },
    Job {
        name: "clippy",
        help: "clippy on every target, warnings denied",
        run: ci::clippy,
    },
    Job {
        name: "doc",
        help: "rustdoc, warnings denied",
        run: ci::doc,
    },
    Job {
        name: "test",
        help: "the workspace's unit and integration tests",
        run: ci::test,
    },
    Job {
        name: "bench",
        help: "ring and miniport path benchmarks: instructions (callgrind), kicks and interrupts per I/O; --miniport: only the summary's miniport rows",
        run: bench::bench,
    },
    Job {
        name: "miri",
        help: "virtio-core's unit tests under Miri (installs nightly + miri; not part of ci)",
        run: miri::miri,
    },
    Job {
        name: "fuzz",
        help: "every cargo-fuzz target (or --target NAME) for --seconds N each (default 30) from tools/fuzz/corpus; `cmin`: minimise the corpora (installs nightly, cargo-fuzz)",
        run: fuzz::fuzz,
    },
    Job {
        name: "soak",
        help: "random reads and writes with faults injected, checked against a shadow copy (--ios N, default 1,000,000; --seed S)",
        run: soak::soak,
    },
    Job {
        name: "package",
        help: "rvscsi.sys + PDB + INF for Windows (--target, --crate, --sign, --no-panic-check; `ci`: CI's package checks)",
        run: package::package,
    },
    Job {
        name: "pecheck",
        help: "the PE check alone: pecheck <image.sys> <image.pdb> [--target <triple>]",
        run: package::pecheck,
    },
    Job {
        name: "sim-image",
        help: "every scenario on the shipped rvscsi.sys loaded in the simulator: [--target aarch64-pc-windows-msvc] (under qemu-aarch64); builds the package",
        run: sim_image::sim_image,
    },
    Job {
        name: "vmtest",
        help: "QEMU guest against virtio-scsi-pci: [--tcg] [split|packed]",
        run: vmtest::run_vmtest,
    },
];

fn main() -> ExitCode {
    // Started by rustc as the linker of a kernel image (see `package`).
    if let Some(code) = kernel_link::run_if_asked() {
        return code;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(job) = args
        .first()
        .and_then(|name| JOBS.iter().find(|job| job.name == name))
    else {
        eprintln!("usage: cargo xtask <job> [args]\n\njobs:");
        for job in JOBS {
            eprintln!("  {:<10} {}", job.name, job.help);
        }
        return ExitCode::from(2);
    };
    match (job.run)(&args[1..]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask {}: FAILED: {message}", job.name);
            ExitCode::FAILURE
        }
    }
}
