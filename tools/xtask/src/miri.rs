//! `cargo xtask miri`: virtio-core's and the miniport's unit tests under Miri (nightly), which
//! checks the unsafe DMA accessors, the SRB view and carved tables, pointer provenance and the
//! two-thread tests for undefined behaviour.
//!
//! Not part of `cargo xtask ci`: it needs a nightly toolchain with the miri component, which a
//! fresh CI machine does not have and which nightly releases do not always ship. The job
//! installs them with rustup when it can and says so when it cannot.

use crate::util::{run, workspace_root};

/// Miri flags, each for a reason:
/// - weak-memory emulation stays on (Miri's default): it is the check that matters most for the
///   rings' memory ordering. It needs one access size per location, which both rings keep
///   (every descriptor and event field is always accessed at its own size, see
///   `virtio-core/src/queue/split.rs`' `DescriptorTable`);
/// - isolation is off because proptest reads the working directory for its failure files.
const MIRIFLAGS: &str = "-Zmiri-disable-isolation";

/// Runs the job.
pub fn miri(_: &[String]) -> Result<(), String> {
    let has_miri = std::process::Command::new("cargo")
        .args(["+nightly", "miri", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !has_miri {
        run(std::process::Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "miri,rust-src",
        ]))
        .map_err(|e| format!("{e}: Miri needs a nightly toolchain with the miri component"))?;
    }
    // The rustup proxy (`cargo` on PATH), not `$CARGO`: only the proxy understands `+nightly`.
    // virtio-core (the DMA accessors and rings) and the miniport's own unsafe (the SRB view,
    // carved tables, the LUN table's lock) are interpreted; both run as Linux libraries.
    run(std::process::Command::new("cargo")
        .current_dir(workspace_root())
        .args([
            "+nightly",
            "miri",
            "test",
            "--package",
            "virtio-core",
            "--package",
            "rvscsi",
            "--lib",
        ])
        .env("MIRIFLAGS", MIRIFLAGS)
        // Miri interprets every instruction: a few cases per property are what it can afford.
        .env("PROPTEST_CASES", "2")
        .env(
            "CARGO_TARGET_DIR",
            crate::util::workspace_root().join("target/miri"),
        ))
}
