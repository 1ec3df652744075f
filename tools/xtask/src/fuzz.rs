//! `cargo xtask fuzz [--seconds N]`: runs every cargo-fuzz target in `tools/fuzz` for N seconds
//! (default 30) and fails if any finds a crash, naming the input that crashed it.
//!
//! Not part of `cargo xtask ci`: libFuzzer needs a nightly toolchain (`-Zsanitizer`), which a
//! fresh CI machine does not have. The job installs cargo-fuzz when it is missing.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{run, workspace_root};

/// The fuzz crate, relative to the workspace root.
const FUZZ_DIR: &str = "tools/fuzz";

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 30;

/// Runs the job.
pub fn fuzz(args: &[String]) -> Result<(), String> {
    let seconds = parse_seconds(args)?;
    ensure_cargo_fuzz()?;
    let targets = list_targets()?;
    if targets.is_empty() {
        return Err(format!("no fuzz targets in {FUZZ_DIR}"));
    }
    let mut summary = Vec::new();
    let mut crashes = Vec::new();
    for target in &targets {
        let (line, crash) = run_target(target, seconds)?;
        summary.push(format!(
            "{target:<20} {}",
            line.unwrap_or_else(|| "(no final status line)".into())
        ));
        if let Some(crash) = crash {
            crashes.push(crash);
        }
    }
    eprintln!("\nxtask fuzz: {seconds} s per target");
    for line in &summary {
        eprintln!("  {line}");
    }
    if crashes.is_empty() {
        Ok(())
    } else {
        Err(crashes.join("; "))
    }
}

/// `--seconds N`, or the default.
fn parse_seconds(args: &[String]) -> Result<u64, String> {
    match args {
        [] => Ok(DEFAULT_SECONDS),
        [flag, value] if flag == "--seconds" => value
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("--seconds wants a positive number, not {value:?}")),
        _ => Err(format!(
            "usage: cargo xtask fuzz [--seconds N], not {args:?}"
        )),
    }
}

/// Installs cargo-fuzz from crates.io unless `cargo fuzz` already answers.
fn ensure_cargo_fuzz() -> Result<(), String> {
    let installed = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if installed {
        return Ok(());
    }
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
        .map_err(|e| format!("{e}: cargo-fuzz is needed (and a nightly toolchain)"))
}

/// `cargo +nightly fuzz <subcommand>` on the fuzz crate, from the workspace root. The rustup
/// proxy (`cargo` on PATH), not `$CARGO`: only the proxy understands `+nightly`.
fn cargo_fuzz(subcommand: &str) -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(workspace_root()).args([
        "+nightly",
        "fuzz",
        subcommand,
        "--fuzz-dir",
        FUZZ_DIR,
    ]);
    command
}

/// The targets, as cargo-fuzz lists them.
fn list_targets() -> Result<Vec<String>, String> {
    let output = cargo_fuzz("list")
        .output()
        .map_err(|e| format!("cannot run cargo fuzz list: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Files in `dir` (none if it does not exist yet).
fn files_in(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// Runs one target for `seconds`, echoing libFuzzer's output. Returns its final status line
/// (`DONE cov: ... exec/s: ...`) and, if it failed, a message naming the crashing input.
fn run_target(target: &str, seconds: u64) -> Result<(Option<String>, Option<String>), String> {
    let artifacts = workspace_root()
        .join(FUZZ_DIR)
        .join("artifacts")
        .join(target);
    let before = files_in(&artifacts);
    let mut command = cargo_fuzz("run");
    command
        .arg(target)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .stderr(Stdio::piped());
    eprintln!("xtask: running {command:?}");
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let mut done = None;
    let mut written = None;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if let Some(at) = line.find("DONE") {
                done = Some(line[at + 4..].trim().to_owned());
            }
            if let Some(at) = line.find("Test unit written to ") {
                // libFuzzer names it relative to its working directory, the workspace root.
                let path = line[at + "Test unit written to ".len()..].trim();
                written = Some(workspace_root().join(path).display().to_string());
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {command:?}: {e}"))?;
    if status.success() {
        return Ok((done, None));
    }
    let new: Vec<String> = files_in(&artifacts)
        .difference(&before)
        .map(|path| path.display().to_string())
        .collect();
    let input = written
        .or_else(|| (!new.is_empty()).then(|| new.join(", ")))
        .unwrap_or_else(|| "no input file written".into());
    Ok((
        done,
        Some(format!(
            "{target} failed ({status}); crashing input: {input}"
        )),
    ))
}
