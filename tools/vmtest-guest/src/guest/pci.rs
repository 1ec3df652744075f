//! PCI configuration mechanism #1 (ports 0xCF8/0xCFC) and register access to a device's BARs.

use core::ptr;
use core::sync::atomic::{Ordering, compiler_fence};

use virtio_core::hal::RegisterIo;
use vmtest_guest::pci_scan::{self, Bar, BarKind, Bdf, ConfigAccess};

use super::paging::{self, MapError};
use super::port;

/// CONFIG_ADDRESS (PCI 3.0 section 3.2.2.3.2).
const CONFIG_ADDRESS: u16 = 0xcf8;
/// CONFIG_DATA.
const CONFIG_DATA: u16 = 0xcfc;

/// Configuration mechanism #1, the PC's configuration access method.
///
/// The address/data pair is shared state: the guest is single-threaded and its interrupt
/// handlers never touch configuration space, so no access can be torn apart.
pub struct Mechanism1;

impl Mechanism1 {
    /// Selects the dword at `offset` of `bdf` for the next CONFIG_DATA access.
    fn select(bdf: Bdf, offset: u8) {
        let address = (1 << 31)
            | (u32::from(bdf.bus) << 16)
            | (u32::from(bdf.device & 0x1f) << 11)
            | (u32::from(bdf.function & 0x7) << 8)
            | u32::from(offset & 0xfc);
        // SAFETY: CONFIG_ADDRESS only latches which register CONFIG_DATA reaches.
        unsafe { port::out32(CONFIG_ADDRESS, address) };
    }
}

impl ConfigAccess for Mechanism1 {
    fn read32(&self, bdf: Bdf, offset: u8) -> u32 {
        Self::select(bdf, offset);
        // SAFETY: configuration reads have no side effects on the devices QEMU emulates here.
        unsafe { port::in32(CONFIG_DATA) }
    }

    fn write32(&self, bdf: Bdf, offset: u8, value: u32) {
        Self::select(bdf, offset);
        // SAFETY: the scan writes BARs (while decoding is off) and restores them; nothing it
        // writes makes a device DMA into memory the guest did not share.
        unsafe { port::out32(CONFIG_DATA, value) };
    }

    fn write16(&self, bdf: Bdf, offset: u8, value: u16) {
        Self::select(bdf, offset);
        // SAFETY: 16-bit writes go to the command register and MSI-X message control; bus
        // mastering is only enabled on the virtio device, whose DMA virtio-core controls.
        unsafe { port::out16(CONFIG_DATA + u16::from(offset & 2), value) };
    }
}

/// How a BAR is reached.
#[derive(Clone, Copy, Debug)]
enum Window {
    /// Identity-mapped uncacheable memory at `base`.
    Memory { base: u64, len: u64 },
    /// I/O ports from `base`.
    Io { base: u64, len: u64 },
}

/// A device's BARs, mapped: the guest's [`RegisterIo`].
#[derive(Clone, Copy)]
pub struct DeviceBars {
    windows: [Option<Window>; 6],
}

/// Why a BAR could not be mapped.
#[derive(Clone, Copy, Debug)]
pub enum BarMapError {
    /// The page tables could not map it.
    Map(MapError),
    /// An I/O BAR beyond the 64 KiB port space.
    IoBeyondPorts(u64),
}

impl core::fmt::Display for BarMapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Map(error) => write!(f, "cannot map BAR: {error:?}"),
            Self::IoBeyondPorts(address) => write!(f, "I/O BAR at {address:#x} beyond 64 KiB"),
        }
    }
}

