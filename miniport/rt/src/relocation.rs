//! One absolute address in the image, so that the linker writes a base relocation directory.
//!
//! The kernel loads a driver wherever it finds room, so the image must be relocatable, and the
//! loader only treats an image as relocatable when it has a base relocation directory
//! (`.reloc`); GNU ld writes one for every ASLR image for the same reason. lld-link writes the
//! directory only when some absolute address needs fixing, and code compiled for x64 and ARM64
//! reaches everything PC-relatively, so an image whose statics hold no pointers (the miniport
//! keeps all state in StorPort's extensions) would have none. This static holds one pointer:
//! its address is a fixup, so `.reloc` exists and the PE check's `relocations` rule holds.

/// The image's name, as a NUL-terminated string a debugger can print.
static IMAGE_NAME: &core::ffi::CStr = c"rvscsi";

/// A pointer the loader fixes up when it places the image; `#[used]` keeps it in the link
/// although no code reads it.
#[used]
static IMAGE_NAME_POINTER: &&core::ffi::CStr = &IMAGE_NAME;
