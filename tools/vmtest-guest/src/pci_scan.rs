//! PCI enumeration and BAR decoding over an abstract configuration space (PCI Local Bus 3.0,
//! chapter 6; PCI-to-PCI Bridge 1.2 for the type 1 header).
//!
//! The guest provides [`ConfigAccess`] with configuration mechanism #1 (ports 0xCF8/0xCFC);
//! the tests provide a table of functions. [`Function`] adapts one function to virtio-core's
//! [`PciConfig`], which the transport uses for its capability walk and MSI-X control.

use core::ops::ControlFlow;

use virtio_core::hal::PciConfig;

/// Bus, device and function numbers of one PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// Bus number (0..=255).
    pub bus: u8,
    /// Device number (0..=31).
    pub device: u8,
    /// Function number (0..=7).
    pub function: u8,
}

impl core::fmt::Display for Bdf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Access to the configuration space of any function, by dword (offsets are multiples of 4
/// below 256) plus the 16-bit writes that command and MSI-X control registers need.
pub trait ConfigAccess {
    /// Reads the dword at `offset` (a multiple of 4) of `bdf`; all ones if nothing answers.
    fn read32(&self, bdf: Bdf, offset: u8) -> u32;
    /// Writes the dword at `offset` (a multiple of 4) of `bdf`.
    fn write32(&self, bdf: Bdf, offset: u8, value: u32);
    /// Writes the 16-bit register at `offset` (a multiple of 2) of `bdf` without touching its
    /// neighbour (the status register next to the command register is write-one-to-clear).
    fn write16(&self, bdf: Bdf, offset: u8, value: u16);
}

/// Configuration register offsets used here (PCI 3.0 section 6.1).
mod reg {
    pub const VENDOR_DEVICE: u8 = 0x00;
    pub const COMMAND: u8 = 0x04;
    pub const CLASS_REVISION: u8 = 0x08;
    pub const HEADER: u8 = 0x0c;
    pub const BAR0: u8 = 0x10;
    pub const BUS_NUMBERS: u8 = 0x18;
    pub const SUBSYSTEM: u8 = 0x2c;
}

/// Command register bits (PCI 3.0 section 6.2.2).
pub mod command {
    /// Respond to I/O space accesses.
    pub const IO_SPACE: u16 = 1 << 0;
    /// Respond to memory space accesses.
    pub const MEMORY_SPACE: u16 = 1 << 1;
    /// Act as a bus master (required for DMA and MSI).
    pub const BUS_MASTER: u16 = 1 << 2;
    /// Do not assert INTx (virtio-core relies on MSI-X or polling).
    pub const INTX_DISABLE: u16 = 1 << 10;
}

/// What identifies a function, read from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionInfo {
    /// Where it is.
    pub bdf: Bdf,
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision: u8,
    /// Class code, subclass and programming interface, as `0x00ccsspp`.
    pub class: u32,
    /// Header type without the multi-function bit (0: device, 1: PCI-PCI bridge).
    pub header_type: u8,
    /// Subsystem vendor ID (type 0 headers; 0 otherwise).
    pub subsystem_vendor_id: u16,
    /// Subsystem ID (type 0 headers; 0 otherwise).
    pub subsystem_id: u16,
}

/// How deep bridges are followed; a loop in bus numbers cannot recurse further than this.
const MAX_BRIDGE_DEPTH: usize = 8;

/// Visits every function reachable from bus 0, following PCI-PCI bridges to their secondary
/// buses (as numbered by the firmware), until `visit` breaks.
pub fn scan<A: ConfigAccess, B>(
    access: &A,
    mut visit: impl FnMut(&FunctionInfo) -> ControlFlow<B>,
) -> Option<B> {
    let mut seen = [0u64; 4];
    match scan_bus(access, 0, 0, &mut seen, &mut visit) {
        ControlFlow::Break(found) => Some(found),
        ControlFlow::Continue(()) => None,
    }
}

