//! The `#[repr(C)]` StorPort structures and HW callback types a virtio-scsi miniport touches.
//!
//! Every structure mirrors the WDK declaration for 64-bit Windows (x86_64 and aarch64, LLP64:
//! `ULONG` is `u32`, pointers and `ULONG_PTR` are 8 bytes, `LARGE_INTEGER` is 8-aligned). Field
//! names are the snake_case of the C names. C unions whose members are all the same integer
//! are declared as the one member the miniport uses, with the other names in the doc comment;
//! the layout is identical. The extended-SRB structures carry the WDK's `SRB_ALIGN` /
//! `STOR_ADDRESS_ALIGN` (`DECLSPEC_ALIGN(8)` on 64-bit Windows) as `align(8)`, which rounds
//! their sizes up to a multiple of 8. `c_layout.rs` pins every size and offset, and
//! `tests/c_layout.rs` checks them against mingw-w64's headers where those have the structure.
//!
//! These structures are filled by storport.sys (or the Linux simulator) and read by the
//! miniport, or the other way round; neither side trusts the other's values beyond the layout.

/// `BOOLEAN`: a `UCHAR` that is 0 (FALSE) or 1 (TRUE). Kept as `u8`, not `bool`, because a
/// value other than 0 or 1 written by the other side must not be undefined behaviour.
pub type Boolean = u8;

/// `TRUE` as a `BOOLEAN`.
pub const TRUE: Boolean = 1;
/// `FALSE` as a `BOOLEAN`.
pub const FALSE: Boolean = 0;

/// `NTSTATUS`: a signed 32-bit status (negative = error).
pub type NtStatus = i32;

/// `STOR_PHYSICAL_ADDRESS` (= `PHYSICAL_ADDRESS` = `LARGE_INTEGER`): a bus address, 8 bytes,
/// 8-aligned, passed and returned by value in one register on x64 and arm64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StorPhysicalAddress {
    /// `QuadPart`: the whole address (the C union's `LowPart`/`HighPart` halves overlay it).
    pub quad_part: i64,
}

impl StorPhysicalAddress {
    /// The address `value` (a bus address is unsigned; `LARGE_INTEGER` stores its bits).
    #[must_use]
    pub const fn from_u64(value: u64) -> Self {
        Self {
            quad_part: value.cast_signed(),
        }
    }

    /// The address as the unsigned bus address it denotes.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.quad_part.cast_unsigned()
    }
}

/// `ACCESS_RANGE`: one bus-relative register range the adapter decodes (BAR), filled in by
/// StorPort in `PORT_CONFIGURATION_INFORMATION.AccessRanges`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessRange {
    /// `RangeStart`: bus-relative base address.
    pub range_start: StorPhysicalAddress,
    /// `RangeLength`: length in bytes.
    pub range_length: u32,
    /// `RangeInMemory`: TRUE for memory space, FALSE for I/O port space.
    pub range_in_memory: Boolean,
}

/// `MEMORY_REGION`: a virtual/physical buffer pair (the dump region StorPort gives in dump mode).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MemoryRegion {
    /// `VirtualBase`.
    pub virtual_base: *mut u8,
    /// `PhysicalBase`.
    pub physical_base: StorPhysicalAddress,
    /// `Length` in bytes.
    pub length: u32,
}

mod config;
mod request_blocks;
mod routines;
mod scatter_gather;
mod system;

pub use config::*;
pub use request_blocks::*;
pub use routines::*;
pub use scatter_gather::*;
pub use system::*;

#[cfg(test)]
mod tests;
