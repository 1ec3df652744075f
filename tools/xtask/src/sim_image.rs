//! `cargo xtask sim-image [--target aarch64-pc-windows-msvc]`: every scenario of
//! `tests/tests/` on the shipped image. Builds the package (x64 by default), runs the scenario
//! binaries once on the linked miniport and once on the loaded `rvscsi.sys` (`RVSCSI_IMAGE`),
//! fails unless both runs pass the same number of scenarios per file, prints the image's stack
//! high-water table (merged across binaries; above the limit fails) and ends with the count of
//! scenarios passed on the image. For ARM64 the tests crate is cross-built for
//! `aarch64-unknown-linux-gnu` (Debian's `gcc-aarch64-linux-gnu`) and run under
//! `qemu-aarch64` (Debian's `qemu-user`), the image's code running as the emulated process's own.

use std::process::Command;

use std::collections::BTreeMap;
use std::path::Path;

use crate::util::cargo;

/// The stack one entry point of the image may use (half an x64 kernel stack).
const STACK_LIMIT_BYTES: u64 = 12 * 1024;
/// The prefix of the high-water lines a test binary prints at exit.
const STACK_LINE: &str = "rvscsi-image-stack: ";
/// The test binary of the loader's own checks (image mode only), not a scenario file.
const LOADER_TESTS: &str = "tests/shipped_image.rs";

/// Per scenario file (`tests/<name>.rs`), the tests passed.
type Counts = BTreeMap<String, u64>;

/// The miniport feature that plants a `c_ulong` for a `ULONG_PTR` (see miniport/Cargo.toml).
const PLANTED_FEATURE: &str = "planted-c-ulong";
/// The scenario the planted fault must fail on the image and pass on the linked miniport.
const PLANTED_SCENARIO: &str = "a_write_then_read_round_trips_on_every_processor";

/// Where the image runs: the driver target, and for a foreign one the Linux target the tests
/// crate is cross-built for and how it runs.
struct Host {
    /// The driver target the package is built for.
    driver_target: &'static str,
    /// The image's architecture, as the last line names it.
    name: &'static str,
    /// The cross target of the tests crate; `None` runs natively.
    cross: Option<Cross>,
}

/// A cross-built, emulated test run.
struct Cross {
    /// The Linux target triple.
    target: &'static str,
    /// Its environment: linker, C compiler (for the variadic exports) and runner.
    environment: [(&'static str, &'static str); 3],
    /// Scenarios left out under emulation, each with why (they are left out of both runs).
    skipped: &'static [(&'static str, &'static str)],
}

/// The scenarios whose real-time assumptions qemu-aarch64 (TCG, several times slower than
/// the host) breaks, on the linked build as on the image.
const EMULATION_SKIPS: &[(&str, &str)] = &[
    (
        "covered_commands_the_device_keeps_are_waited_for_then_reset",
        "its first case holds each request 500 ms and waits until the device holds all 300; \
         under emulation submitting 300 takes longer, so the first come back before the last \
         arrive (it fails on the linked AArch64 build alike)",
    ),
    (
        "a_large_direct_chain_is_not_starved_by_small_requests_on_a_busy_ring",
        "it must fill a 512-slot ring within a 500 ms hold from one emulated processor, which \
         qemu cannot; the requests then time out into a bus reset (on the linked AArch64 \
         build alike)",
    ),
];

impl Host {
    fn from_args(args: &[String]) -> Result<Self, String> {
        match args {
            [] => Ok(Self {
                driver_target: "x86_64-pc-windows-msvc",
                name: "shipped image",
                cross: None,
            }),
            [flag, target] if flag == "--target" && target == "x86_64-pc-windows-msvc" => {
                Self::from_args(&[])
            }
            [flag, target] if flag == "--target" && target == "aarch64-pc-windows-msvc" => {
                Ok(Self {
                    driver_target: "aarch64-pc-windows-msvc",
                    name: "shipped ARM64 image",
                    cross: Some(Cross {
                        target: "aarch64-unknown-linux-gnu",
                        environment: [
                            (
                                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                                "aarch64-linux-gnu-gcc",
                            ),
                            ("CC_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-gcc"),
                            (
                                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER",
                                "qemu-aarch64 -L /usr/aarch64-linux-gnu",
                            ),
                        ],
                        skipped: EMULATION_SKIPS,
                    }),
                })
            }
            _ => Err(
                "usage: cargo xtask sim-image [--target x86_64-pc-windows-msvc|aarch64-pc-windows-msvc]"
                    .into(),
            ),
        }
    }

