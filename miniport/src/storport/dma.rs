//! virtio-core's hardware seams backed by StorPort: registers through the StorPort register
//! routines, PCI configuration from a snapshot read with StorPortGetBusData, DMA memory carved
//! from the uncached extension, and driver-private tables carved from the same memory.

use core::borrow::{Borrow, BorrowMut};
use core::cell::Cell;
use core::ptr::NonNull;

use virtio_core::dma::DmaMemory;
use virtio_core::hal::{Hal, HalError, PciConfig, RegisterIo, Segment};

use crate::storport::functions::{
    StorPortReadRegisterUchar, StorPortReadRegisterUlong, StorPortReadRegisterUshort,
    StorPortWriteRegisterUchar, StorPortWriteRegisterUlong, StorPortWriteRegisterUshort,
};
use crate::storport::port::DeviceExtension;
use crate::storport::types::PortConfigurationInformation;

/// Bytes of PCI configuration space read at find-adapter (the type 0 header and the
/// capability list live in the first 256 bytes).
pub const PCI_CONFIG_LEN: usize = 256;

/// The function's PCI configuration space as read once in HwFindAdapter. virtio's capability
/// list is static, so a snapshot is what the transport parses; writes are not needed by the
/// transport's probe and are dropped (the command and MSI-X registers belong to Windows).
#[derive(Clone, Copy, Debug)]
pub struct PciSnapshot {
    bytes: [u8; PCI_CONFIG_LEN],
    len: usize,
}

impl PciSnapshot {
    /// Reads the configuration space of the adapter at `bus`/`slot`.
    #[must_use]
    pub fn read(extension: DeviceExtension, bus: u32, slot: u32) -> Self {
        let mut bytes = [0u8; PCI_CONFIG_LEN];
        let len = extension.read_pci_config(bus, slot, &mut bytes);
        Self { bytes, len }
    }

    /// Bytes StorPort returned (at least 64 for a real function).
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was read.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn byte(&self, offset: usize) -> u8 {
        if offset < self.len {
            self.bytes.get(offset).copied().unwrap_or(0xFF)
        } else {
            0xFF
        }
    }

    /// The bus address BAR `bar` decodes and whether it is I/O space; `None` if unimplemented.
    #[must_use]
    pub fn bar_address(&self, bar: u8) -> Option<(u64, bool)> {
        let register = |index: u8| self.read32(0x10 + u16::from(index) * 4);
        let value = register(bar);
        if value & 1 == 1 {
            return Some((u64::from(value & !0x3), true));
        }
        let low = u64::from(value & !0xF);
        // Type 2 (bits 2:1) is a 64-bit BAR whose high half is the next register.
        let address = if (value >> 1) & 0x3 == 0x2 && bar < 5 {
            low | (u64::from(register(bar + 1)) << 32)
        } else {
            low
        };
        (address != 0).then_some((address, false))
    }
}

impl PciConfig for PciSnapshot {
    fn read8(&self, offset: u16) -> u8 {
        self.byte(usize::from(offset))
    }

    fn read16(&self, offset: u16) -> u16 {
        u16::from_le_bytes([self.read8(offset), self.read8(offset.wrapping_add(1))])
    }

    fn read32(&self, offset: u16) -> u32 {
        u32::from(self.read16(offset)) | (u32::from(self.read16(offset.wrapping_add(2))) << 16)
    }

    fn write16(&self, _offset: u16, _value: u16) {}
}

/// One mapped BAR.
#[derive(Clone, Copy, Debug)]
struct MappedBar {
    base: NonNull<u8>,
    len: u64,
}

/// BAR registers reached through StorPortRead/WriteRegister*. Copyable: the mapping is fixed
/// from find-adapter until the adapter goes away, so the notify path can hold its own copy.
#[derive(Clone, Copy, Debug)]
pub struct StorPortRegisters {
    extension: DeviceExtension,
    bars: [Option<MappedBar>; 6],
}

impl StorPortRegisters {
    /// No BAR mapped yet.
    #[must_use]
    pub const fn new(extension: DeviceExtension) -> Self {
        Self {
            extension,
            bars: [None; 6],
        }
    }

    /// Records the mapping of BAR `bar` at `base` (from StorPortGetDeviceBase), `len` bytes.
    pub fn map(&mut self, bar: u8, base: NonNull<u8>, len: u64) {
        if let Some(slot) = self.bars.get_mut(usize::from(bar)) {
            *slot = Some(MappedBar { base, len });
        }
    }

    /// The register address for an access of `width` bytes at `offset` in `bar`, if it lies
    /// inside the mapping and is naturally aligned.
    fn register(&self, bar: u8, offset: u64, width: u64) -> Option<NonNull<u8>> {
        let mapped = (*self.bars.get(usize::from(bar))?)?;
        let end = offset.checked_add(width)?;
        if end > mapped.len || !offset.is_multiple_of(width) {
            return None;
        }
        let offset = usize::try_from(offset).ok()?;
        // The address stays inside the mapped range, checked above; it is only ever passed to
        // the StorPort register routines, never dereferenced here.
        Some(mapped.base.map_addr(|base| base.saturating_add(offset)))
    }
}

