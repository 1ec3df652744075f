//! Small helpers shared by the jobs: running commands and finding the workspace root.

use std::path::PathBuf;
use std::process::Command;

/// The workspace root (the parent of `tools/`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map_or(manifest.clone(), PathBuf::from)
}

/// `cargo` as invoked by the user (respects `$CARGO`).
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Runs `command`, echoing it first; an error names the command and its exit status.
pub fn run(command: &mut Command) -> Result<(), String> {
    eprintln!("xtask: running {command:?}");
    let status = command
        .status()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} exited with {status}"))
    }
}

/// Makes sure the Python module `module` (the independent readers' asn1crypto and pefile) is
/// importable, installing the PyPI package of the same name with pip when it is not.
///
/// # Errors
/// When python3 is missing or pip cannot install the module.
pub fn ensure_python_module(module: &str) -> Result<(), String> {
    let importable = || {
        Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if importable() {
        return Ok(());
    }
    eprintln!("xtask: Python's {module} is missing; installing it with pip");
    run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        module,
    ]))
    .map_err(|e| format!("cannot install {module} (python3 -m pip install {module}): {e}"))?;
    if importable() {
        Ok(())
    } else {
        Err(format!(
            "{module} still cannot be imported after pip install"
        ))
    }
}

/// Makes sure `program` runs (`program <probe>` succeeds), installing Debian `package` with
/// apt-get when it does not, so the README's commands work on a fresh Debian machine. Needs
/// root to install; says which package to install otherwise.
pub fn ensure_tool(program: &str, probe: &str, package: &str) -> Result<(), String> {
    let works = || {
        Command::new(program)
            .arg(probe)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works() {
        return Ok(());
    }
    eprintln!("xtask: {program} not found; installing {package} with apt-get");
    apt_install(package)?;
    if works() {
        Ok(())
    } else {
        Err(format!(
            "{program} still missing after installing {package}"
        ))
    }
}

/// Makes sure Debian `package` is installed (for packages that bring no program to probe, such
/// as QEMU's block driver modules), installing it with apt-get when it is not.
pub fn ensure_package(package: &str) -> Result<(), String> {
    let installed = || {
        Command::new("dpkg-query")
            .args(["--show", "--showformat=${Status}", package])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "install ok installed")
    };
    if installed() {
        return Ok(());
    }
    eprintln!("xtask: {package} is not installed; installing it with apt-get");
    apt_install(package)?;
    if installed() {
        Ok(())
    } else {
        Err(format!(
            "{package} still not installed after apt-get install"
        ))
    }
}

/// `apt-get update` and `apt-get install package`, non-interactively; needs root.
fn apt_install(package: &str) -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("cannot run id: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err(format!(
            "{package} is missing and installing it needs root: apt-get install {package}"
        ));
    }
    run(Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}
