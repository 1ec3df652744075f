//! The capability walk (virtio 1.x section 4.1.4): finds and validates the virtio structures in
//! PCI configuration space, and maps device IDs to virtio device types (section 4.1.2).
//!
//! Every capability pointer, BAR number, offset, length and the notify multiplier is untrusted;
//! a violation is a [`TransportError`]. The walk reads configuration space only and touches no
//! device register.

use core::mem::size_of;

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::common::VirtioPciCommonCfg;
use super::{
    TransportError, VIRTIO_DEVICE_TYPE_SCSI, VIRTIO_PCI_MODERN_DEVICE_ID_BASE, VIRTIO_PCI_VENDOR_ID,
};
use crate::hal::PciConfig;

/// `cap_vndr` of a vendor-specific PCI capability, which virtio structures use (section 4.1.4).
pub const PCI_CAP_ID_VNDR: u8 = 0x09;
/// Capability ID of MSI-X (PCI Local Bus 3.0 section 6.8.2).
pub const PCI_CAP_ID_MSIX: u8 = 0x11;
/// `cfg_type` of the common configuration structure (section 4.1.4).
pub const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
/// `cfg_type` of the notification structure (section 4.1.4).
pub const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
/// `cfg_type` of the ISR status structure (section 4.1.4).
pub const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
/// `cfg_type` of the device-specific configuration structure (section 4.1.4).
pub const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
/// `cfg_type` of the PCI configuration access capability (section 4.1.4); not used by rvscsi.
pub const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;

/// Offset of the vendor ID in the type 0 configuration header.
pub const PCI_VENDOR_ID: u16 = 0x00;
/// Offset of the device ID in the type 0 configuration header.
pub const PCI_DEVICE_ID: u16 = 0x02;
/// Offset of the status register in the type 0 configuration header.
pub const PCI_STATUS: u16 = 0x06;
/// Status register bit: the function has a capability list.
pub const PCI_STATUS_CAP_LIST: u16 = 1 << 4;
/// Offset of the capabilities pointer in the type 0 configuration header.
pub const PCI_CAPABILITY_LIST: u16 = 0x34;
/// Capabilities live after the 64-byte standard header.
const PCI_CAP_FIRST: u8 = 0x40;
/// Size of conventional configuration space; standard capabilities lie below it.
const PCI_CONFIG_SPACE_SIZE: u16 = 0x100;

/// `struct virtio_pci_cap` (virtio 1.x section 4.1.4): a virtio structure's location.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VirtioPciCap {
    /// Generic PCI field: [`PCI_CAP_ID_VNDR`].
    pub cap_vndr: u8,
    /// Generic PCI field: next capability pointer.
    pub cap_next: u8,
    /// Generic PCI field: capability length, including extra data.
    pub cap_len: u8,
    /// Which structure this is (`VIRTIO_PCI_CAP_*`).
    pub cfg_type: u8,
    /// BAR holding the structure (0 to 5; others reserved).
    pub bar: u8,
    /// Distinguishes several capabilities of one type, where a device type defines it.
    pub id: u8,
    /// Pads to a full dword.
    pub padding: [u8; 2],
    /// Offset of the structure within the BAR.
    pub offset: U32,
    /// Length of the structure in bytes.
    pub length: U32,
}
const _: () = assert!(size_of::<VirtioPciCap>() == 16);

/// `struct virtio_pci_notify_cap` (virtio 1.x section 4.1.4.4).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VirtioPciNotifyCap {
    /// The generic part, with `cfg_type` [`VIRTIO_PCI_CAP_NOTIFY_CFG`].
    pub cap: VirtioPciCap,
    /// Multiplier for `queue_notify_off`.
    pub notify_off_multiplier: U32,
}
const _: () = assert!(size_of::<VirtioPciNotifyCap>() == 20);