    /// Installs what a cross run needs (the cross compiler, qemu-user, the Rust target).
    fn prepare(&self) -> Result<(), String> {
        if let Some(cross) = &self.cross {
            for (scenario, why) in cross.skipped {
                eprintln!("xtask sim-image: skipping {scenario} under emulation: {why}");
            }
            crate::util::ensure_tool(
                "aarch64-linux-gnu-gcc",
                "--version",
                "gcc-aarch64-linux-gnu",
            )?;
            crate::util::ensure_tool("qemu-aarch64", "--version", "qemu-user")?;
            crate::package::ensure_rust_target(cross.target)?;
        }
        Ok(())
    }

    /// `cargo test --package rvscsi-tests` for this host, image or not.
    fn test_command(&self, image: Option<&Path>) -> Command {
        let mut command = cargo();
        command.args(["test", "--package", "rvscsi-tests"]);
        if let Some(cross) = &self.cross {
            command.args(["--target", cross.target]);
            command.envs(cross.environment);
        }
        match image {
            Some(path) => command.env("RVSCSI_IMAGE", path),
            None => command.env_remove("RVSCSI_IMAGE"),
        };
        command
    }
}

/// `cargo xtask sim-image [--target ...]`.
pub fn sim_image(args: &[String]) -> Result<(), String> {
    let host = Host::from_args(args)?;
    host.prepare()?;
    planted_fault_fails_only_the_image(&host)?;
    let image = crate::package::miniport_image(host.driver_target, &[])?;
    let linked = run_scenarios(&host, None)?;
    let loaded = run_scenarios(&host, Some(&image))?;
    if linked.0 != loaded.0 {
        return Err(format!(
            "the image ran other scenarios than the linked miniport: linked {:?}, image {:?}",
            linked.0, loaded.0
        ));
    }
    let table = stack_table(&loaded.1);
    eprintln!(
        "image stack high-water per entry point, bytes (limit {STACK_LIMIT_BYTES}; \"deepest\" \
         is the deepest word the image wrote below the stack pointer it was called with, \
         \"at import\" its depth at its deepest call into the simulator):"
    );
    eprintln!(
        "  {:<26} {:>9} {:>8} {:>10}",
        "entry point", "calls", "deepest", "at import"
    );
    for (entry, (calls, bytes, at_import)) in &table {
        eprintln!("  {entry:<26} {calls:>9} {bytes:>8} {at_import:>10}");
    }
    if let Some((entry, water)) = table.iter().find(|(_, water)| water.1 > STACK_LIMIT_BYTES) {
        return Err(format!(
            "{entry} used {} bytes of stack, above {STACK_LIMIT_BYTES}",
            water.1
        ));
    }
    for (file, passed) in &loaded.0 {
        if file == LOADER_TESTS {
            eprintln!("  {file}: {passed} loader checks passed on the image");
        } else {
            eprintln!("  {file}: {passed} passed on the linked miniport and on the image");
        }
    }
    let total: u64 = loaded
        .0
        .iter()
        .filter(|(file, _)| file.as_str() != LOADER_TESTS)
        .map(|(_, passed)| passed)
        .sum();
    println!("{total} scenarios passed on the {}", host.name);
    Ok(())
}

/// Proves the image mode real: with the `planted-c-ulong` fault (a structure field 64 bits
/// wide on Linux and 32 on Windows), the linked miniport passes a data scenario and the image
/// built from the same source fails it.
fn planted_fault_fails_only_the_image(host: &Host) -> Result<(), String> {
    let planted = crate::package::miniport_image(host.driver_target, &[PLANTED_FEATURE])?;
    let scenario = |image: Option<&Path>| {
        let mut command = host.test_command(image);
        command.args(["--test", "miniport"]);
        if image.is_none() {
            command.args(["--features", &format!("rvscsi/{PLANTED_FEATURE}")]);
        }
        command.args(["--", "--exact", PLANTED_SCENARIO]);
        eprintln!("xtask: running {command:?}");
        command
            .output()
            .map_err(|e| format!("cannot start {command:?}: {e}"))
    };
    let linked = scenario(None)?;
    if !linked.status.success() {
        return Err(format!(
            "{PLANTED_SCENARIO} with {PLANTED_FEATURE} failed on the linked miniport, where \
             c_ulong is 64 bits and the layout unchanged: {}",
            String::from_utf8_lossy(&linked.stdout)
        ));
    }
    let loaded = scenario(Some(&planted))?;
    if loaded.status.success() {
        return Err(format!(
            "{PLANTED_SCENARIO} passed on the image built with {PLANTED_FEATURE}: the image \
             run did not notice a structure laid out differently on Windows"
        ));
    }
    eprintln!(
        "xtask sim-image: the planted c_ulong passes on the linked miniport and fails on the \
         image, as it must"
    );
    Ok(())
}