impl DeviceBars {
    /// Maps the usable BARs of `bars` (from [`pci_scan::read_bars`]); BARs that failed to
    /// decode stay unmapped, so accesses to them read all ones.
    ///
    /// # Errors
    /// [`BarMapError`] if a memory BAR cannot be mapped.
    pub fn map(bars: &[Option<Result<Bar, pci_scan::BarError>>; 6]) -> Result<Self, BarMapError> {
        let mut windows = [None; 6];
        for (slot, bar) in windows.iter_mut().zip(bars.iter()) {
            let Some(Ok(bar)) = bar else { continue };
            *slot = Some(match bar.kind {
                BarKind::Memory { .. } => {
                    paging::map_mmio(bar.address, bar.size).map_err(BarMapError::Map)?;
                    Window::Memory {
                        base: bar.address,
                        len: bar.size,
                    }
                }
                BarKind::Io => {
                    if bar.address.saturating_add(bar.size) > 0x1_0000 {
                        return Err(BarMapError::IoBeyondPorts(bar.address));
                    }
                    Window::Io {
                        base: bar.address,
                        len: bar.size,
                    }
                }
            });
        }
        Ok(Self { windows })
    }

    /// The window of BAR `bar` and where an access of `width` bytes at `offset` lands in it.
    fn target(&self, bar: u8, offset: u64, width: u64) -> Option<(Window, u64)> {
        let window = (*self.windows.get(usize::from(bar))?)?;
        let (Window::Memory { base, len } | Window::Io { base, len }) = window;
        Some((window, pci_scan::locate(base, len, offset, width)?))
    }
}

/// Generates a read method: volatile MMIO load or port input, all ones when out of bounds.
macro_rules! read_method {
    ($name:ident, $ty:ty, $port_in:path) => {
        fn $name(&self, bar: u8, offset: u64) -> $ty {
            match self.target(bar, offset, size_of::<$ty>() as u64) {
                Some((Window::Memory { .. }, address)) => {
                    // SAFETY: `address` is naturally aligned and inside a memory BAR the
                    // firmware assigned to this device, identity-mapped uncacheable by
                    // `DeviceBars::map`; device registers are not Rust memory.
                    let value = unsafe { ptr::read_volatile(address as *const $ty) };
                    // ORDERING: later DMA-memory loads (a used ring the device filled before
                    // the register said so) must not be hoisted above this read by the
                    // compiler; x86 keeps UC loads ordered with later loads in hardware. Pairs
                    // with the device's writes before its register update (RegisterIo docs).
                    compiler_fence(Ordering::SeqCst);
                    value
                }
                // SAFETY: the port lies inside this device's I/O BAR (below 64 KiB, checked in
                // `map`), whose registers start no DMA on a read.
                Some((Window::Io { .. }, address)) => unsafe { $port_in(address as u16) },
                None => <$ty>::MAX,
            }
        }
    };
}

/// Generates a write method: volatile MMIO store or port output, dropped when out of bounds.
macro_rules! write_method {
    ($name:ident, $ty:ty, $port_out:path) => {
        fn $name(&self, bar: u8, offset: u64, value: $ty) {
            match self.target(bar, offset, size_of::<$ty>() as u64) {
                Some((Window::Memory { .. }, address)) => {
                    // ORDERING: earlier stores to DMA memory (ring entries, `avail.idx`) must
                    // not sink below this register write in the compiler; x86 does not reorder
                    // stores with stores in hardware, UC included. Pairs with the device's ring
                    // reads after a notification (virtio 1.x section 2.7.13 / 2.8.21).
                    compiler_fence(Ordering::SeqCst);
                    // SAFETY: as for reads; a register write can make the device DMA, but only
                    // to addresses virtio-core published from this guest's `Hal`.
                    unsafe { ptr::write_volatile(address as *mut $ty, value) }
                }
                // SAFETY: as for reads, and as for MMIO writes regarding DMA.
                Some((Window::Io { .. }, address)) => unsafe { $port_out(address as u16, value) },
                None => {}
            }
        }
    };
}

impl RegisterIo for DeviceBars {
    fn bar_len(&self, bar: u8) -> Option<u64> {
        self.windows
            .get(usize::from(bar))
            .copied()
            .flatten()
            .map(|window| {
                let (Window::Memory { len, .. } | Window::Io { len, .. }) = window;
                len
            })
    }

    read_method!(read8, u8, port::in8);
    read_method!(read16, u16, port::in16);
    read_method!(read32, u32, port::in32);
    write_method!(write8, u8, port::out8);
    write_method!(write16, u16, port::out16);
    write_method!(write32, u32, port::out32);
}
