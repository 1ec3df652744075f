//! `cargo xtask fuzz [--seconds N] [--target NAME]`: runs every cargo-fuzz target in
//! `tools/fuzz` (or one) for N seconds each (default 30), from the minimised corpus kept in the
//! repository (`tools/fuzz/corpus/<target>/`, read only: what a run finds goes to
//! `target/fuzz-corpus/<target>/`), and fails if any finds a crash, naming the input that
//! crashed it. `cargo xtask ci` runs it with [`CI_SECONDS`] per target.
//!
//! `cargo xtask fuzz cmin [--target NAME]` minimises the kept corpora (`cargo fuzz cmin`, in
//! place), after new inputs were copied in from a campaign's working corpus.
//!
//! libFuzzer needs a nightly toolchain (`-Zsanitizer`): the job installs nightly (minimal
//! profile) and cargo-fuzz when they are missing.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{run, workspace_root};

/// The fuzz crate, relative to the workspace root.
const FUZZ_DIR: &str = "tools/fuzz";

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 30;

/// Seconds per target in `cargo xtask ci`: six targets, three minutes, plus the build.
pub const CI_SECONDS: u64 = 30;

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    /// Minimise the kept corpora instead of fuzzing.
    cmin: bool,
    seconds: u64,
    /// Only this target.
    target: Option<String>,
}

/// Runs the job.
pub fn fuzz(args: &[String]) -> Result<(), String> {
    let options = parse(args)?;
    ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let mut targets = list_targets()?;
    if let Some(only) = &options.target {
        if !targets.contains(only) {
            return Err(format!("no fuzz target {only:?} (targets: {targets:?})"));
        }
        targets.retain(|target| target == only);
    }
    if targets.is_empty() {
        return Err(format!("no fuzz targets in {FUZZ_DIR}"));
    }
    if options.cmin {
        for target in &targets {
            cmin(target)?;
        }
        return Ok(());
    }
    let seconds = options.seconds;
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

/// `[cmin] [--seconds N] [--target NAME]`.
fn parse(args: &[String]) -> Result<Options, String> {
    let usage =
        || format!("usage: cargo xtask fuzz [cmin] [--seconds N] [--target NAME], not {args:?}");
    let mut options = Options {
        cmin: false,
        seconds: DEFAULT_SECONDS,
        target: None,
    };
    let mut rest = args;
    if let [first, tail @ ..] = rest
        && first == "cmin"
    {
        options.cmin = true;
        rest = tail;
    }
    while let [flag, value, tail @ ..] = rest {
        match flag.as_str() {
            "--seconds" => {
                options.seconds =
                    value.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                        format!("--seconds wants a positive number, not {value:?}")
                    })?;
            }
            "--target" => options.target = Some(value.clone()),
            _ => return Err(usage()),
        }
        rest = tail;
    }
    if rest.is_empty() {
        Ok(options)
    } else {
        Err(usage())
    }
}

/// Installs the nightly toolchain (minimal profile) unless `cargo +nightly` already answers.
fn ensure_nightly() -> Result<(), String> {
    let installed = Command::new("cargo")
        .args(["+nightly", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if installed {
        return Ok(());
    }
    run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
        .map_err(|e| format!("{e}: libFuzzer needs a nightly toolchain"))
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

/// The corpus of `target` kept in the repository.
fn kept_corpus(target: &str) -> PathBuf {
    workspace_root().join(FUZZ_DIR).join("corpus").join(target)
}

/// Minimises the kept corpus of `target` in place.
fn cmin(target: &str) -> Result<(), String> {
    let kept = kept_corpus(target);
    std::fs::create_dir_all(&kept).map_err(|e| format!("{}: {e}", kept.display()))?;
    run(cargo_fuzz("cmin").arg(target).arg(&kept))
}

/// Runs one target for `seconds` from its kept corpus, echoing libFuzzer's output. Returns its
/// final status line (`DONE cov: ... exec/s: ...`) and, if it failed, a message naming the
/// crashing input.
fn run_target(target: &str, seconds: u64) -> Result<(Option<String>, Option<String>), String> {
    let artifacts = workspace_root()
        .join(FUZZ_DIR)
        .join("artifacts")
        .join(target);
    let before = files_in(&artifacts);
    // libFuzzer writes what it finds into its first corpus directory only: a scratch one, so
    // the kept corpus changes only through `cmin`.
    let scratch = workspace_root()
        .join("target")
        .join("fuzz-corpus")
        .join(target);
    let kept = kept_corpus(target);
    for dir in [&scratch, &kept] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut command = cargo_fuzz("run");
    command
        .arg(target)
        .arg(&scratch)
        .arg(&kept)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|&arg| arg.to_owned()).collect()
    }

    #[test]
    fn the_command_line_names_the_mode_the_time_and_the_target() {
        assert_eq!(
            parse(&args(&[])),
            Ok(Options {
                cmin: false,
                seconds: DEFAULT_SECONDS,
                target: None
            })
        );
        assert_eq!(
            parse(&args(&["--seconds", "5", "--target", "hostile_device"])),
            Ok(Options {
                cmin: false,
                seconds: 5,
                target: Some("hostile_device".into())
            })
        );
        assert_eq!(
            parse(&args(&["cmin"])),
            Ok(Options {
                cmin: true,
                seconds: DEFAULT_SECONDS,
                target: None
            })
        );
        assert!(parse(&args(&["--seconds", "0"])).is_err());
        assert!(parse(&args(&["--seconds"])).is_err());
        assert!(parse(&args(&["run"])).is_err());
    }
}
