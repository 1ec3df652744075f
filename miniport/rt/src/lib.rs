//! rvscsi-rt: what a `/NODEFAULTLIB` StorPort kernel image needs besides its own code.
//!
//! Both kernel images of the workspace link it: the miniport (`rvscsi.sys`) and the package
//! pipeline's test fixture (`tools/pe-fixture`). It holds the two pieces that no library
//! provides inside a kernel image that may import from storport.sys only:
//! - `mem`: `memcpy`, `memmove`, `memset` and `memcmp`, because nothing else in the link
//!   defines them (no C runtime, and `compiler_builtins`' `mem` feature cannot be chosen on
//!   stable Rust);
//! - `panic`: the `#[panic_handler]`, which needs nothing outside storport.sys, and with the
//!   `link-time-panic-check` feature the handler that makes any surviving panic path a link
//!   error;
//! - `relocation`: one absolute address, so that the image has the base relocation directory
//!   the kernel loader needs to place it.
//!
//! wdk-alloc and wdk-panic are deliberately not used: their allocator and panic handler call
//! `ExAllocatePool2`/`ExFreePool`/`KeBugCheckEx`, ntoskrnl.exe exports a miniport must not
//! import.
//!
//! Everything is compiled only for `*-windows-msvc` outside test builds. On the Linux host (and
//! in any test harness, which brings std and its own panic handler) the crate is empty, so the
//! rlibs that depend on it still build and test there.
#![no_std]

#[cfg(all(windows, target_env = "msvc", not(test)))]
pub mod mem;
#[cfg(all(windows, target_env = "msvc", not(test)))]
pub mod panic;
#[cfg(all(windows, target_env = "msvc", not(test)))]
mod relocation;