impl RegisterIo for StorPortRegisters {
    fn bar_len(&self, bar: u8) -> Option<u64> {
        self.bars
            .get(usize::from(bar))
            .copied()
            .flatten()
            .map(|m| m.len)
    }

    fn read8(&self, bar: u8, offset: u64) -> u8 {
        self.register(bar, offset, 1).map_or(0xFF, |register| {
            // SAFETY: `register` is inside a BAR StorPort mapped for this adapter; the StorPort
            // routine performs the ordered MMIO read.
            unsafe { StorPortReadRegisterUchar(self.extension.raw(), register.as_ptr()) }
        })
    }

    fn read16(&self, bar: u8, offset: u64) -> u16 {
        self.register(bar, offset, 2).map_or(0xFFFF, |register| {
            // SAFETY: as in `read8`, for an aligned 16-bit register.
            unsafe { StorPortReadRegisterUshort(self.extension.raw(), register.as_ptr().cast()) }
        })
    }

    fn read32(&self, bar: u8, offset: u64) -> u32 {
        self.register(bar, offset, 4).map_or(u32::MAX, |register| {
            // SAFETY: as in `read8`, for an aligned 32-bit register.
            unsafe { StorPortReadRegisterUlong(self.extension.raw(), register.as_ptr().cast()) }
        })
    }

    fn write8(&self, bar: u8, offset: u64, value: u8) {
        if let Some(register) = self.register(bar, offset, 1) {
            // SAFETY: as in `read8`; the StorPort routine orders the write after earlier
            // memory writes (the ring updates a notify announces).
            unsafe { StorPortWriteRegisterUchar(self.extension.raw(), register.as_ptr(), value) }
        }
    }

    fn write16(&self, bar: u8, offset: u64, value: u16) {
        if let Some(register) = self.register(bar, offset, 2) {
            // SAFETY: as in `write8`, for an aligned 16-bit register.
            unsafe {
                StorPortWriteRegisterUshort(self.extension.raw(), register.as_ptr().cast(), value);
            }
        }
    }

    fn write32(&self, bar: u8, offset: u64, value: u32) {
        if let Some(register) = self.register(bar, offset, 4) {
            // SAFETY: as in `write8`, for an aligned 32-bit register.
            unsafe {
                StorPortWriteRegisterUlong(self.extension.raw(), register.as_ptr().cast(), value);
            }
        }
    }
}

/// The uncached extension: one physically contiguous block StorPort allocated for the adapter
/// in find-adapter, carved front to back for rings and driver tables. It lives until the
/// adapter is removed, so nothing is ever returned.
#[derive(Debug)]
pub struct UncachedArena {
    extension: DeviceExtension,
    cpu: NonNull<u8>,
    bus: u64,
    len: usize,
    next: Cell<usize>,
}

impl UncachedArena {
    /// Wraps `len` bytes at `cpu` whose bus address is `bus` (contiguous: the caller checked
    /// StorPortGetPhysicalAddress's length).
    ///
    /// # Safety
    /// `cpu .. cpu + len` is the adapter's uncached extension: valid, exclusively the
    /// miniport's, physically contiguous at `bus`, for as long as the adapter exists.
    #[must_use]
    pub const unsafe fn new(
        extension: DeviceExtension,
        cpu: NonNull<u8>,
        bus: u64,
        len: usize,
    ) -> Self {
        Self {
            extension,
            cpu,
            bus,
            len,
            next: Cell::new(0),
        }
    }

    /// Asks StorPort for the uncached extension of `len` bytes (from HwFindAdapter, once per
    /// adapter, with StorPort's `config`) and wraps it, if StorPort gave it and it is physically
    /// contiguous over the whole length.
    #[must_use]
    pub fn claim(
        extension: DeviceExtension,
        config: &mut PortConfigurationInformation,
        len: usize,
    ) -> Option<Self> {
        let len32 = u32::try_from(len).ok()?;
        let memory = extension.uncached_extension(config, len32)?;
        let (bus, contiguous) = extension.physical_address(None, memory.as_ptr() as usize);
        if (contiguous as usize) < len {
            return None;
        }
        // SAFETY: StorPort just gave us `len` bytes of uncached extension at `memory` for the
        // adapter's life, contiguous at `bus` (checked); find-adapter claims it once.
        Some(unsafe { Self::new(extension, memory, bus, len) })
    }

    /// The adapter the extension belongs to.
    #[must_use]
    pub const fn extension(&self) -> DeviceExtension {
        self.extension
    }

    /// Bytes carved so far.
    #[must_use]
    pub fn used(&self) -> usize {
        self.next.get()
    }