fn scan_bus<A: ConfigAccess, B>(
    access: &A,
    bus: u8,
    depth: usize,
    seen: &mut [u64; 4],
    visit: &mut impl FnMut(&FunctionInfo) -> ControlFlow<B>,
) -> ControlFlow<B> {
    let word = usize::from(bus / 64);
    let bit = 1u64 << (bus % 64);
    if depth > MAX_BRIDGE_DEPTH || seen[word] & bit != 0 {
        return ControlFlow::Continue(());
    }
    seen[word] |= bit;
    for device in 0..32 {
        let Some(first) = read_info(
            access,
            Bdf {
                bus,
                device,
                function: 0,
            },
        ) else {
            continue;
        };
        let multi_function = (access.read32(first.bdf, reg::HEADER) >> 16) & 0x80 != 0;
        let functions = if multi_function { 8 } else { 1 };
        for function in 0..functions {
            let Some(info) = read_info(
                access,
                Bdf {
                    bus,
                    device,
                    function,
                },
            ) else {
                continue;
            };
            visit(&info)?;
            if info.header_type == 1 {
                let secondary = (access.read32(info.bdf, reg::BUS_NUMBERS) >> 8) as u8;
                if secondary > bus {
                    scan_bus(access, secondary, depth + 1, seen, visit)?;
                }
            }
        }
    }
    ControlFlow::Continue(())
}

/// The function's identification, or `None` if no function answers at `bdf`.
#[must_use]
pub fn read_info<A: ConfigAccess>(access: &A, bdf: Bdf) -> Option<FunctionInfo> {
    let ids = access.read32(bdf, reg::VENDOR_DEVICE);
    let vendor_id = ids as u16;
    if vendor_id == 0xffff || vendor_id == 0 {
        return None;
    }
    let class_revision = access.read32(bdf, reg::CLASS_REVISION);
    let header_type = ((access.read32(bdf, reg::HEADER) >> 16) & 0x7f) as u8;
    let subsystem = if header_type == 0 {
        access.read32(bdf, reg::SUBSYSTEM)
    } else {
        0
    };
    Some(FunctionInfo {
        bdf,
        vendor_id,
        device_id: (ids >> 16) as u16,
        revision: class_revision as u8,
        class: class_revision >> 8,
        header_type,
        subsystem_vendor_id: subsystem as u16,
        subsystem_id: (subsystem >> 16) as u16,
    })
}

/// The address space a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// Memory space (32- or 64-bit).
    Memory {
        /// Whether the BAR is prefetchable.
        prefetchable: bool,
        /// Whether the BAR is 64-bit (it then also uses the next BAR register).
        wide: bool,
    },
    /// I/O space.
    Io,
}

/// One decoded, sized base address register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// BAR index (0..=5) of the register holding the low half.
    pub index: u8,
    /// Address space.
    pub kind: BarKind,
    /// Base address as programmed by the firmware.
    pub address: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
}

/// Why a BAR cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarError {
    /// The BAR is implemented but the firmware left it unassigned (address 0).
    Unassigned {
        /// BAR index.
        index: u8,
    },
    /// A 64-bit BAR in the last register, which has no upper half.
    WideInLastSlot,
    /// The size read back is not a power of two, so the register is not a BAR.
    BadSize {
        /// BAR index.
        index: u8,
        /// The size mask read back.
        mask: u64,
    },
}

/// Reads and sizes the six BARs of a type 0 function. Decoding is turned off while sizing (the
/// BAR briefly holds all ones) and the command register restored afterwards.
///
/// An entry is `None` for an unimplemented BAR and for the upper half of a 64-bit BAR.
#[must_use]
pub fn read_bars<A: ConfigAccess>(access: &A, bdf: Bdf) -> [Option<Result<Bar, BarError>>; 6] {
    let command = access.read32(bdf, reg::COMMAND) as u16;
    access.write16(
        bdf,
        reg::COMMAND,
        command & !(command::IO_SPACE | command::MEMORY_SPACE),
    );
    let mut bars = [None; 6];
    let mut index = 0u8;
    while index < 6 {
        let (bar, registers) = size_bar(access, bdf, index);
        if let Some(slot) = bars.get_mut(usize::from(index)) {
            *slot = bar;
        }
        index += registers;
    }
    access.write16(bdf, reg::COMMAND, command);
    bars
}

