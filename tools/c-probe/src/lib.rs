//! The C layout probe the crates' layout tests share: `_Static_assert`s generated from Rust
//! sizes, offsets and constants, compiled (`-fsyntax-only`) by mingw-w64's x86-64 Windows cross
//! compiler against its headers, so a Rust layout that differs from C fails to compile.
//!
//! Needs `x86_64-w64-mingw32-gcc` (Debian: gcc-mingw-w64-x86-64); `RVSCSI_MINGW_CC` overrides
//! the compiler. Without it [`compiler`] returns `None` (the test prints SKIPPED), unless
//! `RVSCSI_REQUIRE_LAYOUT_PROBE` is set, as CI (`cargo xtask test`) does, where it panics.
//!
//! Test support: it panics on environment failures, as a test should.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `(C expression, Rust value)`: one static assertion.
pub type Check = (String, u64);

/// A check that the C expression `expr` equals `value`.
///
/// # Panics
/// If `value` does not fit 64 bits.
pub fn check(expr: &str, value: impl TryInto<u64>) -> Check {
    let Ok(value) = value.try_into() else {
        panic!("{expr}: value does not fit u64")
    };
    (expr.to_string(), value)
}

/// A translation unit: `prelude`, then one `_Static_assert` per check. The C side is cast to
/// `unsigned int` (NTSTATUS is a signed LONG); every value checked is a 32-bit quantity.
///
/// # Panics
/// If a value does not fit 32 bits.
#[must_use]
pub fn probe_source(prelude: &str, checks: &[Check]) -> String {
    let mut source = String::from(prelude);
    for (expr, value) in checks {
        assert!(
            u32::try_from(*value).is_ok(),
            "{expr} = {value} is not 32-bit"
        );
        let message = expr.replace('"', "'");
        let _ = writeln!(
            source,
            "_Static_assert((unsigned int)({expr}) == {value}u, \"{message} == {value}\");"
        );
    }
    source
}

/// The cross compiler, or `None` if it is not installed and the probe is not required.
///
/// # Panics
/// If the compiler is missing while `RVSCSI_REQUIRE_LAYOUT_PROBE` is set, or fails to run.
#[must_use]
pub fn compiler() -> Option<String> {
    let cc = std::env::var("RVSCSI_MINGW_CC").unwrap_or_else(|_| "x86_64-w64-mingw32-gcc".into());
    match Command::new(&cc).arg("--version").output() {
        Ok(output) if output.status.success() => Some(cc),
        Ok(output) => panic!(
            "{cc} --version failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error)
            if error.kind() == std::io::ErrorKind::NotFound
                && std::env::var_os("RVSCSI_REQUIRE_LAYOUT_PROBE").is_none() =>
        {
            None
        }
        Err(error) => panic!("cannot run {cc}: {error}"),
    }
}

/// mingw-w64's kernel headers (`ddk/`), found next to the compiler's own include directory.
///
/// # Panics
/// If no directory with `srb.h` is found.
#[must_use]
pub fn ddk_include_dir(cc: &str) -> PathBuf {
    let output = Command::new(cc)
        .arg("-print-sysroot")
        .output()
        .expect("run the compiler");
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let candidates = [
        PathBuf::from(&sysroot).join("mingw/include/ddk"),
        PathBuf::from(&sysroot).join("include/ddk"),
        PathBuf::from("/usr/share/mingw-w64/include/ddk"),
        PathBuf::from("/usr/x86_64-w64-mingw32/include/ddk"),
    ];
    candidates
        .into_iter()
        .find(|dir| dir.join("srb.h").is_file())
        .expect("mingw-w64's ddk headers (srb.h) next to the cross compiler")
}

/// A fresh directory for one test's sources (`name` keeps concurrent tests apart).
///
/// # Panics
/// If it cannot be created.
#[must_use]
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rvscsi-c-probe-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the probe's scratch directory");
    dir
}

/// Compiles `source` (written to `dir/name`) for syntax and static assertions, with `include`
/// directories on the path; the compiler's diagnostics on failure.
///
/// # Errors
/// The diagnostics when the unit does not compile (a static assertion failed).
///
/// # Panics
/// If the file cannot be written or the compiler cannot run.
pub fn compile(
    cc: &str,
    include: &[&Path],
    dir: &Path,
    name: &str,
    source: &str,
) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, source).expect("write the probe source");
    let mut command = Command::new(cc);
    command.args(["-std=gnu11", "-fsyntax-only", "-Werror"]);
    for directory in include {
        command.arg("-I").arg(directory);
    }
    let output = command.arg(&path).output().expect("run the compiler");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
