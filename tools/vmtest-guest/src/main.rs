//! The vmtest guest: boots under QEMU through PVH, finds the virtio-scsi device on PCI and
//! exercises it with virtio-core, reporting `RESULT` lines on the serial port.
//!
//! Everything that touches hardware lives in [`guest`] and only exists for
//! `x86_64-unknown-none`; the logic it runs is the `vmtest_guest` library, which the host tests.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(all(target_os = "none", target_arch = "x86_64"))]
mod guest;

/// On a hosted target the binary only says what it is: the guest needs a bare-metal build.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "vmtest-guest is a bare-metal QEMU guest: build it with \
         `cargo build -p vmtest-guest --release --target x86_64-unknown-none`, \
         or run `cargo xtask vmtest`"
    );
    std::process::exit(2);
}
