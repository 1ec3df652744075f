//! Links the guest for QEMU's PVH boot when building for `x86_64-unknown-none`.
//!
//! The target produces static position-independent executables by default, but nothing in the
//! guest would apply its dynamic relocations, and QEMU loads an ELF at its physical addresses.
//! So the binary is linked as a plain static executable at the addresses of `linker.ld`.
//!
//! It also names the kernel image the guest carries for `mode=image` (`RVSCSI_GUEST_IMAGE`,
//! set by `cargo xtask vmtest` to the packaged `rvscsi.sys`): the guest includes the file at
//! `RVSCSI_GUEST_IMAGE_FILE`, an empty file when no image was named (that run then fails
//! saying so).

fn main() {
    println!("cargo::rerun-if-changed=linker.ld");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=RVSCSI_GUEST_IMAGE");
    let image = if let Some(path) = std::env::var_os("RVSCSI_GUEST_IMAGE") {
        std::path::PathBuf::from(path)
    } else {
        let empty = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default())
            .join("no-image.sys");
        if let Err(error) = std::fs::write(&empty, []) {
            println!("cargo::error=cannot write {}: {error}", empty.display());
        }
        empty
    };
    println!("cargo::rerun-if-changed={}", image.display());
    println!(
        "cargo::rustc-env=RVSCSI_GUEST_IMAGE_FILE={}",
        image.display()
    );
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        println!("cargo::rustc-link-arg-bins=-T{dir}/linker.ld");
        println!("cargo::rustc-link-arg-bins=--no-pie");
        println!("cargo::rustc-link-arg-bins=-znoexecstack");
    }
}