    /// Carves `len` zeroed bytes aligned to `align`; returns the CPU pointer and bus address.
    fn carve(&self, len: usize, align: usize) -> Option<(NonNull<u8>, u64)> {
        let start = self.next.get();
        let cpu_start = (self.cpu.as_ptr() as usize).checked_add(start)?;
        let padding = cpu_start.next_multiple_of(align.max(1)) - cpu_start;
        let offset = start.checked_add(padding)?;
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        self.next.set(end);
        let cpu = self.cpu.map_addr(|base| base.saturating_add(offset));
        // SAFETY: `cpu .. cpu + len` lies inside the uncached extension (checked above), which
        // is the miniport's alone, and no earlier carve overlaps it (the cursor only grows).
        unsafe { cpu.as_ptr().write_bytes(0, len) };
        Some((cpu, self.bus + offset as u64))
    }

    /// Carves a table of `count` `T`s initialised to `init`, for driver-private state.
    #[must_use]
    pub fn carve_table<T: Copy>(&self, count: usize, init: T) -> Option<Carved<T>> {
        self.carve_table_with(count, || init)
    }

    /// Carves a table of `count` `T`s, each initialised by `init`, for driver-private state
    /// (DPC objects, queue cells: values too large to build on the stack in bulk).
    #[must_use]
    pub fn carve_table_with<T>(&self, count: usize, init: impl Fn() -> T) -> Option<Carved<T>> {
        let len = count.checked_mul(size_of::<T>())?;
        let (cpu, _) = self.carve(len, align_of::<T>())?;
        let table = cpu.cast::<T>();
        for index in 0..count {
            let value = init();
            let slot = table.as_ptr().wrapping_add(index);
            // SAFETY: `slot` is one of the carve's `count` aligned `T`s, exclusively ours.
            unsafe { slot.write(value) };
        }
        // SAFETY: `table` points at `count` initialised `T`s in the uncached extension, which
        // outlives the adapter state that owns this table, and is not aliased (fresh carve).
        Some(unsafe { Carved::new(table, count) })
    }
}

// SAFETY: `dma_alloc` returns zeroed, aligned, contiguous memory of the uncached extension
// (StorPort allocates it as a common buffer, physically contiguous, and we checked the
// contiguous length at find-adapter), never handed out twice; `translate` asks StorPort.
unsafe impl Hal for UncachedArena {
    fn dma_alloc(&self, len: usize, align: usize) -> Result<DmaMemory, HalError> {
        let (cpu, bus) = self
            .carve(len, align)
            .ok_or(HalError::OutOfMemory { len })?;
        // SAFETY: the carve is valid, zeroed, exclusively ours and lives as long as the
        // adapter; `bus` is its bus address.
        unsafe { DmaMemory::new(cpu, len, bus) }.ok_or(HalError::OutOfMemory { len })
    }

    unsafe fn dma_free(&self, _memory: DmaMemory) {
        // The uncached extension is freed by StorPort with the adapter; carves are never
        // returned individually.
    }

    fn translate(
        &self,
        address: usize,
        len: usize,
        out: &mut [Segment],
    ) -> Result<usize, HalError> {
        translate(self.extension, address, len, out)
    }
}

/// Translates `address .. address + len` (memory StorPort allocated for this adapter) into bus
/// segments, one per physically contiguous run.
///
/// # Errors
/// [`HalError::TooManySegments`] if `out` is too short; [`HalError::Untranslatable`] if
/// StorPort reports no contiguous bytes.
pub fn translate(
    extension: DeviceExtension,
    address: usize,
    len: usize,
    out: &mut [Segment],
) -> Result<usize, HalError> {
    let capacity = out.len();
    let mut done = 0usize;
    let mut count = 0usize;
    while done < len {
        let here = address.saturating_add(done);
        let (bus, contiguous) = extension.physical_address(None, here);
        if contiguous == 0 {
            return Err(HalError::Untranslatable { address: here });
        }
        let take = (len - done).min(contiguous as usize);
        let slot = out
            .get_mut(count)
            .ok_or(HalError::TooManySegments { capacity })?;
        *slot = Segment::new(bus, take as u32);
        count += 1;
        done += take;
    }
    Ok(count)
}

/// A table carved from the uncached extension: driver-private state (ring slots, in-flight
/// request addresses) sized at find-adapter, with no heap.
#[derive(Debug)]
pub struct Carved<T> {
    table: NonNull<T>,
    len: usize,
}

impl<T> Carved<T> {
    /// # Safety
    /// `table` points at `len` initialised `T`s that stay valid and are accessed only through
    /// this value for as long as it lives.
    const unsafe fn new(table: NonNull<T>, len: usize) -> Self {
        Self { table, len }
    }
}

impl<T> Borrow<[T]> for Carved<T> {
    fn borrow(&self) -> &[T] {
        // SAFETY: `new`'s contract: `len` initialised `T`s, accessed only through `self`.
        unsafe { core::slice::from_raw_parts(self.table.as_ptr(), self.len) }
    }
}

impl<T> BorrowMut<[T]> for Carved<T> {
    fn borrow_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `borrow`, and `&mut self` makes this the only access.
        unsafe { core::slice::from_raw_parts_mut(self.table.as_ptr(), self.len) }
    }
}