/// Where a validated virtio structure lives: BAR number, offset and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// BAR number (0 to 5), mapped.
    pub bar: u8,
    /// Offset of the structure in the BAR.
    pub offset: u32,
    /// Length of the structure; `offset + length` lies within the BAR.
    pub length: u32,
}

impl Region {
    /// The BAR offset of byte `at` of the structure.
    pub(super) const fn at(self, at: u64) -> u64 {
        self.offset as u64 + at
    }
}

/// The validated layout found by the capability walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciLayout {
    /// The common configuration structure (length at least [`VirtioPciCommonCfg::MIN_LEN`]).
    pub common: Region,
    /// The notification structure (length at least 2, offset 2-aligned).
    pub notify: Region,
    /// `notify_off_multiplier`: 0 or an even power of two.
    pub notify_off_multiplier: u32,
    /// The ISR status byte (length at least 1).
    pub isr: Region,
    /// The device-specific configuration, if the device has one (offset 4-aligned).
    pub device: Option<Region>,
    /// Entries in the MSI-X table, if the function has an MSI-X capability.
    pub msix_table_size: Option<u16>,
}

/// The virtio device type a vendor 0x1AF4 device ID stands for (section 4.1.2).
///
/// # Errors
/// [`TransportError::NotVirtio`] for other vendors or IDs outside the virtio range,
/// [`TransportError::UnknownTransitionalDevice`] for a transitional ID the spec does not assign.
pub fn device_type(vendor_id: u16, device_id: u16) -> Result<u16, TransportError> {
    if vendor_id != VIRTIO_PCI_VENDOR_ID {
        return Err(TransportError::NotVirtio {
            vendor_id,
            device_id,
        });
    }
    match device_id {
        0x1040..=0x107F => Ok(device_id - VIRTIO_PCI_MODERN_DEVICE_ID_BASE),
        // The transitional IDs of section 4.1.2.1's table.
        0x1000 => Ok(1),
        0x1001 => Ok(2),
        0x1002 => Ok(5),
        0x1003 => Ok(3),
        0x1004 => Ok(VIRTIO_DEVICE_TYPE_SCSI),
        0x1005 => Ok(4),
        0x1009 => Ok(9),
        0x1006..=0x1008 | 0x100A..=0x103F => {
            Err(TransportError::UnknownTransitionalDevice(device_id))
        }
        _ => Err(TransportError::NotVirtio {
            vendor_id,
            device_id,
        }),
    }
}

/// Index of a needed structure type in the walk's per-type arrays.
const fn type_slot(cfg_type: u8) -> Option<usize> {
    match cfg_type {
        VIRTIO_PCI_CAP_COMMON_CFG => Some(0),
        VIRTIO_PCI_CAP_NOTIFY_CFG => Some(1),
        VIRTIO_PCI_CAP_ISR_CFG => Some(2),
        VIRTIO_PCI_CAP_DEVICE_CFG => Some(3),
        _ => None,
    }
}

/// A capability candidate that passed validation.
#[derive(Clone, Copy)]
struct Chosen {
    region: Region,
    notify_off_multiplier: u32,
}

