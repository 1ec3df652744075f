//! rvscsi-pe-fixture: the smallest StorPort kernel-mode image, the package pipeline's test piece.
//!
//! `cargo xtask package --crate rvscsi-pe-fixture` links this crate exactly as it links the
//! miniport (rust-lld in lld-link mode, `/DRIVER`, `/SUBSYSTEM:NATIVE`, `/ENTRY:DriverEntry`,
//! `/NODEFAULTLIB`, `/INTEGRITYCHECK`). CI keeps it for the links that must fail: its
//! `reachable-panic` feature must fail the no-panic link and its `large-stack-frame` feature
//! must fail on `__chkstk`, which the real driver cannot be made to do on purpose.
//!
//! Like the miniport, the image has:
//! - imports from `storport.sys` only, declared with `raw-dylib` and `+verbatim` (without
//!   `+verbatim` the import would name `storport.sys.dll`);
//! - the panic handler and the `memcpy`, `memmove`, `memset` and `memcmp` of `rvscsi-rt`,
//!   shared with the miniport, including its `link-time-panic-check` handler.
//!
//! On other targets, and in test builds (whose harness brings std and its panic handler), the
//! crate is empty, so the host workspace builds and tests it like any other crate.
#![no_std]

// Linked for its panic handler and memory functions, which nothing names from Rust.
#[cfg(all(windows, target_env = "msvc", not(test)))]
use rvscsi_rt as _;

#[cfg(all(windows, target_env = "msvc", not(test)))]
pub mod kernel;
