//! rvscsi-pe-fixture: the smallest StorPort kernel-mode image, built to prove the package pipeline.
//!
//! `cargo xtask package --crate rvscsi-pe-fixture` links this crate exactly as it will link the
//! miniport (rust-lld in lld-link mode, `/DRIVER`, `/SUBSYSTEM:NATIVE`, `/ENTRY:DriverEntry`,
//! `/NODEFAULTLIB`, `/INTEGRITYCHECK`), so the PE check, the no-panic link, the INF check and
//! test signing all run on a real image before the miniport has its own `DriverEntry`.
//!
//! The image shows the three things every rvscsi kernel image needs:
//! - imports from `storport.sys` only, declared with `raw-dylib` and `+verbatim` (without
//!   `+verbatim` the import would name `storport.sys.dll`);
//! - a panic handler that needs nothing outside `storport.sys` (`kernel`);
//! - its own `memcpy`, `memmove`, `memset` and `memcmp` (`mem`), because nothing else in a
//!   `/NODEFAULTLIB` link provides them.
//!
//! On other targets, and in test builds (whose harness brings std and its panic handler), the
//! crate is empty, so the host workspace builds and tests it like any other crate.
#![no_std]

#[cfg(all(windows, target_env = "msvc", not(test)))]
pub mod kernel;
#[cfg(all(windows, target_env = "msvc", not(test)))]
pub mod mem;