/// Checks one virtio structure capability against the mapped BARs and its section's rules.
fn validate_capability(
    cap: &VirtioPciCap,
    notify_off_multiplier: u32,
    bar_len: &impl Fn(u8) -> Option<u64>,
) -> Result<Chosen, TransportError> {
    let cfg_type = cap.cfg_type;
    let (bar, offset, length) = (cap.bar, cap.offset.get(), cap.length.get());
    if bar > 5 {
        return Err(TransportError::BarOutOfRange { cfg_type, bar });
    }
    let mapped = bar_len(bar).ok_or(TransportError::BarNotMapped { cfg_type, bar })?;
    // Both terms are below 2^32, so the sum cannot overflow a u64.
    if u64::from(offset) + u64::from(length) > mapped {
        return Err(TransportError::CapabilityOutsideBar {
            cfg_type,
            offset,
            length,
            bar_len: mapped,
        });
    }
    // Alignment (sections 4.1.4.3.1, 4.1.4.4.1 without NOTIFICATION_DATA, 4.1.4.5, 4.1.4.6.1)
    // and the minimum length each structure needs.
    let (align, min_len) = match cfg_type {
        VIRTIO_PCI_CAP_COMMON_CFG => (4, VirtioPciCommonCfg::MIN_LEN),
        VIRTIO_PCI_CAP_NOTIFY_CFG => (2, 2),
        VIRTIO_PCI_CAP_ISR_CFG => (1, 1),
        _ => (4, 0),
    };
    if !offset.is_multiple_of(align) {
        return Err(TransportError::CapabilityMisaligned { cfg_type, offset });
    }
    if length < min_len {
        return Err(TransportError::CapabilityTooSmall { cfg_type, length });
    }
    // Section 4.1.4.4.1: "an even power of 2, or 0". An even multiplier keeps every queue's
    // 16-bit notify address 2-aligned.
    if cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG
        && notify_off_multiplier != 0
        && !(notify_off_multiplier.is_power_of_two() && notify_off_multiplier >= 2)
    {
        return Err(TransportError::NotifyMultiplierInvalid(
            notify_off_multiplier,
        ));
    }
    Ok(Chosen {
        region: Region {
            bar,
            offset,
            length,
        },
        notify_off_multiplier,
    })
}

/// Reads `N` bytes of configuration space at `at` with dword accesses. The caller checked that
/// `at` is dword-aligned and that `at + N` lies within configuration space.
fn read_config_bytes<const N: usize>(config: &impl PciConfig, at: u8) -> [u8; N] {
    let mut bytes = [0u8; N];
    let mut offset = u16::from(at);
    for chunk in bytes.chunks_mut(4) {
        let dword = config.read32(offset).to_le_bytes();
        for (dst, src) in chunk.iter_mut().zip(dword) {
            *dst = src;
        }
        offset += 4;
    }
    bytes
}

