//! The CI jobs: formatting, lints, docs and tests, each also runnable on its own.

use crate::util::{cargo, run};

/// Every CI check, in order of increasing cost, stopping at the first failure.
pub fn run_all(args: &[String]) -> Result<(), String> {
    fmt(args)?;
    clippy(args)?;
    doc(args)?;
    test(args)?;
    fuzz(args)?;
    soak_short(args)?;
    crate::bench::bench(args)?;
    crate::package::ci(args)?;
    crate::sim_image::sim_image(args)?;
    crate::vmtest::run_vmtest(&[])
}

/// Every fuzz target for [`crate::fuzz::CI_SECONDS`] from its kept corpus (nightly and
/// cargo-fuzz installed if missing); a crash fails naming the input.
pub fn fuzz(_: &[String]) -> Result<(), String> {
    crate::fuzz::fuzz(&["--seconds".into(), crate::fuzz::CI_SECONDS.to_string()])
}

/// The soak, shortened to [`crate::soak::CI_IOS`] I/Os (about a minute at most).
pub fn soak_short(_: &[String]) -> Result<(), String> {
    crate::soak::soak(&["--ios".into(), crate::soak::CI_IOS.to_string()])
}

/// `cargo fmt --check` over the workspace.
pub fn fmt(_: &[String]) -> Result<(), String> {
    run(cargo().args(["fmt", "--all", "--check"]))
}

/// Clippy on every crate and target with warnings (pedantic included) as errors.
pub fn clippy(_: &[String]) -> Result<(), String> {
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))
}

/// rustdoc with warnings as errors (broken intra-doc links fail).
pub fn doc(_: &[String]) -> Result<(), String> {
    run(cargo()
        .args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings"))
}

/// The workspace's tests, with and without the test-utils fakes.
pub fn test(_: &[String]) -> Result<(), String> {
    // Layout probes against mingw-w64's headers must run in CI, never skip: the cross compiler
    // (its package pulls in mingw-w64's headers) is installed if missing.
    crate::util::ensure_tool(
        "x86_64-w64-mingw32-gcc",
        "--version",
        "gcc-mingw-w64-x86-64",
    )?;
    run(cargo()
        .args(["test", "--workspace", "--all-features"])
        .env("RVSCSI_REQUIRE_LAYOUT_PROBE", "1"))?;
    run(cargo().args([
        "test",
        "--package",
        "virtio-core",
        "--lib",
        "--no-default-features",
    ]))?;
    // Every scenario again on packed rings: the device offers VIRTIO_F_RING_PACKED (served by
    // virtio-core's spec-written packed device) and the miniport takes it, so the miniport's
    // packed path runs everything the split path does (the hosts scenario checks which ring
    // was negotiated).
    run(cargo()
        .args(["test", "--package", "rvscsi-tests", "--tests"])
        .env(RING_ENV, "packed"))?;
    // The data-integrity scenario at full size (the default run above does 4,000 I/Os): 100,000
    // random reads and writes through the real miniport, the simulator and the device, every
    // byte checked. Optimised, so it takes seconds rather than a minute.
    run(cargo()
        .args([
            "test",
            "--release",
            "--package",
            "rvscsi-tests",
            "--test",
            "miniport",
            "random_io_from_many_processors_matches_a_shadow_copy",
        ])
        .env("RVSCSI_IO_COUNT", SCENARIO_IOS))?;
    // Every scenario again under DMA remapping (the simulator's IOMMU mode, README "DMA
    // remapping"; `rvscsi_tests::harness::IOMMU_VARIABLE`): the device reaches only what
    // StorPort mapped for it, at the bus addresses StorPort handed out.
    run(cargo()
        .args(["test", "--package", "rvscsi-tests", "--tests"])
        .env("RVSCSI_IOMMU", "1"))
}

/// The harness's ring switch, `rvscsi_tests::harness::RING_ENV` (xtask does not link the test
/// crate; the harness refuses a value it does not know, so a mismatch fails loudly).
const RING_ENV: &str = "RVSCSI_RING";

/// I/Os of the full-size data-integrity scenario (issue 3: at least 100,000).
const SCENARIO_IOS: &str = "100000";
