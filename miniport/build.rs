//! The miniport's build script: adds wdk-build's kernel-driver link arguments in the WDK flow.
//!
//! windows-drivers-rs' cargo-make flow (`cargo make` with `Makefile.toml`, on a Windows host
//! with the WDK) sets `RVSCSI_WDK_BUILD`; then wdk-build reads the `[package.metadata.wdk]`
//! driver model from Cargo.toml and emits the WDM link arguments (`/DRIVER`, `/KERNEL`,
//! `/SUBSYSTEM:NATIVE`, `/ENTRY:DriverEntry`, `/INTEGRITYCHECK`, ...) and the WDK library
//! paths for the cdylib. Everywhere else the script does nothing: on Linux (the rlib, the
//! tests, and `cargo xtask package`'s rust-lld cross build, which passes its own link
//! arguments) wdk-build is not even compiled, and on a Windows host outside the flow
//! `cargo xtask package` keeps linking exactly as it does on Linux.

/// Set by Makefile.toml: this build is windows-drivers-rs' driver flow.
#[cfg(windows)]
const WDK_FLOW_VARIABLE: &str = "RVSCSI_WDK_BUILD";

#[cfg(not(windows))]
fn main() {
    // Without this line Cargo reruns the script whenever any file of the package changes.
    println!("cargo::rerun-if-changed=build.rs");
}

#[cfg(windows)]
fn main() -> Result<(), wdk_build::ConfigError> {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed={WDK_FLOW_VARIABLE}");
    // A build script runs on the host; the crate it configures is compiled for the target,
    // which Cargo describes in CARGO_CFG_*. Only a *-windows-msvc kernel image gets the WDK's
    // link arguments.
    let target_is_windows_msvc = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("msvc");
    if target_is_windows_msvc && std::env::var_os(WDK_FLOW_VARIABLE).is_some() {
        wdk_build::configure_wdk_binary_build()?;
    }
    Ok(())
}
