//! Links the guest for QEMU's PVH boot when building for `x86_64-unknown-none`.
//!
//! The target produces static position-independent executables by default, but nothing in the
//! guest would apply its dynamic relocations, and QEMU loads an ELF at its physical addresses.
//! So the binary is linked as a plain static executable at the addresses of `linker.ld`.

fn main() {
    println!("cargo::rerun-if-changed=linker.ld");
    println!("cargo::rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        println!("cargo::rustc-link-arg-bins=-T{dir}/linker.ld");
        println!("cargo::rustc-link-arg-bins=--no-pie");
        println!("cargo::rustc-link-arg-bins=-znoexecstack");
    }
}