/// Walks the capability list (PCI Local Bus 3.0 section 6.7; virtio 1.x section 4.1.4) and
/// returns the validated layout. `bar_len` says how long each mapped BAR is.
///
/// For each structure type the first capability that validates wins, following the device's
/// order of preference (section 4.1.4.1: "the first instance ... they can support"); a later
/// instance is a fallback, e.g. a memory BAR after an unmapped I/O BAR. If no instance of a
/// needed type validates, the first instance's error is returned, so a device with one broken
/// capability gets a precise diagnosis.
///
/// # Errors
/// A malformed list ([`TransportError::CapabilityPointerInvalid`],
/// [`TransportError::CapabilityLoop`]), or no usable common, notification or ISR structure (the
/// first candidate's validation error, or [`TransportError::MissingCapability`]).
pub fn parse_capabilities(
    config: &impl PciConfig,
    bar_len: impl Fn(u8) -> Option<u64>,
) -> Result<PciLayout, TransportError> {
    if config.read16(PCI_STATUS) & PCI_STATUS_CAP_LIST == 0 {
        return Err(TransportError::NoCapabilityList);
    }
    let mut chosen: [Option<Chosen>; 4] = [None; 4];
    let mut first_error: [Option<TransportError>; 4] = [None; 4];
    let mut msix_table_size = None;
    // One bit per dword of 0x40..0x100: capabilities are dword-aligned, so a visited bit per
    // dword detects any cycle and bounds the walk at 48 steps.
    let mut visited: u64 = 0;
    let mut pointer_at = PCI_CAPABILITY_LIST as u8;
    // PCI 3.0 section 6.7: the low two bits of every capability pointer are reserved and
    // software must mask them off.
    let mut at = config.read8(PCI_CAPABILITY_LIST) & !3;
    while at != 0 {
        if at < PCI_CAP_FIRST {
            return Err(TransportError::CapabilityPointerInvalid {
                at: pointer_at,
                pointer: at,
            });
        }
        let bit = 1u64 << ((at - PCI_CAP_FIRST) / 4);
        if visited & bit != 0 {
            return Err(TransportError::CapabilityLoop { at });
        }
        visited |= bit;

        let header: [u8; 4] = read_config_bytes(config, at);
        let [cap_id, next, cap_len, cfg_type] = header;
        if cap_id == PCI_CAP_ID_MSIX && msix_table_size.is_none() {
            // Message Control is bytes 2..4; its low 11 bits are the table size minus one.
            let control = u16::from_le_bytes([cap_len, cfg_type]);
            msix_table_size = Some((control & 0x7FF) + 1);
        }
        if cap_id == PCI_CAP_ID_VNDR
            && let Some(slot) = type_slot(cfg_type)
            && chosen[slot].is_none()
        {
            let result = read_virtio_capability(config, at, cap_len, cfg_type)
                .and_then(|(cap, multiplier)| validate_capability(&cap, multiplier, &bar_len));
            match result {
                Ok(candidate) => chosen[slot] = Some(candidate),
                Err(error) => {
                    first_error[slot].get_or_insert(error);
                }
            }
        }
        pointer_at = at + 1;
        at = next & !3;
    }

    // The chosen candidate, else the first candidate's error, else nothing.
    let pick = |slot: usize| -> Result<Option<Chosen>, TransportError> {
        chosen[slot]
            .map(Ok)
            .or(first_error[slot].map(Err))
            .transpose()
    };
    let missing = TransportError::MissingCapability;
    let common = pick(0)?.ok_or(missing(VIRTIO_PCI_CAP_COMMON_CFG))?;
    let notify = pick(1)?.ok_or(missing(VIRTIO_PCI_CAP_NOTIFY_CFG))?;
    let isr = pick(2)?.ok_or(missing(VIRTIO_PCI_CAP_ISR_CFG))?;
    let device = pick(3)?;
    Ok(PciLayout {
        common: common.region,
        notify: notify.region,
        notify_off_multiplier: notify.notify_off_multiplier,
        isr: isr.region,
        device: device.map(|d| d.region),
        msix_table_size,
    })
}

/// Reads a virtio structure capability at `at`, after checking that `cap_len` covers the
/// structure and that it fits in configuration space. Returns it and, for the notification
/// capability, `notify_off_multiplier` (0 otherwise).
fn read_virtio_capability(
    config: &impl PciConfig,
    at: u8,
    cap_len: u8,
    cfg_type: u8,
) -> Result<(VirtioPciCap, u32), TransportError> {
    let needed = if cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG {
        size_of::<VirtioPciNotifyCap>()
    } else {
        size_of::<VirtioPciCap>()
    };
    let fits = u16::from(at) + needed as u16 <= PCI_CONFIG_SPACE_SIZE;
    if usize::from(cap_len) < needed || !fits {
        return Err(TransportError::CapabilityTruncated { at, cap_len });
    }
    let bytes: [u8; size_of::<VirtioPciNotifyCap>()] = if needed == size_of::<VirtioPciCap>() {
        // Read only the 16 bytes the structure has; the notify-sized buffer's tail stays zero.
        let short: [u8; size_of::<VirtioPciCap>()] = read_config_bytes(config, at);
        let mut bytes = [0u8; size_of::<VirtioPciNotifyCap>()];
        for (dst, src) in bytes.iter_mut().zip(short) {
            *dst = src;
        }
        bytes
    } else {
        read_config_bytes(config, at)
    };
    let notify = VirtioPciNotifyCap::read_from_bytes(&bytes[..]).map_err(|_| {
        // The buffer is exactly the structure's size, so this cannot happen; map it to the
        // truncation error rather than panicking.
        TransportError::CapabilityTruncated { at, cap_len }
    })?;
    let multiplier = if cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG {
        notify.notify_off_multiplier.get()
    } else {
        0
    };
    Ok((notify.cap, multiplier))
}
