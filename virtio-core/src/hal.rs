//! The hardware seams: DMA memory ([`Hal`]) and device registers ([`RegisterIo`]).
//!
//! In the miniport these are backed by the uncached extension, StorPortGetPhysicalAddress and
//! the StorPort register routines; in tests by the `fake` module (feature `test-utils`); in the QEMU test guest by
//! identity-mapped memory and real MMIO.

use crate::dma::{BusAddress, DmaMemory};

/// One physically contiguous piece of a buffer, as the device sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Bus address of the first byte.
    pub address: BusAddress,
    /// Length in bytes.
    pub len: u32,
}

impl Segment {
    /// A segment of `len` bytes at `address`.
    #[must_use]
    pub const fn new(address: BusAddress, len: u32) -> Self {
        Self { address, len }
    }
}

/// Why a [`Hal`] request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalError {
    /// No DMA memory of this size and alignment is left.
    OutOfMemory {
        /// Bytes asked for.
        len: usize,
    },
    /// The buffer needs more segments than the caller's array holds.
    TooManySegments {
        /// Capacity of the caller's array.
        capacity: usize,
    },
    /// The address is not one this HAL can translate.
    Untranslatable {
        /// The CPU address asked about.
        address: usize,
    },
}

impl core::fmt::Display for HalError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::OutOfMemory { len } => write!(f, "no DMA memory left for {len} bytes"),
            Self::TooManySegments { capacity } => {
                write!(f, "the buffer needs more than {capacity} segments")
            }
            Self::Untranslatable { address } => {
                write!(f, "address {address:#x} is not reachable by DMA")
            }
        }
    }
}

impl core::error::Error for HalError {}

/// DMA-capable memory for the rings and requests.
///
/// # Safety
/// Implementers guarantee that:
/// - [`Hal::dma_alloc`] returns zeroed memory that is valid for CPU reads and writes and for
///   device DMA at the returned bus address, contiguous, aligned to at least `align`, not
///   overlapping any other live allocation, and stays so until passed to [`Hal::dma_free`];
/// - [`Hal::translate`] returns the bus addresses at which the device reaches the given bytes.
///
/// virtio-core relies on these facts to build [`DmaMemory`] and to hand addresses to the device;
/// a wrong answer makes the device scribble over unrelated memory.
pub unsafe trait Hal {
    /// Allocates `len` zeroed bytes of DMA memory aligned to `align` (a power of two).
    ///
    /// # Errors
    /// [`HalError::OutOfMemory`] when the memory is exhausted.
    fn dma_alloc(&self, len: usize, align: usize) -> Result<DmaMemory, HalError>;

    /// Returns memory from [`Hal::dma_alloc`].
    ///
    /// # Safety
    /// `memory` came from `dma_alloc` on this HAL, is not freed yet, the device no longer
    /// accesses it (it is reset or the memory was never published), and no copy of the
    /// [`DmaMemory`] is used afterwards.
    unsafe fn dma_free(&self, memory: DmaMemory);

    /// Translates the CPU buffer `address .. address + len` into bus segments in `out`,
    /// returning how many were written.
    ///
    /// # Errors
    /// [`HalError::TooManySegments`] if `out` is too short, [`HalError::Untranslatable`] if the
    /// address is not DMA-reachable.
    fn translate(&self, address: usize, len: usize, out: &mut [Segment])
    -> Result<usize, HalError>;
}

/// Register access in a device's BARs (memory or I/O space), by BAR index and byte offset.
///
/// Implementations are the one place an MMIO access happens; callers never form pointers to
/// device registers. An access outside a mapped BAR must not fault: reads return all ones (what
/// a PCI master abort returns) and writes are dropped. The transport validates every offset
/// before use, so this is a second line of defence, not the first.
///
/// Ordering: a register write must not be reordered before the CPU's earlier stores to DMA
/// memory (a notify must follow the ring update it announces), and a register read must not be
/// satisfied before earlier stores complete. x86 guarantees this for uncached MMIO; on ARM64 the
/// implementation issues the barrier (StorPort's register routines do, as do Linux's
/// `writel`/`readl`). The transport adds its own SeqCst fences where the spec asks for them.
pub trait RegisterIo {
    /// Length of BAR `bar` as mapped, or `None` if it is not mapped.
    fn bar_len(&self, bar: u8) -> Option<u64>;
    /// Reads a byte.
    fn read8(&self, bar: u8, offset: u64) -> u8;
    /// Reads a little-endian 16-bit register.
    fn read16(&self, bar: u8, offset: u64) -> u16;
    /// Reads a little-endian 32-bit register.
    fn read32(&self, bar: u8, offset: u64) -> u32;
    /// Reads a 64-bit register. virtio 1.x does not require 64-bit accesses to be atomic; the
    /// transport only uses this where the spec allows it.
    fn read64(&self, bar: u8, offset: u64) -> u64 {
        u64::from(self.read32(bar, offset)) | (u64::from(self.read32(bar, offset + 4)) << 32)
    }
    /// Writes a byte.
    fn write8(&self, bar: u8, offset: u64, value: u8);
    /// Writes a little-endian 16-bit register.
    fn write16(&self, bar: u8, offset: u64, value: u16);
    /// Writes a little-endian 32-bit register.
    fn write32(&self, bar: u8, offset: u64, value: u32);
    /// Writes a 64-bit register as two 32-bit halves, low first (virtio 1.x section 4.1.3.1).
    fn write64(&self, bar: u8, offset: u64, value: u64) {
        self.write32(bar, offset, value as u32);
        self.write32(bar, offset + 4, (value >> 32) as u32);
    }
}

/// Reads of PCI configuration space (type 0 header and capability list).
pub trait PciConfig {
    /// Reads a byte at `offset`.
    fn read8(&self, offset: u16) -> u8;
    /// Reads a little-endian 16-bit value at `offset`.
    fn read16(&self, offset: u16) -> u16;
    /// Reads a little-endian 32-bit value at `offset`.
    fn read32(&self, offset: u16) -> u32;
    /// Writes a little-endian 16-bit value at `offset` (command register, MSI-X control).
    fn write16(&self, offset: u16, value: u16);
}