/// Sizes BAR `index`, returning it and how many registers it occupies (1 or 2).
fn size_bar<A: ConfigAccess>(
    access: &A,
    bdf: Bdf,
    index: u8,
) -> (Option<Result<Bar, BarError>>, u8) {
    let offset = reg::BAR0 + 4 * index;
    let low = access.read32(bdf, offset);
    access.write32(bdf, offset, u32::MAX);
    let low_mask = access.read32(bdf, offset);
    access.write32(bdf, offset, low);
    if low & 1 == 1 {
        let mask = u64::from(low_mask & !0x3) | 0xffff_ffff_0000_0000;
        let bar = decode(index, BarKind::Io, u64::from(low & !0x3), mask);
        return (bar, 1);
    }
    let prefetchable = low & 0x8 != 0;
    let wide = (low >> 1) & 0x3 == 0x2;
    if !wide {
        let mask = u64::from(low_mask & !0xf) | 0xffff_ffff_0000_0000;
        let kind = BarKind::Memory { prefetchable, wide };
        return (decode(index, kind, u64::from(low & !0xf), mask), 1);
    }
    if index == 5 {
        return (Some(Err(BarError::WideInLastSlot)), 1);
    }
    let high_offset = offset + 4;
    let high = access.read32(bdf, high_offset);
    access.write32(bdf, high_offset, u32::MAX);
    let high_mask = access.read32(bdf, high_offset);
    access.write32(bdf, high_offset, high);
    let mask = (u64::from(high_mask) << 32) | u64::from(low_mask & !0xf);
    let address = (u64::from(high) << 32) | u64::from(low & !0xf);
    let kind = BarKind::Memory { prefetchable, wide };
    (decode(index, kind, address, mask), 2)
}

/// Turns an address and the all-ones read-back `mask` into a BAR (`None` if unimplemented).
fn decode(index: u8, kind: BarKind, address: u64, mask: u64) -> Option<Result<Bar, BarError>> {
    let address_bits = match kind {
        BarKind::Io => 0xffff_ffff_ffff_fffc,
        BarKind::Memory { .. } => 0xffff_ffff_ffff_fff0,
    };
    // An I/O BAR only decodes 16 bits on x86, whatever its upper bits read back.
    let mask = if kind == BarKind::Io {
        mask | 0xffff_ffff_ffff_0000
    } else {
        mask
    };
    // An unimplemented BAR reads back zero in its address bits (the upper half of a 64-bit
    // BAR's mask cannot make it implemented on its own).
    if (mask & address_bits) as u32 == 0 {
        return None;
    }
    let size = (!mask).wrapping_add(1) & address_bits;
    if size == 0 || !size.is_power_of_two() || (!mask).wrapping_add(1) != size {
        return Some(Err(BarError::BadSize { index, mask }));
    }
    if address == 0 {
        return Some(Err(BarError::Unassigned { index }));
    }
    Some(Ok(Bar {
        index,
        kind,
        address,
        size,
    }))
}

/// Sets bits in the command register (memory space, bus master, ...).
pub fn enable<A: ConfigAccess>(access: &A, bdf: Bdf, bits: u16) {
    let current = access.read32(bdf, reg::COMMAND) as u16;
    access.write16(bdf, reg::COMMAND, current | bits);
}

/// Where an access of `width` bytes at `offset` lands in a window of `len` bytes starting at
/// `base`, or `None` if it is not entirely inside or not naturally aligned. This is the bounds
/// check behind the guest's [`virtio_core::hal::RegisterIo`].
#[must_use]
pub fn locate(base: u64, len: u64, offset: u64, width: u64) -> Option<u64> {
    let end = offset.checked_add(width)?;
    if end > len || !offset.is_multiple_of(width) {
        return None;
    }
    base.checked_add(offset)
}

/// One function's configuration space as virtio-core's [`PciConfig`].
///
/// Narrow reads are carved out of dword reads; out-of-range offsets read as all ones and
/// writes to them are dropped, like a master abort.
pub struct Function<'a, A> {
    access: &'a A,
    bdf: Bdf,
}

impl<'a, A: ConfigAccess> Function<'a, A> {
    /// The function at `bdf`.
    pub const fn new(access: &'a A, bdf: Bdf) -> Self {
        Self { access, bdf }
    }