/// Runs every test binary of `rvscsi-tests` (`--test '*'`), on `image` if given; returns the
/// tests passed per file and the combined output.
fn run_scenarios(host: &Host, image: Option<&Path>) -> Result<(Counts, String), String> {
    let mut command = host.test_command(image);
    command.args(["--test", "*"]);
    if let Some(cross) = &host.cross {
        command.arg("--");
        for (scenario, _) in cross.skipped {
            command.args(["--skip", scenario]);
        }
    }
    eprintln!("xtask: running {command:?}");
    // One pipe for both streams, so cargo's "Running" lines (stderr) and the harness's results
    // (stdout) stay in order.
    let (mut reader, writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let writer_too = writer.try_clone().map_err(|e| format!("pipe: {e}"))?;
    command.stdout(writer).stderr(writer_too);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let description = format!("{command:?}");
    drop(command);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut reader, &mut text)
        .map_err(|e| format!("reading {description}: {e}"))?;
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {description}: {e}"))?;
    eprint!("{text}");
    if !status.success() {
        return Err(format!("{description} exited with {status}"));
    }
    let counts = count_passed(&text)?;
    Ok((counts, text))
}

/// The tests passed per `tests/<name>.rs`, from cargo's "Running" and "test result" lines;
/// a failed or ignored test is an error (a scenario that did not run on the image has not
/// passed on it).
fn count_passed(output: &str) -> Result<Counts, String> {
    let mut counts = Counts::new();
    let mut current: Option<String> = None;
    for line in output.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Running ") {
            current = rest.split_whitespace().next().map(str::to_owned);
        } else if let Some(result) = line.strip_prefix("test result: ") {
            let file = current
                .take()
                .ok_or_else(|| format!("a test result with no binary: {line}"))?;
            let number = |label: &str| -> Result<u64, String> {
                result
                    .split(';')
                    .map(str::trim)
                    .find_map(|part| {
                        part.trim_start_matches("ok. ")
                            .trim_start_matches("FAILED. ")
                            .strip_suffix(label)
                    })
                    .ok_or_else(|| format!("no '{label}' in: {line}"))?
                    .trim()
                    .parse()
                    .map_err(|e| format!("{line}: {e}"))
            };
            let (passed, failed, ignored) =
                (number(" passed")?, number(" failed")?, number(" ignored")?);
            if failed != 0 || ignored != 0 {
                return Err(format!("{file}: {failed} failed, {ignored} ignored"));
            }
            counts.insert(file, passed);
        }
    }
    if counts.is_empty() {
        return Err("no test binary ran".into());
    }
    Ok(counts)
}

/// One entry point's figures: calls, deepest use, deepest use at a call into the simulator.
type Water = (u64, u64, u64);

/// The high-water lines of every binary merged: per entry point, calls summed and the deepest
/// figures kept.
fn stack_table(output: &str) -> BTreeMap<String, Water> {
    let mut table = BTreeMap::new();
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix(STACK_LINE) else {
            continue;
        };
        let fields: Vec<&str> = rest.split('\t').collect();
        let [entry, numbers @ ..] = &fields[..] else {
            continue;
        };
        let Ok(numbers) = numbers
            .iter()
            .map(|field| field.parse::<u64>())
            .collect::<Result<Vec<u64>, _>>()
        else {
            continue;
        };
        if let [calls, bytes, at_import] = numbers[..] {
            let slot: &mut Water = table.entry((*entry).to_owned()).or_default();
            slot.0 += calls;
            slot.1 = slot.1.max(bytes);
            slot.2 = slot.2.max(at_import);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_tests_are_counted_per_file_and_failures_refused() {
        let output = "     Running tests/a.rs (target/debug/deps/a-1)\n\
                      test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n\
                      Running tests/b.rs (target/debug/deps/b-2)\n\
                      test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n";
        let counts = count_passed(output).unwrap();
        assert_eq!(counts["tests/a.rs"], 3);
        assert_eq!(counts["tests/b.rs"], 4);
        let failed = "Running tests/a.rs (x)\n\
                      test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n";
        assert!(count_passed(failed).is_err());
        let ignored = "Running tests/a.rs (x)\n\
                       test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out\n";
        assert!(count_passed(ignored).is_err());
        assert!(count_passed("").is_err());
    }

    #[test]
    fn stack_lines_merge_by_entry_point() {
        let output = "rvscsi-image-stack: StartIo\t10\t1000\t300\n\
                      noise\n\
                      rvscsi-image-stack: StartIo\t5\t1200\t200\n\
                      rvscsi-image-stack: DPC\t1\t800\t0\n\
                      rvscsi-image-stack: Broken\t1\n";
        let table = stack_table(output);
        assert_eq!(table["StartIo"], (15, 1200, 300));
        assert_eq!(table["DPC"], (1, 800, 0));
        assert!(!table.contains_key("Broken"));
    }
}
