//! `STOR_SCATTER_GATHER_LIST` and its elements.

use super::StorPhysicalAddress;

/// `STOR_SCATTER_GATHER_ELEMENT`: one physically contiguous piece of a data buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorScatterGatherElement {
    /// `PhysicalAddress`.
    pub physical_address: StorPhysicalAddress,
    /// `Length` in bytes.
    pub length: u32,
    /// `Reserved` (`ULONG_PTR`).
    pub reserved: usize,
}

/// `STOR_SCATTER_GATHER_LIST`: the header of the list `StorPortGetScatterGatherList` returns;
/// `number_of_elements` entries follow at `list`.
#[repr(C)]
#[derive(Debug)]
pub struct StorScatterGatherList {
    /// `NumberOfElements`.
    pub number_of_elements: u32,
    /// `Reserved` (`ULONG_PTR`).
    #[cfg(not(feature = "planted-c-ulong"))]
    pub reserved: usize,
    /// `Reserved`, declared wrongly on purpose by the `planted-c-ulong` feature (a test's
    /// planted fault): `c_ulong` is 64 bits on Linux but 32 on Windows.
    #[cfg(feature = "planted-c-ulong")]
    pub reserved: core::ffi::c_ulong,
    /// `List[]`: the elements (a C flexible array member).
    pub list: [StorScatterGatherElement; 0],
}