    /// The dword containing `offset`, and the bit shift of `offset` within it; `None` beyond the
    /// 256-byte conventional configuration space.
    fn dword(&self, offset: u16) -> Option<(u32, u32)> {
        let aligned = u8::try_from(offset & !3).ok()?;
        Some((
            self.access.read32(self.bdf, aligned),
            u32::from(offset & 3) * 8,
        ))
    }
}

impl<A: ConfigAccess> PciConfig for Function<'_, A> {
    fn read8(&self, offset: u16) -> u8 {
        self.dword(offset)
            .map_or(u8::MAX, |(dword, shift)| (dword >> shift) as u8)
    }

    fn read16(&self, offset: u16) -> u16 {
        if !offset.is_multiple_of(2) {
            return u16::MAX;
        }
        self.dword(offset)
            .map_or(u16::MAX, |(dword, shift)| (dword >> shift) as u16)
    }

    fn read32(&self, offset: u16) -> u32 {
        if !offset.is_multiple_of(4) {
            return u32::MAX;
        }
        self.dword(offset).map_or(u32::MAX, |(dword, _)| dword)
    }

    fn write16(&self, offset: u16, value: u16) {
        if let Ok(offset) = u8::try_from(offset)
            && offset.is_multiple_of(2)
        {
            self.access.write16(self.bdf, offset, value);
        }
    }
}

/// Why MSI-X could not be enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsixError {
    /// The function has no capability list or no MSI-X capability.
    NoCapability,
    /// The table lies outside its BAR.
    TableOutsideBar {
        /// BAR index (BIR).
        bar: u8,
        /// Table offset.
        offset: u32,
    },
    /// The table has no such entry.
    NoSuchEntry(u16),
}

/// Standard capability IDs (PCI 3.0 appendix H).
const CAP_ID_MSIX: u8 = 0x11;
/// The local APIC's MSI address window (Intel SDM vol. 3, 11.11.1): destination APIC ID 0.
const MSI_ADDRESS: u32 = 0xfee0_0000;
/// MSI-X message control: enable, and function mask (PCI 3.0 section 6.8.2.3).
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;

/// The offset of the first capability with `id`, walking at most 48 entries (the most that fit
/// in 192 bytes), or `None`.
#[must_use]
pub fn find_capability<A: ConfigAccess>(access: &A, bdf: Bdf, id: u8) -> Option<u8> {
    let function = Function::new(access, bdf);
    if function.read16(0x06) & (1 << 4) == 0 {
        return None;
    }
    let mut at = function.read8(0x34) & 0xfc;
    for _ in 0..48 {
        if at < 0x40 {
            return None;
        }
        if function.read8(u16::from(at)) == id {
            return Some(at);
        }
        at = function.read8(u16::from(at) + 1) & 0xfc;
    }
    None
}

/// Programs every MSI-X table entry to send vector `first_vector + entry` to APIC 0 (masked if
/// `masked`, so the device only sets pending bits) and enables MSI-X, which virtio needs for its
/// per-queue vectors. Returns the number of table entries.
///
/// # Errors
/// [`MsixError`] if the function has no usable MSI-X capability.
pub fn enable_msix<A: ConfigAccess, R: virtio_core::hal::RegisterIo>(
    access: &A,
    bdf: Bdf,
    registers: &R,
    first_vector: u8,
    masked: bool,
) -> Result<u16, MsixError> {
    let cap = find_capability(access, bdf, CAP_ID_MSIX).ok_or(MsixError::NoCapability)?;
    let function = Function::new(access, bdf);
    let control = function.read16(u16::from(cap) + 2);
    let entries = (control & 0x7ff) + 1;
    let table = function.read32(u16::from(cap) + 4);
    let bar = (table & 0x7) as u8;
    let offset = table & !0x7;
    let end = u64::from(offset) + u64::from(entries) * 16;
    if registers.bar_len(bar).is_none_or(|len| end > len) {
        return Err(MsixError::TableOutsideBar { bar, offset });
    }
    for entry in 0..entries {
        let at = u64::from(offset) + u64::from(entry) * 16;
        registers.write32(bar, at, MSI_ADDRESS);
        registers.write32(bar, at + 4, 0);
        registers.write32(bar, at + 8, u32::from(first_vector) + u32::from(entry));
        registers.write32(bar, at + 12, u32::from(masked));
    }
    function.write16(
        u16::from(cap) + 2,
        (control | MSIX_ENABLE) & !MSIX_FUNCTION_MASK,
    );
    Ok(entries)
}

