//! `memcpy`, `memmove`, `memset` and `memcmp` for a `/NODEFAULTLIB` kernel image.
//!
//! LLVM lowers struct copies, array initialisers and slice comparisons to calls to these four
//! C functions. On `*-windows-msvc` targets they normally come from the C runtime
//! (vcruntime), which a kernel image does not link, and the `mem` feature of
//! `compiler_builtins` that would provide them cannot be selected on stable Rust. So this crate
//! defines them for every rvscsi kernel image. The loops work byte by byte: LLVM does not turn
//! a loop inside a function named `memcpy`, `memmove` or `memset` back into a call to itself,
//! and the images these serve copy small headers, not bulk data (bulk data moves by DMA).
//!
//! rustc lists them for export, as every `#[no_mangle]` function of a cdylib; `cargo xtask
//! package` links the image without that export table (`tools/xtask/src/kernel_link.rs`), and
//! the PE check refuses an image that has one.

/// Copies `count` bytes from `source` to `destination`; the ranges must not overlap.
///
/// # Safety
/// `source` is readable and `destination` writable for `count` bytes, and they do not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(destination: *mut u8, source: *const u8, count: usize) -> *mut u8 {
    let mut offset = 0;
    while offset < count {
        // SAFETY: offset < count and the caller guarantees both ranges cover count bytes
        // (`wrapping_add` stays in bounds, so it equals `add`).
        let byte = unsafe { source.wrapping_add(offset).read() };
        // SAFETY: as above, for the destination range.
        unsafe { destination.wrapping_add(offset).write(byte) };
        offset += 1;
    }
    destination
}

/// Copies `count` bytes from `source` to `destination`; the ranges may overlap.
///
/// # Safety
/// `source` is readable and `destination` writable for `count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(destination: *mut u8, source: *const u8, count: usize) -> *mut u8 {
    if destination.cast_const() <= source {
        // Copying forwards never overwrites a source byte before it is read.
        let mut offset = 0;
        while offset < count {
            // SAFETY: offset < count and the caller guarantees both ranges cover count bytes
            // (`wrapping_add` stays in bounds, so it equals `add`).
            let byte = unsafe { source.wrapping_add(offset).read() };
            // SAFETY: as above, for the destination range.
            unsafe { destination.wrapping_add(offset).write(byte) };
            offset += 1;
        }
    } else {
        // The destination starts after the source: copy backwards for the same reason.
        let mut offset = count;
        while offset > 0 {
            offset -= 1;
            // SAFETY: offset < count and the caller guarantees both ranges cover count bytes
            // (`wrapping_add` stays in bounds, so it equals `add`).
            let byte = unsafe { source.wrapping_add(offset).read() };
            // SAFETY: as above, for the destination range.
            unsafe { destination.wrapping_add(offset).write(byte) };
        }
    }
    destination
}

/// Fills `count` bytes at `destination` with the low byte of `value`.
///
/// # Safety
/// `destination` is writable for `count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(destination: *mut u8, value: i32, count: usize) -> *mut u8 {
    // C's memset stores `(unsigned char)value`: keeping only the low byte is the contract.
    let [byte, ..] = value.to_le_bytes();
    let mut offset = 0;
    while offset < count {
        // SAFETY: offset < count and the caller guarantees the range covers count bytes.
        unsafe { destination.wrapping_add(offset).write(byte) };
        offset += 1;
    }
    destination
}

/// Compares `count` bytes as unsigned values: negative, zero or positive like C's `memcmp`.
///
/// # Safety
/// `left` and `right` are readable for `count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(left: *const u8, right: *const u8, count: usize) -> i32 {
    let mut offset = 0;
    while offset < count {
        // SAFETY: offset < count and the caller guarantees the range covers count bytes.
        let a = unsafe { left.wrapping_add(offset).read() };
        // SAFETY: as above, for the right range.
        let b = unsafe { right.wrapping_add(offset).read() };
        if a != b {
            return i32::from(a) - i32::from(b);
        }
        offset += 1;
    }
    0
}
