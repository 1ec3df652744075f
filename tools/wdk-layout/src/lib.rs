//! rvscsi-wdk-layout: the miniport's StorPort structures against wdk-sys' bindings of the WDK.
//!
//! On a Windows host with the WDK and the `wdk` feature (`cargo make storport-layout-test`),
//! the tests compare `size_of`, `align_of` and the field offsets of every `#[repr(C)]`
//! structure of `rvscsi::storport` with the type bindgen generated from the WDK's own
//! storport.h, srb.h, ntddscsi.h and wdm.h (wdk-sys, feature `storage`). On every other host,
//! and without the feature, this crate is empty: wdk-sys needs the WDK to build at all. CI
//! (Linux) checks the same layouts against mingw-w64's headers instead
//! (`miniport/tests/c_layout.rs`).
//!
//! The structures are compiled from the miniport's source files (`miniport/src/storport/types/`,
//! included below) rather than by depending on the `rvscsi` crate: on `*-windows-msvc` the
//! miniport links `rvscsi-rt`, whose `#[panic_handler]` and `memcpy` family belong in the kernel
//! image and collide with std's in a test executable. Including the file gives the same
//! declarations, compiled for the same target, so the same layout.
//!
//! Fields that the WDK puts in anonymous unions (bindgen names them `__bindgen_anon_N`, and
//! which members are unions changes between WDK releases) are not named: `InternalStatus`,
//! `SystemStatus`, `PortVersionFlags`, `HwAdapterControl` and `HwUnitControl`. Their offsets
//! are pinned by the neighbouring fields and the structure size, which are compared.

#[cfg(all(windows, feature = "wdk"))]
#[path = "../../../miniport/src/storport/types/mod.rs"]
pub mod types;

#[cfg(all(windows, feature = "wdk", test))]
mod tests;