/// Points MSI-X table entry `entry` at the local APIC with ID `apic_id` (physical destination
/// mode, Intel SDM vol. 3, 11.11.1): masks the entry, writes its address, unmasks it, so no
/// message goes out half-written. [`enable_msix`] points every entry at APIC ID 0.
///
/// # Errors
/// [`MsixError`]: no capability, the table outside its BAR, or no such entry.
pub fn set_msix_destination<A: ConfigAccess, R: virtio_core::hal::RegisterIo>(
    access: &A,
    bdf: Bdf,
    registers: &R,
    entry: u16,
    apic_id: u8,
) -> Result<(), MsixError> {
    let cap = find_capability(access, bdf, CAP_ID_MSIX).ok_or(MsixError::NoCapability)?;
    let function = Function::new(access, bdf);
    let entries = (function.read16(u16::from(cap) + 2) & 0x7ff) + 1;
    if entry >= entries {
        return Err(MsixError::NoSuchEntry(entry));
    }
    let table = function.read32(u16::from(cap) + 4);
    let bar = (table & 0x7) as u8;
    let offset = table & !0x7;
    let at = u64::from(offset) + u64::from(entry) * 16;
    if registers.bar_len(bar).is_none_or(|len| at + 16 > len) {
        return Err(MsixError::TableOutsideBar { bar, offset });
    }
    registers.write32(bar, at + 12, 1);
    registers.write32(bar, at, MSI_ADDRESS | (u32::from(apic_id) << 12));
    registers.write32(bar, at + 12, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use core::cell::RefCell;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    use super::*;

    /// A configuration space with functions as byte arrays and BARs that behave like hardware
    /// (read-only low bits, size mask on all-ones writes).
    #[derive(Default)]
    struct FakeBus {
        functions: RefCell<BTreeMap<Bdf, FakeFunction>>,
    }

    #[derive(Clone)]
    struct FakeFunction {
        space: [u8; 256],
        /// Per BAR register: the writable-bit mask (0 for unimplemented registers).
        bar_masks: [u32; 6],
    }

    impl FakeFunction {
        fn new(vendor: u16, device: u16, header: u8) -> Self {
            let mut space = [0u8; 256];
            space[0..2].copy_from_slice(&vendor.to_le_bytes());
            space[2..4].copy_from_slice(&device.to_le_bytes());
            space[0x0e] = header;
            Self {
                space,
                bar_masks: [0; 6],
            }
        }

        fn set32(&mut self, offset: usize, value: u32) {
            self.space[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        }

        fn get32(&self, offset: usize) -> u32 {
            u32::from_le_bytes(self.space[offset..offset + 4].try_into().unwrap())
        }
    }

    impl FakeBus {
        fn add(&self, bdf: Bdf, function: FakeFunction) {
            self.functions.borrow_mut().insert(bdf, function);
        }
    }

    impl ConfigAccess for FakeBus {
        fn read32(&self, bdf: Bdf, offset: u8) -> u32 {
            assert_eq!(offset % 4, 0);
            self.functions
                .borrow()
                .get(&bdf)
                .map_or(u32::MAX, |f| f.get32(offset.into()))
        }

        fn write32(&self, bdf: Bdf, offset: u8, value: u32) {
            let mut functions = self.functions.borrow_mut();
            let Some(f) = functions.get_mut(&bdf) else {
                return;
            };
            let offset = usize::from(offset);
            if (0x10..0x28).contains(&offset) {
                let mask = f.bar_masks[(offset - 0x10) / 4];
                let old = f.get32(offset);
                f.set32(offset, (old & !mask) | (value & mask));
            } else {
                f.set32(offset, value);
            }
        }

        fn write16(&self, bdf: Bdf, offset: u8, value: u16) {
            let mut functions = self.functions.borrow_mut();
            let Some(f) = functions.get_mut(&bdf) else {
                return;
            };
            let offset = usize::from(offset);
            f.space[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
        }
    }

    fn bdf(bus: u8, device: u8, function: u8) -> Bdf {
        Bdf {
            bus,
            device,
            function,
        }
    }

    #[test]
    fn scan_visits_functions_follows_bridges_and_skips_empty_slots() {
        let bus = FakeBus::default();
        let mut host = FakeFunction::new(0x8086, 0x1237, 0);
        host.set32(0x08, 0x0600_0002);
        bus.add(bdf(0, 0, 0), host);
        // A multi-function device: functions 0 and 3.
        bus.add(bdf(0, 1, 0), FakeFunction::new(0x8086, 0x7000, 0x80));
        bus.add(bdf(0, 1, 3), FakeFunction::new(0x8086, 0x7113, 0));
        // Function 2 exists but function 0 says "single function": not visited.
        bus.add(bdf(0, 2, 0), FakeFunction::new(0x1234, 0x1111, 0));
        bus.add(bdf(0, 2, 2), FakeFunction::new(0x1234, 0x2222, 0));
        // A bridge to bus 1, holding a virtio device.
        let mut bridge = FakeFunction::new(0x1b36, 0x0001, 1);
        bridge.set32(0x18, 0x0001_0100);
        bus.add(bdf(0, 3, 0), bridge);
        let mut scsi = FakeFunction::new(0x1af4, 0x1048, 0);
        scsi.set32(0x2c, 0x0008_1af4);
        bus.add(bdf(1, 5, 0), scsi);
        // A bridge whose secondary bus points back at bus 0 (a loop) is not followed.
        let mut looped = FakeFunction::new(0x1b36, 0x0001, 1);
        looped.set32(0x18, 0x0000_0001);
        bus.add(bdf(1, 6, 0), looped);

        let mut seen = Vec::new();
        let none: Option<()> = scan(&bus, |info| {
            seen.push((info.bdf, info.device_id));
            ControlFlow::Continue(())
        });
        assert_eq!(none, None);
        assert_eq!(
            seen,
            [
                (bdf(0, 0, 0), 0x1237),
                (bdf(0, 1, 0), 0x7000),
                (bdf(0, 1, 3), 0x7113),
                (bdf(0, 2, 0), 0x1111),
                (bdf(0, 3, 0), 0x0001),
                (bdf(1, 5, 0), 0x1048),
                (bdf(1, 6, 0), 0x0001),
            ]
        );

        let found = scan(&bus, |info| {
            if info.vendor_id == 0x1af4 {
                ControlFlow::Break(*info)
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(found.bdf, bdf(1, 5, 0));
        assert_eq!((found.subsystem_vendor_id, found.subsystem_id), (0x1af4, 8));
        let host = read_info(&bus, bdf(0, 0, 0)).unwrap();
        assert_eq!((host.class, host.revision), (0x06_0000, 2));
    }

    #[test]
    fn bars_are_sized_decoded_and_the_command_register_restored() {
        let bus = FakeBus::default();
        let mut f = FakeFunction::new(0x1af4, 0x1004, 0);
        f.space[4] = 0x07;
        // BAR0: I/O, 64 bytes at 0xc040.
        f.set32(0x10, 0xc041);
        f.bar_masks[0] = 0xffff_ffc0;
        // BAR1: 32-bit memory, 4 KiB at 0xfebd_1000.
        f.set32(0x14, 0xfebd_1000);
        f.bar_masks[1] = 0xffff_f000;
        // BAR2/3 unimplemented. BAR4/5: 64-bit prefetchable, 16 KiB at 0x8_0000_0000.
        f.set32(0x20, 0x0000_000c);
        f.set32(0x24, 0x0000_0008);
        f.bar_masks[4] = 0xffff_c000;
        f.bar_masks[5] = 0xffff_ffff;
        bus.add(bdf(0, 4, 0), f);

        let bars = read_bars(&bus, bdf(0, 4, 0));
        assert_eq!(
            bars[0],
            Some(Ok(Bar {
                index: 0,
                kind: BarKind::Io,
                address: 0xc040,
                size: 64
            }))
        );
        let memory32 = BarKind::Memory {
            prefetchable: false,
            wide: false,
        };
        assert_eq!(
            bars[1],
            Some(Ok(Bar {
                index: 1,
                kind: memory32,
                address: 0xfebd_1000,
                size: 4096
            }))
        );
        assert_eq!((bars[2], bars[3], bars[5]), (None, None, None));
        let memory64 = BarKind::Memory {
            prefetchable: true,
            wide: true,
        };
        assert_eq!(
            bars[4],
            Some(Ok(Bar {
                index: 4,
                kind: memory64,
                address: 0x8_0000_0000,
                size: 0x4000
            }))
        );
        // Addresses survive sizing and decoding is back on.
        assert_eq!(bus.read32(bdf(0, 4, 0), 0x24), 8);
        assert_eq!(bus.read32(bdf(0, 4, 0), 0x04) & 0xffff, 0x07);
    }

    #[test]
    fn unassigned_and_malformed_bars_are_errors_not_panics() {
        let bus = FakeBus::default();
        let mut f = FakeFunction::new(0x1af4, 0x1048, 0);
        f.bar_masks[0] = 0xffff_f000; // implemented, left at address 0
        f.set32(0x14, 0x0);
        f.bar_masks[1] = 0xf0f0_f000; // holes in the mask: not a power-of-two size
        f.set32(0x24, 0x4); // 64-bit BAR in the last slot
        f.bar_masks[5] = 0xffff_f000;
        bus.add(bdf(0, 1, 0), f);
        let bars = read_bars(&bus, bdf(0, 1, 0));
        assert_eq!(bars[0], Some(Err(BarError::Unassigned { index: 0 })));
        assert!(matches!(
            bars[1],
            Some(Err(BarError::BadSize { index: 1, .. }))
        ));
        assert_eq!(bars[5], Some(Err(BarError::WideInLastSlot)));
    }

    #[test]
    fn function_adapter_reads_narrow_fields_and_writes_sixteen_bits() {
        let bus = FakeBus::default();
        let mut f = FakeFunction::new(0x1af4, 0x1048, 0);
        f.space[0x06] = 0x10; // status: capabilities list
        f.space[0x34] = 0x98;
        bus.add(bdf(0, 2, 0), f);
        let function = Function::new(&bus, bdf(0, 2, 0));
        assert_eq!(function.read16(0), 0x1af4);
        assert_eq!(function.read16(2), 0x1048);
        assert_eq!(function.read8(0x34), 0x98);
        assert_eq!(function.read32(0), 0x1048_1af4);
        assert_eq!(function.read16(1), u16::MAX, "misaligned");
        assert_eq!(function.read8(0x100), u8::MAX, "beyond 256 bytes");
        function.write16(4, command::MEMORY_SPACE | command::BUS_MASTER);
        assert_eq!(function.read16(4), 0x6);
        assert_eq!(function.read16(6), 0x10, "status untouched");
        enable(&bus, bdf(0, 2, 0), command::INTX_DISABLE);
        assert_eq!(function.read16(4), 0x406);
    }

    #[test]
    fn locate_checks_bounds_alignment_and_overflow() {
        assert_eq!(locate(0x1000, 0x100, 0, 4), Some(0x1000));
        assert_eq!(locate(0x1000, 0x100, 0xfc, 4), Some(0x10fc));
        assert_eq!(locate(0x1000, 0x100, 0xfd, 1), Some(0x10fd));
        assert_eq!(locate(0x1000, 0x100, 0xfe, 4), None, "crosses the end");
        assert_eq!(locate(0x1000, 0x100, 2, 4), None, "misaligned");
        assert_eq!(locate(0x1000, 0x100, u64::MAX - 1, 2), None, "overflow");
        assert_eq!(locate(u64::MAX - 1, 0x100, 8, 8), None, "address overflow");
    }

    /// BAR registers as a map of 32-bit writes, for the MSI-X table.
    struct FakeBars {
        len: u64,
        writes: RefCell<BTreeMap<(u8, u64), u32>>,
    }

    impl virtio_core::hal::RegisterIo for FakeBars {
        fn bar_len(&self, bar: u8) -> Option<u64> {
            (bar == 1).then_some(self.len)
        }
        fn read8(&self, _: u8, _: u64) -> u8 {
            u8::MAX
        }
        fn read16(&self, _: u8, _: u64) -> u16 {
            u16::MAX
        }
        fn read32(&self, bar: u8, offset: u64) -> u32 {
            self.writes
                .borrow()
                .get(&(bar, offset))
                .copied()
                .unwrap_or(u32::MAX)
        }
        fn write8(&self, _: u8, _: u64, _: u8) {}
        fn write16(&self, _: u8, _: u64, _: u16) {}
        fn write32(&self, bar: u8, offset: u64, value: u32) {
            self.writes.borrow_mut().insert((bar, offset), value);
        }
    }

    fn msix_function(table: u32) -> FakeBus {
        let bus = FakeBus::default();
        let mut f = FakeFunction::new(0x1af4, 0x1048, 0);
        f.space[0x06] = 0x10;
        f.space[0x34] = 0x40;
        // A vendor capability first, then MSI-X with 7 entries and the table in BAR 1.
        f.space[0x40] = 0x09;
        f.space[0x41] = 0x98;
        f.space[0x98] = 0x11;
        f.space[0x99] = 0x00;
        f.space[0x9a] = 0x06;
        f.space[0x9b] = 0x40; // function mask set by firmware
        f.set32(0x9c, table);
        bus.add(bdf(0, 3, 0), f);
        bus
    }

    #[test]
    fn msix_table_is_programmed_and_enabled() {
        let bus = msix_function(0x0000_0001);
        assert_eq!(find_capability(&bus, bdf(0, 3, 0), 0x11), Some(0x98));
        assert_eq!(find_capability(&bus, bdf(0, 3, 0), 0x05), None);
        let bars = FakeBars {
            len: 0x1000,
            writes: RefCell::default(),
        };
        assert_eq!(enable_msix(&bus, bdf(0, 3, 0), &bars, 0x40, true), Ok(7));
        let writes = bars.writes.borrow();
        assert_eq!(writes.len(), 7 * 4);
        assert_eq!(writes[&(1, 6 * 16)], 0xfee0_0000);
        assert_eq!(writes[&(1, 6 * 16 + 8)], 0x46);
        assert_eq!(writes[&(1, 6 * 16 + 12)], 1, "masked");
        let control = Function::new(&bus, bdf(0, 3, 0)).read16(0x9a);
        assert_eq!(
            control, 0x8006,
            "enabled, function mask cleared, size untouched"
        );
    }

    #[test]
    fn an_msix_entry_is_pointed_at_another_cpu_and_only_existing_entries_are() {
        let bus = msix_function(0x0000_0001);
        let bars = FakeBars {
            len: 0x1000,
            writes: RefCell::default(),
        };
        set_msix_destination(&bus, bdf(0, 3, 0), &bars, 4, 1).unwrap();
        let writes = bars.writes.borrow();
        assert_eq!(writes[&(1, 4 * 16)], 0xfee0_1000, "destination APIC ID 1");
        assert_eq!(writes[&(1, 4 * 16 + 12)], 0, "unmasked again");
        assert_eq!(writes.len(), 2, "only entry 4's address and control");
        drop(writes);
        assert_eq!(
            set_msix_destination(&bus, bdf(0, 3, 0), &bars, 7, 1),
            Err(MsixError::NoSuchEntry(7))
        );
    }

    #[test]
    fn msix_refuses_a_table_outside_its_bar_and_missing_capabilities() {
        let bus = msix_function(0x0000_0ff9);
        let bars = FakeBars {
            len: 0x1000,
            writes: RefCell::default(),
        };
        assert_eq!(
            enable_msix(&bus, bdf(0, 3, 0), &bars, 0x40, false),
            Err(MsixError::TableOutsideBar {
                bar: 1,
                offset: 0xff8
            })
        );
        assert!(bars.writes.borrow().is_empty());
        let plain = FakeBus::default();
        plain.add(bdf(0, 1, 0), FakeFunction::new(0x8086, 0x1234, 0));
        assert_eq!(
            enable_msix(&plain, bdf(0, 1, 0), &bars, 0x40, false),
            Err(MsixError::NoCapability)
        );
    }
}
