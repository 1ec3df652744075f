//! The virtio 1.x modern PCI transport (virtio 1.x section 4.1): capability walk, status
//! handshake, feature negotiation, queue setup, MSI-X vectors, notifications, ISR and device
//! configuration.
//!
//! Everything read from configuration space or the device's registers is untrusted: capability
//! pointers, BAR numbers, offsets, lengths, the notify multiplier, `queue_notify_off`, status and
//! MSI-X read-backs are all checked, and a violation is a [`TransportError`], never a panic or an
//! access outside the structure the device advertised.
//!
//! Register access goes through [`RegisterIo`] only. Widths follow section 4.1.3.1: 8-bit fields
//! with 8-bit accesses, 16-bit fields with aligned 16-bit accesses, 32-bit and 64-bit fields with
//! aligned 32-bit accesses (64-bit fields as two halves, low first).
#![forbid(unsafe_code)]

use core::mem::{offset_of, size_of};
use core::sync::atomic::{Ordering, fence};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::features::{FeatureError, Features, negotiate};
use crate::hal::{PciConfig, RegisterIo};
use crate::queue::QueueAddresses;

/// PCI vendor ID of every virtio device (section 4.1.2).
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1AF4;
/// Modern device IDs are this plus the virtio device type (section 4.1.2).
pub const VIRTIO_PCI_MODERN_DEVICE_ID_BASE: u16 = 0x1040;
/// Virtio device type of a SCSI host (section 5.6.1).
pub const VIRTIO_DEVICE_TYPE_SCSI: u16 = 8;
/// Value of a `*_msix_vector` register that maps no vector (section 4.1.5.1.2).
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xFFFF;
/// Highest MSI-X table entry number a vector register can name (section 4.1.5.1.2).
pub const VIRTIO_MSI_MAX_VECTOR: u16 = 0x7FF;

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

/// Number of status reads [`PciTransport::reset`] makes before giving up. A read is a bus
/// round trip (about a microsecond on real hardware), so this is a bound of tenths of a second,
/// far beyond any device's reset time; QEMU completes the reset within the write.
pub const RESET_POLL_LIMIT: u32 = 100_000;
/// Number of times [`PciTransport::read_device_config_with`] re-reads while
/// `config_generation` keeps changing before it reports [`TransportError::ConfigGenerationUnstable`].
pub const CONFIG_GENERATION_ATTEMPTS: u32 = 64;

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

/// `struct virtio_pci_common_cfg` (virtio 1.x section 4.1.4.3), as laid out in the BAR. The
/// transport never maps it; it names the register offsets (the associated constants) for the
/// transport and for device models.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VirtioPciCommonCfg {
    /// Selects which 32 feature bits `device_feature` shows.
    pub device_feature_select: U32,
    /// The device's offered feature bits, 32 at a time.
    pub device_feature: U32,
    /// Selects which 32 feature bits `driver_feature` shows.
    pub driver_feature_select: U32,
    /// The driver's accepted feature bits, 32 at a time.
    pub driver_feature: U32,
    /// MSI-X vector for configuration change notifications.
    pub config_msix_vector: U16,
    /// Number of virtqueues (excluding administration queues).
    pub num_queues: U16,
    /// Device status (section 2.1); writing 0 resets the device.
    pub device_status: u8,
    /// Configuration atomicity counter.
    pub config_generation: u8,
    /// Selects the queue the `queue_*` fields refer to.
    pub queue_select: U16,
    /// Queue size: the maximum after reset, then the driver's choice.
    pub queue_size: U16,
    /// MSI-X vector for the selected queue.
    pub queue_msix_vector: U16,
    /// 1 once the driver enabled the selected queue.
    pub queue_enable: U16,
    /// Notification offset of the selected queue, in units of `notify_off_multiplier`.
    pub queue_notify_off: U16,
    /// Bus address of the descriptor area.
    pub queue_desc: U64,
    /// Bus address of the driver area.
    pub queue_driver: U64,
    /// Bus address of the device area.
    pub queue_device: U64,
    /// Notification data of the selected queue (with `VIRTIO_F_NOTIF_CONFIG_DATA`).
    pub queue_notif_config_data: U16,
    /// Per-queue reset (with `VIRTIO_F_RING_RESET`).
    pub queue_reset: U16,
    /// Index of the first administration queue (with `VIRTIO_F_ADMIN_VQ`).
    pub admin_queue_index: U16,
    /// Number of administration queues (with `VIRTIO_F_ADMIN_VQ`).
    pub admin_queue_num: U16,
}
const _: () = assert!(size_of::<VirtioPciCommonCfg>() == 64);

impl VirtioPciCommonCfg {
    /// Offset of `device_feature_select`.
    pub const DEVICE_FEATURE_SELECT: u64 = offset_of!(Self, device_feature_select) as u64;
    /// Offset of `device_feature`.
    pub const DEVICE_FEATURE: u64 = offset_of!(Self, device_feature) as u64;
    /// Offset of `driver_feature_select`.
    pub const DRIVER_FEATURE_SELECT: u64 = offset_of!(Self, driver_feature_select) as u64;
    /// Offset of `driver_feature`.
    pub const DRIVER_FEATURE: u64 = offset_of!(Self, driver_feature) as u64;
    /// Offset of `config_msix_vector`.
    pub const CONFIG_MSIX_VECTOR: u64 = offset_of!(Self, config_msix_vector) as u64;
    /// Offset of `num_queues`.
    pub const NUM_QUEUES: u64 = offset_of!(Self, num_queues) as u64;
    /// Offset of `device_status`.
    pub const DEVICE_STATUS: u64 = offset_of!(Self, device_status) as u64;
    /// Offset of `config_generation`.
    pub const CONFIG_GENERATION: u64 = offset_of!(Self, config_generation) as u64;
    /// Offset of `queue_select`.
    pub const QUEUE_SELECT: u64 = offset_of!(Self, queue_select) as u64;
    /// Offset of `queue_size`.
    pub const QUEUE_SIZE: u64 = offset_of!(Self, queue_size) as u64;
    /// Offset of `queue_msix_vector`.
    pub const QUEUE_MSIX_VECTOR: u64 = offset_of!(Self, queue_msix_vector) as u64;
    /// Offset of `queue_enable`.
    pub const QUEUE_ENABLE: u64 = offset_of!(Self, queue_enable) as u64;
    /// Offset of `queue_notify_off`.
    pub const QUEUE_NOTIFY_OFF: u64 = offset_of!(Self, queue_notify_off) as u64;
    /// Offset of `queue_desc`.
    pub const QUEUE_DESC: u64 = offset_of!(Self, queue_desc) as u64;
    /// Offset of `queue_driver`.
    pub const QUEUE_DRIVER: u64 = offset_of!(Self, queue_driver) as u64;
    /// Offset of `queue_device`.
    pub const QUEUE_DEVICE: u64 = offset_of!(Self, queue_device) as u64;
    /// Offset of `queue_notif_config_data`.
    pub const QUEUE_NOTIF_CONFIG_DATA: u64 = offset_of!(Self, queue_notif_config_data) as u64;
    /// Offset of `queue_reset`.
    pub const QUEUE_RESET: u64 = offset_of!(Self, queue_reset) as u64;
    /// Offset of `admin_queue_index`.
    pub const ADMIN_QUEUE_INDEX: u64 = offset_of!(Self, admin_queue_index) as u64;
    /// Offset of `admin_queue_num`.
    pub const ADMIN_QUEUE_NUM: u64 = offset_of!(Self, admin_queue_num) as u64;
    /// The shortest common configuration this transport accepts: through `queue_device`, the
    /// virtio 1.0 layout. The later fields belong to features rvscsi does not negotiate.
    pub const MIN_LEN: u32 = offset_of!(Self, queue_notif_config_data) as u32;
}

bitflags::bitflags! {
    /// The `device_status` field (virtio 1.x section 2.1).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct DeviceStatus: u8 {
        /// The guest found the device and recognised it as virtio.
        const ACKNOWLEDGE = 1;
        /// The guest knows how to drive the device.
        const DRIVER = 2;
        /// The driver is set up; the device is live.
        const DRIVER_OK = 4;
        /// Feature negotiation is complete.
        const FEATURES_OK = 8;
        /// The device is suspended (with `VIRTIO_F_SUSPEND`).
        const SUSPEND = 16;
        /// The device hit an error it cannot recover from without a reset.
        const DEVICE_NEEDS_RESET = 64;
        /// The driver gave up on the device.
        const FAILED = 128;
    }
}

bitflags::bitflags! {
    /// The ISR status byte (virtio 1.x section 4.1.4.5); reading it clears it.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Isr: u8 {
        /// A queue was used (INTx only).
        const QUEUE = 1;
        /// The device configuration changed.
        const CONFIG = 2;
    }
}

/// Why the transport refused a device or an operation. Payloads carry the offending values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The function is not a virtio device (wrong vendor ID or a device ID outside
    /// 0x1000..=0x107F).
    NotVirtio {
        /// Vendor ID read.
        vendor_id: u16,
        /// Device ID read.
        device_id: u16,
    },
    /// A transitional device ID that section 4.1.2 does not assign to a device type.
    UnknownTransitionalDevice(u16),
    /// The status register says there is no capability list: a legacy-only device.
    NoCapabilityList,
    /// A capability pointer points into the standard header.
    CapabilityPointerInvalid {
        /// Configuration-space offset holding the pointer.
        at: u8,
        /// The pointer read (low two bits already masked).
        pointer: u8,
    },
    /// The capability list visits the same capability twice.
    CapabilityLoop {
        /// The capability reached a second time.
        at: u8,
    },
    /// A virtio capability's `cap_len` is shorter than its structure, or the structure runs
    /// past the end of configuration space.
    CapabilityTruncated {
        /// Configuration-space offset of the capability.
        at: u8,
        /// Its `cap_len`.
        cap_len: u8,
    },
    /// A capability names a reserved BAR number (not 0 to 5).
    BarOutOfRange {
        /// The capability's `cfg_type`.
        cfg_type: u8,
        /// The BAR number.
        bar: u8,
    },
    /// A capability names a BAR that is not mapped.
    BarNotMapped {
        /// The capability's `cfg_type`.
        cfg_type: u8,
        /// The BAR number.
        bar: u8,
    },
    /// A structure does not lie within its BAR.
    CapabilityOutsideBar {
        /// The capability's `cfg_type`.
        cfg_type: u8,
        /// Offset in the BAR.
        offset: u32,
        /// Length of the structure.
        length: u32,
        /// Length of the BAR as mapped.
        bar_len: u64,
    },
    /// A structure's offset is not aligned as its section requires.
    CapabilityMisaligned {
        /// The capability's `cfg_type`.
        cfg_type: u8,
        /// Offset in the BAR.
        offset: u32,
    },
    /// A structure is shorter than the driver needs.
    CapabilityTooSmall {
        /// The capability's `cfg_type`.
        cfg_type: u8,
        /// Its length.
        length: u32,
    },
    /// `notify_off_multiplier` is neither 0 nor an even power of two (section 4.1.4.4.1).
    NotifyMultiplierInvalid(u32),
    /// No usable capability of this `cfg_type` (a required structure, or the device
    /// configuration when it is accessed).
    MissingCapability(u8),
    /// `device_status` did not read 0 within [`RESET_POLL_LIMIT`] reads after a reset.
    ResetTimeout {
        /// The last status read.
        status: u8,
    },
    /// The device does not offer `VIRTIO_F_VERSION_1` (or the caller did not want it).
    Version1Missing {
        /// Everything the device offered.
        offered: Features,
    },
    /// The device cleared `FEATURES_OK`: it does not support the accepted subset.
    FeaturesRejected {
        /// The subset the driver accepted.
        accepted: Features,
    },
    /// The operation is not allowed in the current driver status (for example queue setup
    /// before `FEATURES_OK`, or anything after `FAILED`).
    InvalidState {
        /// The status bits the driver has set.
        driver_status: DeviceStatus,
    },
    /// The queue index is not below `num_queues`, or the device reports size 0 for it.
    QueueUnavailable(u16),
    /// The queue is already enabled; it cannot be configured again without a reset.
    QueueAlreadyEnabled(u16),
    /// The requested size is 0, or not a power of two for a split ring.
    QueueSizeInvalid {
        /// Queue index.
        queue: u16,
        /// Size requested.
        size: u16,
    },
    /// The requested size exceeds the device's maximum.
    QueueTooLarge {
        /// Queue index.
        queue: u16,
        /// Size requested.
        size: u16,
        /// The device's maximum.
        max: u16,
    },
    /// The vector is beyond the MSI-X table or above [`VIRTIO_MSI_MAX_VECTOR`].
    MsixVectorOutOfRange {
        /// Vector requested.
        vector: u16,
        /// MSI-X table size (entries), if the device has an MSI-X capability.
        table_size: Option<u16>,
    },
    /// The queue's vector register did not read back as written (the device refused the
    /// mapping; section 4.1.5.1.2).
    MsixVectorRefused {
        /// Queue index.
        queue: u16,
        /// The value written ([`VIRTIO_MSI_NO_VECTOR`] when unmapping).
        vector: u16,
    },
    /// `config_msix_vector` did not read back as written.
    ConfigMsixVectorRefused {
        /// The value written ([`VIRTIO_MSI_NO_VECTOR`] when unmapping).
        vector: u16,
    },
    /// `queue_notify_off * notify_off_multiplier + 2` exceeds the notification structure.
    NotifyOffsetOutOfRange {
        /// Queue index.
        queue: u16,
        /// The `queue_notify_off` read.
        notify_off: u16,
    },
    /// A device configuration access lies outside the device configuration structure.
    DeviceConfigOutOfRange {
        /// Offset in the device configuration.
        offset: u32,
        /// Bytes asked for (saturated to `u32::MAX`).
        len: u32,
    },
    /// A device configuration field access is not naturally aligned.
    DeviceConfigMisaligned {
        /// Offset in the device configuration.
        offset: u32,
    },
    /// `config_generation` kept changing for [`CONFIG_GENERATION_ATTEMPTS`] reads.
    ConfigGenerationUnstable,
    /// The device set `DEVICE_NEEDS_RESET`.
    DeviceNeedsReset,
}

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
    const fn at(self, at: u64) -> u64 {
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

/// Where to notify one queue: returned by [`PciTransport::setup_queue`], used by
/// [`PciTransport::notify`]. The offset was validated against the notification structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueNotifier {
    queue: u16,
    offset: u64,
}

impl QueueNotifier {
    /// The queue index (the 16-bit value written on notification).
    #[must_use]
    pub const fn queue(&self) -> u16 {
        self.queue
    }

    /// Offset of the queue's notify address in the notification BAR.
    #[must_use]
    pub const fn offset(&self) -> u64 {
        self.offset
    }
}

/// Bounds-checked access to the device-specific configuration, handed to the closure of
/// [`PciTransport::read_device_config_with`]. Each read uses the access width of the field
/// (section 4.1.3.1) and must be naturally aligned (64-bit fields: 4-aligned, read as two
/// 32-bit halves, low first).
#[derive(Debug)]
pub struct DeviceConfig<'a, R> {
    regs: &'a R,
    region: Region,
}

impl<R: RegisterIo> DeviceConfig<'_, R> {
    /// Length of the device configuration structure.
    #[must_use]
    pub const fn len(&self) -> u32 {
        self.region.length
    }

    /// Whether the structure is empty.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.region.length == 0
    }

    /// Checks `offset .. offset + width` against the structure and the field alignment, and
    /// returns the BAR offset.
    fn check(&self, offset: u32, width: u32, align: u32) -> Result<u64, TransportError> {
        if !offset.is_multiple_of(align) {
            return Err(TransportError::DeviceConfigMisaligned { offset });
        }
        if u64::from(offset) + u64::from(width) > u64::from(self.region.length) {
            return Err(TransportError::DeviceConfigOutOfRange { offset, len: width });
        }
        Ok(self.region.at(u64::from(offset)))
    }

    /// Reads an 8-bit field.
    ///
    /// # Errors
    /// [`TransportError::DeviceConfigOutOfRange`] outside the structure.
    pub fn read_u8(&self, offset: u32) -> Result<u8, TransportError> {
        let at = self.check(offset, 1, 1)?;
        Ok(self.regs.read8(self.region.bar, at))
    }

    /// Reads a 16-bit field.
    ///
    /// # Errors
    /// Out of range or not 2-aligned.
    pub fn read_u16(&self, offset: u32) -> Result<u16, TransportError> {
        let at = self.check(offset, 2, 2)?;
        Ok(self.regs.read16(self.region.bar, at))
    }

    /// Reads a 32-bit field.
    ///
    /// # Errors
    /// Out of range or not 4-aligned.
    pub fn read_u32(&self, offset: u32) -> Result<u32, TransportError> {
        let at = self.check(offset, 4, 4)?;
        Ok(self.regs.read32(self.region.bar, at))
    }

    /// Reads a 64-bit field as two 32-bit halves, low first. Not atomic: call it inside
    /// [`PciTransport::read_device_config_with`], whose generation check makes it consistent.
    ///
    /// # Errors
    /// Out of range or not 4-aligned.
    pub fn read_u64(&self, offset: u32) -> Result<u64, TransportError> {
        let at = self.check(offset, 8, 4)?;
        let low = self.regs.read32(self.region.bar, at);
        let high = self.regs.read32(self.region.bar, at + 4);
        Ok(u64::from(low) | (u64::from(high) << 32))
    }
}

/// A probed virtio 1.x PCI device: owns the register access and remembers the validated layout
/// and the driver's side of the status handshake.
///
/// Methods that select a queue or change status take `&mut self`; [`PciTransport::notify`],
/// [`PciTransport::read_isr`] and the device-configuration reads take `&self`, so they can run
/// from interrupt and I/O paths while the transport is shared.
#[derive(Debug)]
pub struct PciTransport<R: RegisterIo> {
    regs: R,
    device_type: u16,
    layout: PciLayout,
    /// The status bits the driver has set since the last reset. Status writes write this value,
    /// so the driver never clears a bit (section 2.1.1) nor echoes back a device-set bit.
    driver_status: DeviceStatus,
    offered: Features,
    negotiated: Features,
}

/// Features this transport cannot honour, removed from whatever the caller wants:
/// `NOTIFICATION_DATA` changes the notification format, `RING_RESET` needs per-queue reset support,
/// `SR_IOV` needs the SR-IOV extended capability (section 6.1: must not be negotiated without it).
const TRANSPORT_UNSUPPORTED: Features = Features::NOTIFICATION_DATA
    .union(Features::RING_RESET)
    .union(Features::SR_IOV);

impl<R: RegisterIo> PciTransport<R> {
    /// Identifies the device and walks its capabilities (sections 4.1.2 and 4.1.4).
    ///
    /// Touches no device register: the device is not reset or otherwise changed.
    ///
    /// # Errors
    /// Not a virtio device, or a missing or malformed capability (see [`parse_capabilities`]).
    pub fn probe(config: &impl PciConfig, regs: R) -> Result<Self, TransportError> {
        let vendor_id = config.read16(PCI_VENDOR_ID);
        let device_id = config.read16(PCI_DEVICE_ID);
        let device_type = device_type(vendor_id, device_id)?;
        let layout = parse_capabilities(config, |bar| regs.bar_len(bar))?;
        Ok(Self {
            regs,
            device_type,
            layout,
            driver_status: DeviceStatus::empty(),
            offered: Features::empty(),
            negotiated: Features::empty(),
        })
    }

    /// The virtio device type (8 for SCSI).
    #[must_use]
    pub const fn device_type(&self) -> u16 {
        self.device_type
    }

    /// The validated structure layout.
    #[must_use]
    pub const fn layout(&self) -> &PciLayout {
        &self.layout
    }

    /// The register access, e.g. for a test to inspect a fake device.
    #[must_use]
    pub const fn regs(&self) -> &R {
        &self.regs
    }

    /// Gives the register access back.
    #[must_use]
    pub fn into_regs(self) -> R {
        self.regs
    }

    /// The features the device offered in the last [`PciTransport::begin_init`].
    #[must_use]
    pub const fn offered_features(&self) -> Features {
        self.offered
    }

    /// The features accepted by the last successful [`PciTransport::begin_init`]; empty before.
    #[must_use]
    pub const fn negotiated_features(&self) -> Features {
        self.negotiated
    }

    /// The status bits the driver has set since the last reset.
    #[must_use]
    pub const fn driver_status(&self) -> DeviceStatus {
        self.driver_status
    }

    fn common_read8(&self, field: u64) -> u8 {
        self.regs
            .read8(self.layout.common.bar, self.layout.common.at(field))
    }

    fn common_read16(&self, field: u64) -> u16 {
        self.regs
            .read16(self.layout.common.bar, self.layout.common.at(field))
    }

    fn common_read32(&self, field: u64) -> u32 {
        self.regs
            .read32(self.layout.common.bar, self.layout.common.at(field))
    }

    fn common_write8(&self, field: u64, value: u8) {
        self.regs
            .write8(self.layout.common.bar, self.layout.common.at(field), value);
    }

    fn common_write16(&self, field: u64, value: u16) {
        self.regs
            .write16(self.layout.common.bar, self.layout.common.at(field), value);
    }

    fn common_write32(&self, field: u64, value: u32) {
        self.regs
            .write32(self.layout.common.bar, self.layout.common.at(field), value);
    }

    fn common_write64(&self, field: u64, value: u64) {
        // Section 4.1.3: 64-bit fields are two 32-bit fields, low part first.
        self.common_write32(field, value as u32);
        self.common_write32(field + 4, (value >> 32) as u32);
    }

    /// Reads `device_status`.
    #[must_use]
    pub fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.common_read8(VirtioPciCommonCfg::DEVICE_STATUS))
    }

    /// Whether the device set `DEVICE_NEEDS_RESET` (section 2.1.2).
    #[must_use]
    pub fn needs_reset(&self) -> bool {
        self.status().contains(DeviceStatus::DEVICE_NEEDS_RESET)
    }

    /// Adds `bits` to the driver's status and writes the whole driver status.
    fn set_status(&mut self, bits: DeviceStatus) {
        self.driver_status |= bits;
        self.common_write8(VirtioPciCommonCfg::DEVICE_STATUS, self.driver_status.bits());
    }

    /// Resets the device: writes 0 to `device_status` and waits for it to read 0 (section
    /// 4.1.4.3.2). Afterwards the device uses no queue memory and sends no interrupts, and all
    /// queue and vector setup is gone.
    ///
    /// # Errors
    /// [`TransportError::ResetTimeout`] if the status does not read 0 within
    /// [`RESET_POLL_LIMIT`] reads (a removed device reads all ones).
    pub fn reset(&mut self) -> Result<(), TransportError> {
        self.driver_status = DeviceStatus::empty();
        self.negotiated = Features::empty();
        self.common_write8(VirtioPciCommonCfg::DEVICE_STATUS, 0);
        let mut status = 0;
        for _ in 0..RESET_POLL_LIMIT {
            status = self.common_read8(VirtioPciCommonCfg::DEVICE_STATUS);
            if status == 0 {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(TransportError::ResetTimeout { status })
    }

    /// Reads the 64 offered feature bits through `device_feature_select` 0 and 1.
    fn read_device_features(&self) -> Features {
        self.common_write32(VirtioPciCommonCfg::DEVICE_FEATURE_SELECT, 0);
        let low = self.common_read32(VirtioPciCommonCfg::DEVICE_FEATURE);
        self.common_write32(VirtioPciCommonCfg::DEVICE_FEATURE_SELECT, 1);
        let high = self.common_read32(VirtioPciCommonCfg::DEVICE_FEATURE);
        Features::from_bits_retain(u64::from(low) | (u64::from(high) << 32))
    }

    fn write_driver_features(&self, accepted: Features) {
        let bits = accepted.bits();
        self.common_write32(VirtioPciCommonCfg::DRIVER_FEATURE_SELECT, 0);
        self.common_write32(VirtioPciCommonCfg::DRIVER_FEATURE, bits as u32);
        self.common_write32(VirtioPciCommonCfg::DRIVER_FEATURE_SELECT, 1);
        self.common_write32(VirtioPciCommonCfg::DRIVER_FEATURE, (bits >> 32) as u32);
    }

    /// Steps 1 to 6 of device initialization (section 3.1.1): reset, `ACKNOWLEDGE`, `DRIVER`, read
    /// the offered features, accept `offered ∩ wanted` (see [`negotiate`]), `FEATURES_OK`, and
    /// check that the device kept `FEATURES_OK`. Returns the accepted features.
    ///
    /// Features the transport cannot honour (`NOTIFICATION_DATA`, `RING_RESET`, `SR_IOV`) are never
    /// accepted, whatever `wanted` says.
    ///
    /// Next: [`PciTransport::setup_queue`] for each queue, device configuration, then
    /// [`PciTransport::driver_ok`].
    ///
    /// # Errors
    /// [`TransportError::ResetTimeout`]; [`TransportError::Version1Missing`] or
    /// [`TransportError::FeaturesRejected`], after setting `FAILED`.
    pub fn begin_init(&mut self, wanted: Features) -> Result<Features, TransportError> {
        self.reset()?;
        self.set_status(DeviceStatus::ACKNOWLEDGE);
        self.set_status(DeviceStatus::DRIVER);
        let offered = self.read_device_features();
        self.offered = offered;
        let accepted = match negotiate(offered, wanted - TRANSPORT_UNSUPPORTED) {
            Ok(accepted) => accepted,
            Err(FeatureError::Version1Missing { offered }) => {
                self.fail();
                return Err(TransportError::Version1Missing { offered });
            }
        };
        self.write_driver_features(accepted);
        self.set_status(DeviceStatus::FEATURES_OK);
        if !self.status().contains(DeviceStatus::FEATURES_OK) {
            self.fail();
            return Err(TransportError::FeaturesRejected { accepted });
        }
        self.negotiated = accepted;
        Ok(accepted)
    }

    /// Checks that feature negotiation completed and the driver has not failed or gone live.
    fn require_configuring(&self) -> Result<(), TransportError> {
        let s = self.driver_status;
        if s.contains(DeviceStatus::FEATURES_OK) && !s.contains(DeviceStatus::FAILED) {
            Ok(())
        } else {
            Err(TransportError::InvalidState { driver_status: s })
        }
    }

    /// Step 8 of device initialization: sets `DRIVER_OK`; the device is live.
    ///
    /// # Errors
    /// [`TransportError::InvalidState`] before a successful [`PciTransport::begin_init`] or after
    /// [`PciTransport::fail`]; [`TransportError::DeviceNeedsReset`] if the device reports it
    /// right after.
    pub fn driver_ok(&mut self) -> Result<(), TransportError> {
        self.require_configuring()?;
        // ORDERING: the ring memory and device configuration writes made during setup must be
        // visible to the device before it goes live and may start reading the rings (section
        // 3.1.1 step 8). Pairs with the device's read of DRIVER_OK. The `RegisterIo` backend
        // orders this MMIO write after earlier memory writes on weakly ordered platforms.
        fence(Ordering::SeqCst);
        self.set_status(DeviceStatus::DRIVER_OK);
        if self.needs_reset() {
            return Err(TransportError::DeviceNeedsReset);
        }
        Ok(())
    }

    /// Sets `FAILED`: the driver gave up on the device (section 3.1.1). Only a reset recovers.
    pub fn fail(&mut self) {
        self.set_status(DeviceStatus::FAILED);
    }

    /// `num_queues`: how many queues the device has.
    #[must_use]
    pub fn num_queues(&self) -> u16 {
        self.common_read16(VirtioPciCommonCfg::NUM_QUEUES)
    }

    /// Selects queue `index` after checking it exists.
    fn select_queue(&mut self, index: u16) -> Result<(), TransportError> {
        if index >= self.num_queues() {
            return Err(TransportError::QueueUnavailable(index));
        }
        self.common_write16(VirtioPciCommonCfg::QUEUE_SELECT, index);
        Ok(())
    }

    /// The maximum size of queue `index`, as the device reports it before the queue is set up
    /// (after setup, `queue_size` reads back the size the driver chose).
    ///
    /// # Errors
    /// [`TransportError::QueueUnavailable`] if the index is not below `num_queues` or the device
    /// reports size 0.
    pub fn queue_max_size(&mut self, index: u16) -> Result<u16, TransportError> {
        self.select_queue(index)?;
        match self.common_read16(VirtioPciCommonCfg::QUEUE_SIZE) {
            0 => Err(TransportError::QueueUnavailable(index)),
            max => Ok(max),
        }
    }

    /// Checks a vector against the MSI-X table and the architectural maximum.
    fn check_vector(&self, vector: u16) -> Result<(), TransportError> {
        let table_size = self.layout.msix_table_size;
        let in_table = table_size.is_none_or(|size| vector < size);
        if vector > VIRTIO_MSI_MAX_VECTOR || !in_table {
            return Err(TransportError::MsixVectorOutOfRange { vector, table_size });
        }
        Ok(())
    }

    /// Configures and enables queue `index` (section 4.1.5.1.3): size, ring addresses, MSI-X
    /// vector (`None` maps none: use it with `INTx` or for a polled queue), then `queue_enable`.
    /// Call between [`PciTransport::begin_init`] and [`PciTransport::driver_ok`].
    ///
    /// The ring memory must be zeroed and initialised before this call; enabling the queue
    /// publishes it to the device.
    ///
    /// # Errors
    /// [`TransportError::InvalidState`] outside that window; [`TransportError::QueueUnavailable`],
    /// [`TransportError::QueueAlreadyEnabled`], [`TransportError::QueueSizeInvalid`] (zero, or
    /// not a power of two without `RING_PACKED`), [`TransportError::QueueTooLarge`],
    /// [`TransportError::MsixVectorOutOfRange`], [`TransportError::NotifyOffsetOutOfRange`] and
    /// [`TransportError::MsixVectorRefused`]. After an error the queue is not enabled; the caller
    /// resets the device or tries again (e.g. with fewer vectors).
    pub fn setup_queue(
        &mut self,
        index: u16,
        size: u16,
        addresses: QueueAddresses,
        msix_vector: Option<u16>,
    ) -> Result<QueueNotifier, TransportError> {
        self.require_configuring()?;
        if self.driver_status.contains(DeviceStatus::DRIVER_OK) {
            return Err(TransportError::InvalidState {
                driver_status: self.driver_status,
            });
        }
        let max = self.queue_max_size(index)?;
        let packed = self.negotiated.contains(Features::RING_PACKED);
        if size == 0 || (!packed && !size.is_power_of_two()) {
            return Err(TransportError::QueueSizeInvalid { queue: index, size });
        }
        if size > max {
            return Err(TransportError::QueueTooLarge {
                queue: index,
                size,
                max,
            });
        }
        if self.common_read16(VirtioPciCommonCfg::QUEUE_ENABLE) != 0 {
            return Err(TransportError::QueueAlreadyEnabled(index));
        }
        if let Some(vector) = msix_vector {
            self.check_vector(vector)?;
        }
        let notifier = self.notifier_for(index)?;

        self.common_write16(VirtioPciCommonCfg::QUEUE_SIZE, size);
        self.common_write64(VirtioPciCommonCfg::QUEUE_DESC, addresses.descriptors);
        self.common_write64(VirtioPciCommonCfg::QUEUE_DRIVER, addresses.driver);
        self.common_write64(VirtioPciCommonCfg::QUEUE_DEVICE, addresses.device);

        // Section 4.1.5.1.2: the driver must read the vector back; NO_VECTOR means refused.
        let vector = msix_vector.unwrap_or(VIRTIO_MSI_NO_VECTOR);
        self.common_write16(VirtioPciCommonCfg::QUEUE_MSIX_VECTOR, vector);
        if self.common_read16(VirtioPciCommonCfg::QUEUE_MSIX_VECTOR) != vector {
            return Err(TransportError::MsixVectorRefused {
                queue: index,
                vector,
            });
        }

        // ORDERING: the zeroed and initialised ring memory must be visible to the device before
        // the queue is enabled (section 4.1.4.3.2: configure everything before queue_enable).
        // Pairs with the device's first ring read after it sees queue_enable = 1.
        fence(Ordering::SeqCst);
        self.common_write16(VirtioPciCommonCfg::QUEUE_ENABLE, 1);
        Ok(notifier)
    }

    /// Computes and validates the notify address of the selected queue `index` (section
    /// 4.1.4.4: `cap.offset + queue_notify_off * notify_off_multiplier`, with room for the
    /// 16-bit notification inside the structure).
    fn notifier_for(&self, index: u16) -> Result<QueueNotifier, TransportError> {
        let notify_off = self.common_read16(VirtioPciCommonCfg::QUEUE_NOTIFY_OFF);
        // A u16 times a u32 fits in a u64; adding 2 cannot overflow either.
        let relative = u64::from(notify_off) * u64::from(self.layout.notify_off_multiplier);
        if relative + 2 > u64::from(self.layout.notify.length) {
            return Err(TransportError::NotifyOffsetOutOfRange {
                queue: index,
                notify_off,
            });
        }
        Ok(QueueNotifier {
            queue: index,
            offset: self.layout.notify.at(relative),
        })
    }

    /// Maps configuration change notifications to MSI-X `vector` (`None` unmaps them) and checks
    /// the read-back (section 4.1.5.1.2).
    ///
    /// # Errors
    /// [`TransportError::MsixVectorOutOfRange`] or [`TransportError::ConfigMsixVectorRefused`].
    pub fn set_config_msix_vector(&mut self, vector: Option<u16>) -> Result<(), TransportError> {
        if let Some(vector) = vector {
            self.check_vector(vector)?;
        }
        let vector = vector.unwrap_or(VIRTIO_MSI_NO_VECTOR);
        self.common_write16(VirtioPciCommonCfg::CONFIG_MSIX_VECTOR, vector);
        if self.common_read16(VirtioPciCommonCfg::CONFIG_MSIX_VECTOR) != vector {
            return Err(TransportError::ConfigMsixVectorRefused { vector });
        }
        Ok(())
    }

    /// Sends an available buffer notification for a queue (section 4.1.5.2): writes the queue
    /// index, 16 bits, at its notify address. Call after [`crate::queue::Virtqueue::kick_prepare`]
    /// said so, outside the queue lock.
    pub fn notify(&self, notifier: &QueueNotifier) {
        // ORDERING: the ring updates (descriptors, then the available index published with
        // release by the queue) must be visible before the device reacts to the notification
        // (section 2.7.13 step 4 / 2.8.21: a suitable barrier before notifying). Pairs with the
        // device's read of the available index after it receives the notification. Ordering the
        // MMIO store itself after memory writes is the `RegisterIo` backend's duty.
        fence(Ordering::SeqCst);
        self.regs
            .write16(self.layout.notify.bar, notifier.offset, notifier.queue);
    }

    /// Reads (and thereby clears) the ISR status (section 4.1.4.5). Reserved bits are dropped.
    #[must_use]
    pub fn read_isr(&self) -> Isr {
        Isr::from_bits_truncate(
            self.regs
                .read8(self.layout.isr.bar, self.layout.isr.offset.into()),
        )
    }

    /// Reads `config_generation`.
    #[must_use]
    pub fn config_generation(&self) -> u8 {
        self.common_read8(VirtioPciCommonCfg::CONFIG_GENERATION)
    }

    fn device_config(&self) -> Result<DeviceConfig<'_, R>, TransportError> {
        let region = self
            .layout
            .device
            .ok_or(TransportError::MissingCapability(VIRTIO_PCI_CAP_DEVICE_CFG))?;
        Ok(DeviceConfig {
            regs: &self.regs,
            region,
        })
    }

    /// Reads device configuration fields consistently: runs `read` until `config_generation`
    /// is the same before and after (section 2.5.1), at most [`CONFIG_GENERATION_ATTEMPTS`]
    /// times. `read` may run several times, so it should only read.
    ///
    /// # Errors
    /// [`TransportError::MissingCapability`] without a device configuration structure,
    /// [`TransportError::ConfigGenerationUnstable`], or the first error `read` returns.
    pub fn read_device_config_with<T>(
        &self,
        mut read: impl FnMut(&DeviceConfig<'_, R>) -> Result<T, TransportError>,
    ) -> Result<T, TransportError> {
        let config = self.device_config()?;
        for _ in 0..CONFIG_GENERATION_ATTEMPTS {
            let before = self.config_generation();
            let value = read(&config)?;
            if self.config_generation() == before {
                return Ok(value);
            }
        }
        Err(TransportError::ConfigGenerationUnstable)
    }

    /// Reads `out.len()` bytes of device configuration at `offset`, consistently (see
    /// [`PciTransport::read_device_config_with`]). Each naturally aligned 4-byte piece is read
    /// with a 32-bit access, then 16-bit, then 8-bit: right for a range of 32-bit fields or of
    /// fields of one width; read mixed narrower fields with `read_device_config_with`.
    ///
    /// # Errors
    /// [`TransportError::DeviceConfigOutOfRange`], [`TransportError::MissingCapability`] or
    /// [`TransportError::ConfigGenerationUnstable`].
    pub fn read_device_config(&self, offset: u32, out: &mut [u8]) -> Result<(), TransportError> {
        let length = self.device_config()?.len();
        let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
        if u64::from(offset) + u64::from(len) > u64::from(length) {
            return Err(TransportError::DeviceConfigOutOfRange { offset, len });
        }
        self.read_device_config_with(|config| {
            let mut position = 0usize;
            while position < out.len() {
                // In range: position < out.len() <= u32::MAX, checked above.
                let at = offset + position as u32;
                let remaining = out.len() - position;
                let bytes: ([u8; 4], usize) = if at.is_multiple_of(4) && remaining >= 4 {
                    (config.read_u32(at)?.to_le_bytes(), 4)
                } else if at.is_multiple_of(2) && remaining >= 2 {
                    let [a, b] = config.read_u16(at)?.to_le_bytes();
                    ([a, b, 0, 0], 2)
                } else {
                    ([config.read_u8(at)?, 0, 0, 0], 1)
                };
                let (value, width) = bytes;
                for (dst, src) in out
                    .iter_mut()
                    .skip(position)
                    .zip(value.into_iter().take(width))
                {
                    *dst = src;
                }
                position += width;
            }
            Ok(())
        })
    }

    fn device_config_write_offset(
        &self,
        offset: u32,
        width: u32,
    ) -> Result<(u8, u64), TransportError> {
        self.require_configuring()?;
        let config = self.device_config()?;
        let at = config.check(offset, width, width)?;
        Ok((config.region.bar, at))
    }

    /// Writes a 32-bit device configuration field (for virtio-scsi: `sense_size`, `cdb_size`).
    /// Allowed only after `FEATURES_OK` (section 3.1.1 step 4 forbids writes during negotiation).
    ///
    /// # Errors
    /// [`TransportError::InvalidState`], out of range, misaligned, or no device configuration.
    pub fn write_device_config_u32(
        &mut self,
        offset: u32,
        value: u32,
    ) -> Result<(), TransportError> {
        let (bar, at) = self.device_config_write_offset(offset, 4)?;
        self.regs.write32(bar, at, value);
        Ok(())
    }

    /// Writes a 16-bit device configuration field; as [`PciTransport::write_device_config_u32`].
    ///
    /// # Errors
    /// As [`PciTransport::write_device_config_u32`].
    pub fn write_device_config_u16(
        &mut self,
        offset: u32,
        value: u16,
    ) -> Result<(), TransportError> {
        let (bar, at) = self.device_config_write_offset(offset, 2)?;
        self.regs.write16(bar, at, value);
        Ok(())
    }

    /// Writes an 8-bit device configuration field; as [`PciTransport::write_device_config_u32`].
    ///
    /// # Errors
    /// As [`PciTransport::write_device_config_u32`].
    pub fn write_device_config_u8(&mut self, offset: u32, value: u8) -> Result<(), TransportError> {
        let (bar, at) = self.device_config_write_offset(offset, 1)?;
        self.regs.write8(bar, at, value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::fake::pci::{FakeCapability, FakeRegions, FakeVirtioPci, NotifyWrite};
    use crate::features::SCSI_DRIVER_FEATURES;

    type Transport = PciTransport<FakeVirtioPci>;

    const COMMON: u8 = VIRTIO_PCI_CAP_COMMON_CFG;
    const NOTIFY: u8 = VIRTIO_PCI_CAP_NOTIFY_CFG;
    const ISR: u8 = VIRTIO_PCI_CAP_ISR_CFG;
    const DEVICE: u8 = VIRTIO_PCI_CAP_DEVICE_CFG;

    /// QEMU's virtio-scsi-pci with 4 request queues (6 queues, 7 MSI-X vectors).
    fn qemu_scsi() -> FakeVirtioPci {
        FakeVirtioPci::scsi(4).build()
    }

    /// [`qemu_scsi`] without the field layout, for the tests of the transport's byte-range
    /// reads, which do not know the fields (the natural-width rule is the caller's, checked
    /// where the virtio-scsi configuration is read: `scsi::config`).
    fn qemu_scsi_any_width() -> FakeVirtioPci {
        FakeVirtioPci::scsi(4).device_config_fields(&[]).build()
    }

    fn probe(device: &FakeVirtioPci) -> Result<Transport, TransportError> {
        PciTransport::probe(device, device.clone())
    }

    /// QEMU's capability list with one entry replaced (list order: MSI-X, `PCI_CFG`, notify,
    /// device, ISR, common).
    fn qemu_caps_with(index: usize, cap: Option<FakeCapability>) -> Vec<FakeCapability> {
        let mut caps = FakeRegions::qemu().capabilities(Some(7));
        match cap {
            Some(cap) => caps[index] = cap,
            None => {
                caps.remove(index);
            }
        }
        caps
    }

    fn probe_caps(caps: Vec<FakeCapability>) -> Result<Transport, TransportError> {
        probe(&FakeVirtioPci::scsi(4).capabilities(caps).build())
    }

    fn addresses(queue: u64) -> QueueAddresses {
        QueueAddresses {
            descriptors: 0x1_2345_0000 + queue * 0x1_0000,
            driver: 0x2_3456_0000 + queue * 0x1_0000,
            device: 0x3_4567_0000 + queue * 0x1_0000,
        }
    }

    fn initialised(device: &FakeVirtioPci, wanted: Features) -> Transport {
        let mut transport = probe(device).unwrap();
        transport.begin_init(wanted).unwrap();
        transport
    }

    #[test]
    fn walk_finds_the_qemu_layout_without_touching_registers() {
        let device = qemu_scsi();
        assert_eq!(
            device.capability_offsets(),
            [0x98, 0x84, 0x70, 0x60, 0x50, 0x40]
        );
        let transport = probe(&device).unwrap();
        assert_eq!(transport.device_type(), VIRTIO_DEVICE_TYPE_SCSI);
        let bar4 = |offset| Region {
            bar: 4,
            offset,
            length: 0x1000,
        };
        assert_eq!(
            *transport.layout(),
            PciLayout {
                common: bar4(0),
                notify: bar4(0x3000),
                notify_off_multiplier: 4,
                isr: bar4(0x1000),
                device: Some(bar4(0x2000)),
                msix_table_size: Some(7),
            }
        );
        assert!(device.status_writes().is_empty());
        assert!(device.violations().is_empty());
    }

    #[test]
    fn device_ids_map_to_device_types() {
        assert_eq!(device_type(0x1AF4, 0x1048), Ok(8));
        assert_eq!(device_type(0x1AF4, 0x1040), Ok(0));
        assert_eq!(device_type(0x1AF4, 0x107F), Ok(0x3F));
        assert_eq!(device_type(0x1AF4, 0x1004), Ok(8));
        assert_eq!(device_type(0x1AF4, 0x1000), Ok(1));
        assert_eq!(device_type(0x1AF4, 0x1001), Ok(2));
        assert_eq!(device_type(0x1AF4, 0x1009), Ok(9));
        assert_eq!(
            device_type(0x1AF4, 0x1006),
            Err(TransportError::UnknownTransitionalDevice(0x1006))
        );
        assert_eq!(
            device_type(0x1AF4, 0x1080),
            Err(TransportError::NotVirtio {
                vendor_id: 0x1AF4,
                device_id: 0x1080
            })
        );
        assert_eq!(
            device_type(0x8086, 0x1048),
            Err(TransportError::NotVirtio {
                vendor_id: 0x8086,
                device_id: 0x1048
            })
        );
        let intel = FakeVirtioPci::scsi(1).vendor_id(0x8086).build();
        assert_eq!(
            probe(&intel).err(),
            Some(TransportError::NotVirtio {
                vendor_id: 0x8086,
                device_id: 0x1048
            })
        );
        let transitional = FakeVirtioPci::scsi(1).device_id(0x1004).build();
        assert_eq!(probe(&transitional).unwrap().device_type(), 8);
    }

    #[test]
    fn a_function_without_a_capability_list_is_refused() {
        let device = qemu_scsi();
        device.poke_config(PCI_STATUS as u8, &[0, 0]);
        assert_eq!(probe(&device).err(), Some(TransportError::NoCapabilityList));
    }

    #[test]
    fn reserved_and_unmapped_bars_are_refused() {
        let bad_bar = FakeCapability::virtio(COMMON, 7, 0, 0x1000);
        assert_eq!(
            probe_caps(qemu_caps_with(5, Some(bad_bar))).err(),
            Some(TransportError::BarOutOfRange {
                cfg_type: COMMON,
                bar: 7
            })
        );
        let unmapped = FakeCapability::virtio(ISR, 2, 0, 1);
        assert_eq!(
            probe_caps(qemu_caps_with(4, Some(unmapped))).err(),
            Some(TransportError::BarNotMapped {
                cfg_type: ISR,
                bar: 2
            })
        );
    }

    #[test]
    fn structures_outside_their_bar_are_refused() {
        let past_end = FakeCapability::virtio(COMMON, 4, 0x3800, 0x1000);
        assert_eq!(
            probe_caps(qemu_caps_with(5, Some(past_end))).err(),
            Some(TransportError::CapabilityOutsideBar {
                cfg_type: COMMON,
                offset: 0x3800,
                length: 0x1000,
                bar_len: 0x4000
            })
        );
        // Offset and length that would overflow 32 bits must not wrap into the BAR.
        let wrapping = FakeCapability::virtio(DEVICE, 4, 0xFFFF_F000, 0x2000);
        assert!(matches!(
            probe_caps(qemu_caps_with(3, Some(wrapping))).err(),
            Some(TransportError::CapabilityOutsideBar {
                cfg_type: DEVICE,
                ..
            })
        ));
        // Ending exactly at the end of the BAR is fine.
        let at_end = FakeCapability::virtio(DEVICE, 4, 0x3FF0, 0x10);
        assert_eq!(
            probe_caps(qemu_caps_with(3, Some(at_end)))
                .unwrap()
                .layout()
                .device,
            Some(Region {
                bar: 4,
                offset: 0x3FF0,
                length: 0x10
            })
        );
    }

    #[test]
    fn missing_structures_are_reported_by_type() {
        assert_eq!(
            probe_caps(qemu_caps_with(5, None)).err(),
            Some(TransportError::MissingCapability(COMMON))
        );
        assert_eq!(
            probe_caps(qemu_caps_with(2, None)).err(),
            Some(TransportError::MissingCapability(NOTIFY))
        );
        assert_eq!(
            probe_caps(qemu_caps_with(4, None)).err(),
            Some(TransportError::MissingCapability(ISR))
        );
        // The device configuration is optional for the walk, but reading it then fails.
        let transport = probe_caps(qemu_caps_with(3, None)).unwrap();
        assert_eq!(transport.layout().device, None);
        let mut out = [0u8; 4];
        assert_eq!(
            transport.read_device_config(0, &mut out),
            Err(TransportError::MissingCapability(DEVICE))
        );
    }

    #[test]
    fn cycles_in_the_capability_list_are_detected() {
        let device = qemu_scsi();
        // The last capability (common, at 0x40) points back to the first (MSI-X, at 0x98).
        device.poke_config(0x41, &[0x98]);
        assert_eq!(
            probe(&device).err(),
            Some(TransportError::CapabilityLoop { at: 0x98 })
        );
        // A capability pointing at itself.
        let device = qemu_scsi();
        device.poke_config(0x99, &[0x98]);
        assert_eq!(
            probe(&device).err(),
            Some(TransportError::CapabilityLoop { at: 0x98 })
        );
    }

    #[test]
    fn pointers_into_the_header_are_refused() {
        let device = qemu_scsi();
        device.poke_config(PCI_CAPABILITY_LIST as u8, &[0x20]);
        assert_eq!(
            probe(&device).err(),
            Some(TransportError::CapabilityPointerInvalid {
                at: 0x34,
                pointer: 0x20
            })
        );
        let device = qemu_scsi();
        device.poke_config(0x85, &[0x3C]); // PCI_CFG's next pointer
        assert_eq!(
            probe(&device).err(),
            Some(TransportError::CapabilityPointerInvalid {
                at: 0x85,
                pointer: 0x3C
            })
        );
    }

    #[test]
    fn reserved_pointer_bits_are_masked_as_pci_requires() {
        // PCI 3.0 section 6.7: software masks the low two bits of capability pointers. A
        // pointer with them set reaches the same dword-aligned capability.
        let device = qemu_scsi();
        device.poke_config(PCI_CAPABILITY_LIST as u8, &[0x98 | 3]);
        device.poke_config(0x71, &[0x60 | 1]);
        let expected = *probe(&qemu_scsi()).unwrap().layout();
        assert_eq!(*probe(&device).unwrap().layout(), expected);
    }

    #[test]
    fn notify_multiplier_must_be_zero_or_an_even_power_of_two() {
        for (multiplier, ok) in [
            (0, true),
            (1, false),
            (2, true),
            (3, false),
            (4, true),
            (6, false),
            (4096, true),
        ] {
            let cap = FakeCapability::notify(4, 0x3000, 0x1000, multiplier);
            let result = probe_caps(qemu_caps_with(2, Some(cap)));
            if ok {
                assert_eq!(result.unwrap().layout().notify_off_multiplier, multiplier);
            } else {
                assert_eq!(
                    result.err(),
                    Some(TransportError::NotifyMultiplierInvalid(multiplier))
                );
            }
        }
    }

    #[test]
    fn misaligned_and_short_structures_are_refused() {
        let cases = [
            (
                5,
                FakeCapability::virtio(COMMON, 4, 2, 0x1000),
                TransportError::CapabilityMisaligned {
                    cfg_type: COMMON,
                    offset: 2,
                },
            ),
            (
                2,
                FakeCapability::notify(4, 0x3001, 0x100, 4),
                TransportError::CapabilityMisaligned {
                    cfg_type: NOTIFY,
                    offset: 0x3001,
                },
            ),
            (
                3,
                FakeCapability::virtio(DEVICE, 4, 0x2002, 0x10),
                TransportError::CapabilityMisaligned {
                    cfg_type: DEVICE,
                    offset: 0x2002,
                },
            ),
            (
                5,
                FakeCapability::virtio(COMMON, 4, 0, 52),
                TransportError::CapabilityTooSmall {
                    cfg_type: COMMON,
                    length: 52,
                },
            ),
            (
                2,
                FakeCapability::notify(4, 0x3000, 1, 4),
                TransportError::CapabilityTooSmall {
                    cfg_type: NOTIFY,
                    length: 1,
                },
            ),
            (
                4,
                FakeCapability::virtio(ISR, 4, 0x1000, 0),
                TransportError::CapabilityTooSmall {
                    cfg_type: ISR,
                    length: 0,
                },
            ),
        ];
        for (index, cap, error) in cases {
            assert_eq!(
                probe_caps(qemu_caps_with(index, Some(cap))).err(),
                Some(error)
            );
        }
        // The ISR byte has no alignment requirement; 56 bytes of common configuration suffice.
        let odd_isr = FakeCapability::virtio(ISR, 4, 0x1001, 1);
        assert!(probe_caps(qemu_caps_with(4, Some(odd_isr))).is_ok());
        let short_common = FakeCapability::virtio(COMMON, 4, 0, 56);
        assert!(probe_caps(qemu_caps_with(5, Some(short_common))).is_ok());
    }

    #[test]
    fn truncated_capabilities_are_refused() {
        let short = FakeCapability::virtio(COMMON, 4, 0, 0x1000).with_cap_len(12);
        assert_eq!(
            probe_caps(qemu_caps_with(5, Some(short))).err(),
            Some(TransportError::CapabilityTruncated {
                at: 0x40,
                cap_len: 12
            })
        );
        // A notify capability must include notify_off_multiplier.
        let short_notify = FakeCapability::notify(4, 0x3000, 0x1000, 4).with_cap_len(16);
        assert_eq!(
            probe_caps(qemu_caps_with(2, Some(short_notify))).err(),
            Some(TransportError::CapabilityTruncated {
                at: 0x70,
                cap_len: 16
            })
        );
        // A capability at the very end of configuration space cannot hold a structure.
        let device = qemu_scsi();
        device.poke_config(0xFC, &[PCI_CAP_ID_VNDR, 0, 16, COMMON]);
        device.poke_config(PCI_CAPABILITY_LIST as u8, &[0xFC]);
        assert_eq!(
            probe(&device).err(),
            Some(TransportError::CapabilityTruncated {
                at: 0xFC,
                cap_len: 16
            })
        );
        // A longer cap_len than the structure is accepted (section 4.1.4.1).
        let long = FakeCapability::virtio(COMMON, 4, 0, 0x1000).with_cap_len(24);
        assert!(probe_caps(qemu_caps_with(5, Some(long))).is_ok());
    }

    #[test]
    fn later_instances_are_fallbacks_and_unknown_capabilities_are_ignored() {
        // First notify capability in an unmapped I/O BAR, the second in BAR 4 (the spec's own
        // example); a reserved cfg_type and a foreign capability in between.
        let mut caps = FakeRegions::qemu().capabilities(Some(7));
        caps.insert(2, FakeCapability::notify(2, 0, 0x100, 0));
        caps.insert(3, FakeCapability::virtio(9, 4, 0, 4).with_id(3));
        caps.insert(
            3,
            FakeCapability {
                cap_id: 0x05,
                body: vec![0; 10],
            },
        );
        let transport = probe_caps(caps).unwrap();
        assert_eq!(
            transport.layout().notify,
            Region {
                bar: 4,
                offset: 0x3000,
                length: 0x1000
            }
        );
        assert_eq!(transport.layout().notify_off_multiplier, 4);
        // When two instances are both usable, the first wins.
        let mut caps = FakeRegions::qemu().capabilities(Some(7));
        caps.insert(2, FakeCapability::notify(4, 0x3800, 0x800, 0));
        let transport = probe_caps(caps).unwrap();
        assert_eq!(transport.layout().notify.offset, 0x3800);
        assert_eq!(transport.layout().notify_off_multiplier, 0);
    }

    #[test]
    fn handshake_writes_status_in_spec_order() {
        let device = qemu_scsi();
        let mut transport = probe(&device).unwrap();
        let accepted = transport.begin_init(SCSI_DRIVER_FEATURES).unwrap();
        let expected = Features::VERSION_1
            | Features::INDIRECT_DESC
            | Features::EVENT_IDX
            | Features::RING_PACKED
            | Features::SCSI_HOTPLUG
            | Features::SCSI_CHANGE;
        assert_eq!(accepted, expected);
        assert_eq!(transport.negotiated_features(), expected);
        assert_eq!(device.driver_features(), expected);
        // Reset, ACKNOWLEDGE, +DRIVER, +FEATURES_OK.
        assert_eq!(device.status_writes(), [0, 1, 3, 11]);
        for queue in 0..transport.num_queues() {
            transport
                .setup_queue(queue, 256, addresses(queue.into()), Some(queue))
                .unwrap();
        }
        transport.set_config_msix_vector(Some(6)).unwrap();
        transport.driver_ok().unwrap();
        assert_eq!(device.status_writes(), [0, 1, 3, 11, 15]);
        assert_eq!(transport.status(), DeviceStatus::from_bits_retain(15));
        assert!(device.violations().is_empty(), "{:?}", device.violations());
    }

    #[test]
    fn refused_features_ok_sets_failed() {
        let device = qemu_scsi();
        device.set_refuse_features_ok(true);
        let mut transport = probe(&device).unwrap();
        let error = transport.begin_init(SCSI_DRIVER_FEATURES).unwrap_err();
        assert!(matches!(error, TransportError::FeaturesRejected { .. }));
        assert_eq!(device.status_writes(), [0, 1, 3, 11, 0x8B]);
        assert!(device.status().contains(DeviceStatus::FAILED));
        assert_eq!(transport.negotiated_features(), Features::empty());
        assert!(matches!(
            transport.driver_ok(),
            Err(TransportError::InvalidState { .. })
        ));
        // A device that insists on a feature the caller turned off refuses too.
        let device = FakeVirtioPci::scsi(1)
            .required_features(Features::VERSION_1 | Features::RING_PACKED)
            .build();
        let mut transport = probe(&device).unwrap();
        let wanted = SCSI_DRIVER_FEATURES - Features::RING_PACKED;
        let error = transport.begin_init(wanted).unwrap_err();
        assert_eq!(
            error,
            TransportError::FeaturesRejected {
                accepted: Features::VERSION_1
                    | Features::INDIRECT_DESC
                    | Features::EVENT_IDX
                    | Features::SCSI_HOTPLUG
                    | Features::SCSI_CHANGE
            }
        );
        // A reset clears FAILED and a new negotiation succeeds.
        assert!(transport.begin_init(SCSI_DRIVER_FEATURES).is_ok());
        assert!(device.violations().is_empty(), "{:?}", device.violations());
    }

    #[test]
    fn a_device_without_version_1_is_refused() {
        let offered = Features::INDIRECT_DESC | Features::EVENT_IDX | Features::SCSI_HOTPLUG;
        let device = FakeVirtioPci::scsi(1)
            .device_features(offered)
            .required_features(Features::empty())
            .build();
        let mut transport = probe(&device).unwrap();
        assert_eq!(
            transport.begin_init(SCSI_DRIVER_FEATURES),
            Err(TransportError::Version1Missing { offered })
        );
        // FAILED is set and FEATURES_OK never written.
        assert_eq!(device.status_writes(), [0, 1, 3, 3 | 128]);
        assert_eq!(device.driver_features(), Features::empty());
    }

    #[test]
    fn features_the_transport_cannot_honour_are_never_accepted() {
        let offered = Features::VERSION_1
            | Features::NOTIFICATION_DATA
            | Features::RING_RESET
            | Features::SR_IOV
            | Features::IN_ORDER;
        let device = FakeVirtioPci::scsi(1).device_features(offered).build();
        let mut transport = probe(&device).unwrap();
        let accepted = transport.begin_init(Features::all()).unwrap();
        assert_eq!(accepted, Features::VERSION_1 | Features::IN_ORDER);
        assert_eq!(transport.offered_features(), offered);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "polls a stuck device RESET_POLL_LIMIT (100,000) times: run natively"
    )]
    fn reset_waits_for_status_zero_with_a_bound() {
        let device = qemu_scsi();
        let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
        device.set_reset_delay(50);
        transport.reset().unwrap();
        assert_eq!(transport.driver_status(), DeviceStatus::empty());
        assert_eq!(transport.negotiated_features(), Features::empty());
        // A device whose status never returns to 0 (or a removed one reading all ones).
        transport.begin_init(SCSI_DRIVER_FEATURES).unwrap();
        device.set_reset_delay(u32::MAX);
        assert_eq!(
            transport.reset(),
            Err(TransportError::ResetTimeout { status: 11 })
        );
        // The device is still stuck: the next initialization fails the same way.
        assert_eq!(
            transport.begin_init(SCSI_DRIVER_FEATURES),
            Err(TransportError::ResetTimeout { status: 11 })
        );
        assert_eq!(device.status_writes(), [0, 1, 3, 11, 0, 0, 1, 3, 11, 0, 0]);
    }

    #[test]
    fn operations_need_a_completed_negotiation() {
        let device = qemu_scsi();
        let mut transport = probe(&device).unwrap();
        let not_ready = Err(TransportError::InvalidState {
            driver_status: DeviceStatus::empty(),
        });
        assert_eq!(
            transport
                .setup_queue(0, 256, addresses(0), None)
                .map(|_| ()),
            not_ready
        );
        assert_eq!(transport.write_device_config_u32(20, 64), not_ready);
        assert_eq!(transport.driver_ok(), not_ready);
        transport.begin_init(SCSI_DRIVER_FEATURES).unwrap();
        transport.driver_ok().unwrap();
        // Queue setup after DRIVER_OK is refused (no RING_RESET).
        assert!(matches!(
            transport.setup_queue(0, 256, addresses(0), None),
            Err(TransportError::InvalidState { .. })
        ));
        transport.fail();
        assert!(matches!(
            transport.driver_ok(),
            Err(TransportError::InvalidState { .. })
        ));
        assert!(device.status().contains(DeviceStatus::FAILED));
    }

    #[test]
    fn device_needs_reset_is_seen() {
        let device = qemu_scsi();
        let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
        assert!(!transport.needs_reset());
        device.set_device_needs_reset();
        assert!(transport.needs_reset());
        assert_eq!(transport.driver_ok(), Err(TransportError::DeviceNeedsReset));
        transport.reset().unwrap();
        assert!(!transport.needs_reset());
    }

    #[test]
    fn queue_setup_programs_every_register() {
        let device = qemu_scsi();
        let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
        assert_eq!(transport.num_queues(), 6);
        assert_eq!(transport.queue_max_size(2), Ok(256));
        let notifier = transport
            .setup_queue(2, 128, addresses(2), Some(3))
            .unwrap();
        let queue = device.queue(2).unwrap();
        assert_eq!(queue.size, 128);
        assert_eq!(queue.msix_vector, 3);
        assert!(queue.enabled);
        assert_eq!(queue.desc, addresses(2).descriptors);
        assert_eq!(queue.driver, addresses(2).driver);
        assert_eq!(queue.device, addresses(2).device);
        assert_eq!(notifier.queue(), 2);
        assert_eq!(notifier.offset(), 0x3000 + 2 * 4);
        // Other queues are untouched.
        assert!(!device.queue(1).unwrap().enabled);
        assert!(device.violations().is_empty(), "{:?}", device.violations());
    }

    #[test]
    fn queue_setup_errors() {
        let device = FakeVirtioPci::scsi(2).queues(&[256, 0, 256, 64]).build();
        let mut transport = initialised(&device, SCSI_DRIVER_FEATURES - Features::RING_PACKED);
        assert_eq!(
            transport.queue_max_size(4),
            Err(TransportError::QueueUnavailable(4))
        );
        assert_eq!(
            transport.queue_max_size(1),
            Err(TransportError::QueueUnavailable(1))
        );
        let setup = |t: &mut Transport, index, size| {
            t.setup_queue(index, size, addresses(index.into()), None)
                .map(|_| ())
        };
        assert_eq!(
            setup(&mut transport, 4, 64),
            Err(TransportError::QueueUnavailable(4))
        );
        assert_eq!(
            setup(&mut transport, 1, 64),
            Err(TransportError::QueueUnavailable(1))
        );
        assert_eq!(
            setup(&mut transport, 3, 128),
            Err(TransportError::QueueTooLarge {
                queue: 3,
                size: 128,
                max: 64
            })
        );
        assert_eq!(
            setup(&mut transport, 0, 0),
            Err(TransportError::QueueSizeInvalid { queue: 0, size: 0 })
        );
        // Split rings need a power of two.
        assert_eq!(
            setup(&mut transport, 0, 100),
            Err(TransportError::QueueSizeInvalid {
                queue: 0,
                size: 100
            })
        );
        assert_eq!(setup(&mut transport, 0, 64), Ok(()));
        assert_eq!(
            setup(&mut transport, 0, 64),
            Err(TransportError::QueueAlreadyEnabled(0))
        );
        // Packed rings take any size.
        let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
        assert_eq!(setup(&mut transport, 0, 100), Ok(()));
        assert_eq!(device.queue(0).unwrap().size, 100);
        assert!(device.violations().is_empty(), "{:?}", device.violations());
    }

    #[test]
    fn refused_msix_vectors_are_detected() {
        let device = qemu_scsi();
        let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
        device.refuse_msix_vector(2);
        assert_eq!(
            transport
                .setup_queue(1, 256, addresses(1), Some(2))
                .map(|_| ()),
            Err(TransportError::MsixVectorRefused {
                queue: 1,
                vector: 2
            })
        );
        assert!(!device.queue(1).unwrap().enabled);
        assert_eq!(device.queue(1).unwrap().msix_vector, VIRTIO_MSI_NO_VECTOR);
        // Retrying with another vector works.
        transport
            .setup_queue(1, 256, addresses(1), Some(1))
            .unwrap();
        assert_eq!(device.queue(1).unwrap().msix_vector, 1);
        // Beyond the MSI-X table (7 entries) is refused before touching the device.
        assert_eq!(
            transport
                .setup_queue(2, 256, addresses(2), Some(7))
                .map(|_| ()),
            Err(TransportError::MsixVectorOutOfRange {
                vector: 7,
                table_size: Some(7)
            })
        );
        assert_eq!(device.queue(2).unwrap().desc, 0);
        // No vector is always accepted.
        transport.setup_queue(2, 256, addresses(2), None).unwrap();
        assert_eq!(device.queue(2).unwrap().msix_vector, VIRTIO_MSI_NO_VECTOR);

        // The configuration vector gets the same check.
        assert_eq!(
            transport.set_config_msix_vector(Some(2)),
            Err(TransportError::ConfigMsixVectorRefused { vector: 2 })
        );
        transport.set_config_msix_vector(Some(0)).unwrap();
        assert_eq!(device.config_msix_vector(), 0);
        transport.set_config_msix_vector(None).unwrap();
        assert_eq!(device.config_msix_vector(), VIRTIO_MSI_NO_VECTOR);
        assert!(device.violations().is_empty(), "{:?}", device.violations());
    }

    #[test]
    fn without_an_msix_capability_the_device_refuses_vectors() {
        let device = FakeVirtioPci::scsi(1).msix_table_size(None).build();
        let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
        assert_eq!(transport.layout().msix_table_size, None);
        assert_eq!(
            transport
                .setup_queue(0, 256, addresses(0), Some(0))
                .map(|_| ()),
            Err(TransportError::MsixVectorRefused {
                queue: 0,
                vector: 0
            })
        );
        assert_eq!(
            transport.set_config_msix_vector(Some(0x800)),
            Err(TransportError::MsixVectorOutOfRange {
                vector: 0x800,
                table_size: None
            })
        );
    }

    #[test]
    fn notify_addresses_are_computed_and_bounded() {
        // queue_notify_off 0x3FF * 4 + 2 fits a 0x1000-byte structure exactly; 0x400 does not.
        let device = FakeVirtioPci::scsi(1)
            .queue_notify_offs(&[0x3FF, 0x400, 0])
            .build();
        let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
        let notifier = transport.setup_queue(0, 256, addresses(0), None).unwrap();
        assert_eq!(notifier.offset(), 0x3000 + 0x3FF * 4);
        assert_eq!(
            transport
                .setup_queue(1, 256, addresses(1), None)
                .map(|_| ()),
            Err(TransportError::NotifyOffsetOutOfRange {
                queue: 1,
                notify_off: 0x400
            })
        );
        assert!(!device.queue(1).unwrap().enabled);

        // Multiplier 0: every queue shares the structure's first two bytes.
        let regions = FakeRegions {
            notify_off_multiplier: 0,
            ..FakeRegions::qemu()
        };
        let device = FakeVirtioPci::scsi(1).regions(regions).build();
        let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
        let first = transport.setup_queue(0, 256, addresses(0), None).unwrap();
        let third = transport.setup_queue(2, 256, addresses(2), None).unwrap();
        assert_eq!(first.offset(), 0x3000);
        assert_eq!(third.offset(), 0x3000);
    }

    #[test]
    fn notify_writes_the_queue_index_at_its_address() {
        let device = qemu_scsi();
        let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
        let control = transport
            .setup_queue(0, 256, addresses(0), Some(0))
            .unwrap();
        let request = transport
            .setup_queue(3, 256, addresses(3), Some(3))
            .unwrap();
        transport.driver_ok().unwrap();
        transport.notify(&request);
        transport.notify(&control);
        transport.notify(&request);
        assert_eq!(
            device.notifications(),
            [
                NotifyWrite {
                    offset: 12,
                    width: 2,
                    value: 3
                },
                NotifyWrite {
                    offset: 0,
                    width: 2,
                    value: 0
                },
                NotifyWrite {
                    offset: 12,
                    width: 2,
                    value: 3
                },
            ]
        );
        assert_eq!(device.notify_count(3), 2);
        assert_eq!(device.notify_count(0), 1);
        assert_eq!(device.notify_count(1), 0);
    }

    #[test]
    fn isr_reads_clear_and_drop_reserved_bits() {
        let device = qemu_scsi();
        let transport = probe(&device).unwrap();
        assert_eq!(transport.read_isr(), Isr::empty());
        device.raise_isr(Isr::from_bits_retain(0x80) | Isr::QUEUE | Isr::CONFIG);
        assert_eq!(transport.read_isr(), Isr::QUEUE | Isr::CONFIG);
        assert_eq!(device.pending_isr(), Isr::empty());
        assert_eq!(transport.read_isr(), Isr::empty());
        device.raise_isr(Isr::CONFIG);
        assert_eq!(transport.read_isr(), Isr::CONFIG);
    }

    /// The default `virtio_scsi_config` of `FakeVirtioPci::scsi(4)`.
    fn scsi_config_bytes() -> Vec<u8> {
        let mut bytes = Vec::new();
        for value in [4u32, 254, 0xFFFF, 128, 16, 96, 32] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes.extend_from_slice(&[0, 0, 255, 0]);
        bytes.extend_from_slice(&16_383u32.to_le_bytes());
        bytes
    }

    #[test]
    fn device_config_reads_retry_while_the_generation_changes() {
        let device = qemu_scsi_any_width();
        let transport = probe(&device).unwrap();
        let mut out = [0u8; 36];
        transport.read_device_config(0, &mut out).unwrap();
        assert_eq!(out[..], scsi_config_bytes()[..]);

        // The generation changes during the first three passes; the fourth is consistent.
        let generation = transport.config_generation();
        device.bump_generation_on_config_reads(3);
        let mut passes = 0;
        let max_target = transport
            .read_device_config_with(|config| {
                passes += 1;
                config.read_u16(30)
            })
            .unwrap();
        assert_eq!(max_target, 255);
        assert_eq!(passes, 4);
        assert_eq!(transport.config_generation(), generation.wrapping_add(3));

        // A configuration that never settles is an error, not an endless loop.
        device.bump_generation_on_config_reads(u32::MAX);
        assert_eq!(
            transport.read_device_config(0, &mut out),
            Err(TransportError::ConfigGenerationUnstable)
        );
        assert!(device.violations().is_empty(), "{:?}", device.violations());
    }

    #[test]
    fn device_config_access_is_bounded_and_aligned() {
        let device = qemu_scsi_any_width();
        let transport = probe(&device).unwrap();
        // Mixed-width fields, each with its own width.
        let (channel, target, lun, sectors) = transport
            .read_device_config_with(|c| {
                Ok((
                    c.read_u16(28)?,
                    c.read_u16(30)?,
                    c.read_u32(32)?,
                    c.read_u64(0)?,
                ))
            })
            .unwrap();
        assert_eq!((channel, target, lun), (0, 255, 16_383));
        assert_eq!(sectors, 4 | (254 << 32));
        // Unaligned byte ranges are read piecewise.
        let mut out = [0u8; 5];
        transport.read_device_config(3, &mut out).unwrap();
        assert_eq!(out[..], scsi_config_bytes()[3..8]);
        // The structure is 0x1000 bytes long in QEMU's layout.
        let mut four = [0u8; 4];
        assert!(transport.read_device_config(0xFFC, &mut four).is_ok());
        assert_eq!(
            transport.read_device_config(0xFFE, &mut four),
            Err(TransportError::DeviceConfigOutOfRange {
                offset: 0xFFE,
                len: 4
            })
        );
        assert_eq!(
            transport.read_device_config(u32::MAX, &mut four),
            Err(TransportError::DeviceConfigOutOfRange {
                offset: u32::MAX,
                len: 4
            })
        );
        let misaligned = transport.read_device_config_with(|c| c.read_u32(2));
        assert_eq!(
            misaligned,
            Err(TransportError::DeviceConfigMisaligned { offset: 2 })
        );
        let outside = transport.read_device_config_with(|c| c.read_u8(0x1000));
        assert_eq!(
            outside,
            Err(TransportError::DeviceConfigOutOfRange {
                offset: 0x1000,
                len: 1
            })
        );
        assert!(device.violations().is_empty(), "{:?}", device.violations());
    }

    #[test]
    fn device_config_writes_reach_the_device_and_reset_restores_defaults() {
        let device = qemu_scsi();
        let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
        transport.write_device_config_u32(20, 64).unwrap(); // sense_size
        transport.write_device_config_u32(24, 16).unwrap(); // cdb_size
        let sizes = transport.read_device_config_with(|c| Ok((c.read_u32(20)?, c.read_u32(24)?)));
        assert_eq!(sizes, Ok((64, 16)));
        assert_eq!(
            transport.write_device_config_u32(22, 1),
            Err(TransportError::DeviceConfigMisaligned { offset: 22 })
        );
        assert_eq!(
            transport.write_device_config_u16(0xFFF, 1),
            Err(TransportError::DeviceConfigMisaligned { offset: 0xFFF })
        );
        assert_eq!(
            transport.write_device_config_u8(0x1000, 1),
            Err(TransportError::DeviceConfigOutOfRange {
                offset: 0x1000,
                len: 1
            })
        );
        assert!(device.violations().is_empty(), "{:?}", device.violations());
        transport.reset().unwrap();
        assert_eq!(device.device_config_bytes(), scsi_config_bytes());
    }

    /// Configuration space as a plain byte array, for the fuzz-style property test.
    struct RawConfig([u8; 256]);

    impl PciConfig for RawConfig {
        fn read8(&self, offset: u16) -> u8 {
            self.0.get(usize::from(offset)).copied().unwrap_or(0xFF)
        }
        fn read16(&self, offset: u16) -> u16 {
            u16::from_le_bytes([self.read8(offset), self.read8(offset + 1)])
        }
        fn read32(&self, offset: u16) -> u32 {
            u32::from_le_bytes([
                self.read8(offset),
                self.read8(offset + 1),
                self.read8(offset + 2),
                self.read8(offset + 3),
            ])
        }
        fn write16(&self, _offset: u16, _value: u16) {}
    }

    /// The guarantees every successful walk gives.
    fn check_layout(layout: &PciLayout, bar_lens: &[Option<u64>; 6]) {
        let inside = |r: Region| {
            let len = bar_lens[usize::from(r.bar)].unwrap();
            u64::from(r.offset) + u64::from(r.length) <= len
        };
        assert!(inside(layout.common) && layout.common.length >= 56);
        assert!(layout.common.offset.is_multiple_of(4));
        assert!(inside(layout.notify) && layout.notify.length >= 2);
        assert!(layout.notify.offset.is_multiple_of(2));
        let m = layout.notify_off_multiplier;
        assert!(m == 0 || (m.is_power_of_two() && m.is_multiple_of(2)));
        assert!(inside(layout.isr) && layout.isr.length >= 1);
        if let Some(device) = layout.device {
            assert!(inside(device) && device.offset.is_multiple_of(4));
        }
    }

    fn arbitrary_capability() -> impl Strategy<Value = FakeCapability> {
        let offset = prop_oneof![
            Just(0u32),
            Just(0x1000),
            Just(0x3FFE),
            any::<u32>(),
            0..0x5000u32
        ];
        let length = prop_oneof![Just(0u32), Just(1), Just(56), Just(0x1000), any::<u32>()];
        prop_oneof![
            (1..=9u8, 0..8u8, offset.clone(), length.clone())
                .prop_map(|(t, bar, o, l)| FakeCapability::virtio(t, bar, o, l)),
            (
                0..8u8,
                offset,
                length,
                prop_oneof![Just(0u32), Just(4), any::<u32>()]
            )
                .prop_map(|(bar, o, l, m)| FakeCapability::notify(bar, o, l, m)),
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 2..18))
                .prop_map(|(cap_id, body)| FakeCapability { cap_id, body }),
        ]
        .prop_flat_map(|cap| (Just(cap), proptest::option::of(any::<u8>())))
        .prop_map(|(cap, cap_len)| match cap_len {
            Some(len) if cap.cap_id == PCI_CAP_ID_VNDR => cap.with_cap_len(len),
            _ => cap,
        })
    }

    proptest! {
        #[test]
        fn random_configuration_space_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 256),
            bar_lens in proptest::array::uniform6(proptest::option::of(0..0x10000u64)),
        ) {
            let mut config = [0u8; 256];
            config.copy_from_slice(&bytes);
            config[6] |= 0x10;
            let raw = RawConfig(config);
            if let Ok(layout) = parse_capabilities(&raw, |bar| bar_lens.get(usize::from(bar)).copied().flatten()) {
                check_layout(&layout, &bar_lens);
            }
        }

        #[test]
        fn random_capability_lists_probe_or_fail_cleanly(
            caps in proptest::collection::vec(arbitrary_capability(), 0..9),
            pokes in proptest::collection::vec((0x34u8..=0xFF, any::<u8>()), 0..3),
        ) {
            let device = FakeVirtioPci::scsi(2).capabilities(caps).build();
            for (offset, value) in pokes {
                device.poke_config(offset, &[value]);
            }
            let mut bar_lens = [None; 6];
            for (bar, len) in bar_lens.iter_mut().enumerate() {
                *len = RegisterIo::bar_len(&device, bar as u8);
            }
            if let Ok(mut transport) = probe(&device) {
                check_layout(transport.layout(), &bar_lens);
                // Whatever the device advertised, the driver never accesses outside a BAR.
                let _ = transport.begin_init(SCSI_DRIVER_FEATURES);
                let _ = transport.setup_queue(0, 256, addresses(0), Some(0));
                let mut out = [0u8; 8];
                let _ = transport.read_device_config(0, &mut out);
                let _ = transport.read_isr();
                let outside = device
                    .violations()
                    .iter()
                    .filter(|v| v.what.contains("outside a mapped BAR"))
                    .count();
                prop_assert_eq!(outside, 0);
            }
        }
    }

    /// One step of the driver state machine for the handshake property test.
    #[derive(Clone, Debug)]
    enum Step {
        Reset,
        BeginInit {
            drop_packed: bool,
            refuse: bool,
        },
        Setup {
            queue: u16,
            size: u16,
            vector: Option<u16>,
        },
        ConfigVector(Option<u16>),
        DriverOk,
        Fail,
        NeedsReset,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Reset),
            (any::<bool>(), proptest::bool::weighted(0.2)).prop_map(|(drop_packed, refuse)| {
                Step::BeginInit {
                    drop_packed,
                    refuse,
                }
            }),
            (
                0..6u16,
                prop_oneof![Just(256u16), Just(64), Just(100), Just(0), Just(512)],
                proptest::option::of(0..9u16)
            )
                .prop_map(|(queue, size, vector)| Step::Setup {
                    queue,
                    size,
                    vector
                }),
            proptest::option::of(0..9u16).prop_map(Step::ConfigVector),
            Just(Step::DriverOk),
            Just(Step::Fail),
            Just(Step::NeedsReset),
        ]
    }

    proptest! {
        #[test]
        fn any_driver_sequence_keeps_the_protocol(steps in proptest::collection::vec(step(), 1..30)) {
            let device = qemu_scsi();
            let mut transport = probe(&device).unwrap();
            let mut enabled = [false; 6];
            for step in steps {
                match step {
                    Step::Reset => {
                        transport.reset().unwrap();
                        enabled = [false; 6];
                        prop_assert_eq!(device.status(), DeviceStatus::empty());
                    }
                    Step::BeginInit { drop_packed, refuse } => {
                        device.set_refuse_features_ok(refuse);
                        let mut wanted = SCSI_DRIVER_FEATURES;
                        if drop_packed {
                            wanted -= Features::RING_PACKED;
                        }
                        let result = transport.begin_init(wanted);
                        enabled = [false; 6];
                        prop_assert_eq!(result.is_ok(), !refuse);
                        let status = device.status();
                        prop_assert_eq!(status.contains(DeviceStatus::FEATURES_OK), !refuse);
                        prop_assert_eq!(status.contains(DeviceStatus::FAILED), refuse);
                    }
                    Step::Setup { queue, size, vector } => {
                        let result = transport.setup_queue(queue, size, addresses(queue.into()), vector);
                        let registers = device.queue(queue).unwrap();
                        if let Ok(notifier) = result {
                            prop_assert!(!enabled[usize::from(queue)]);
                            enabled[usize::from(queue)] = true;
                            prop_assert!(registers.enabled);
                            prop_assert_eq!(registers.size, size);
                            prop_assert_eq!(registers.msix_vector, vector.unwrap_or(VIRTIO_MSI_NO_VECTOR));
                            prop_assert_eq!(notifier.offset(), 0x3000 + u64::from(queue) * 4);
                        }
                        prop_assert_eq!(registers.enabled, enabled[usize::from(queue)]);
                    }
                    Step::ConfigVector(vector) => {
                        let result = transport.set_config_msix_vector(vector);
                        prop_assert_eq!(result.is_ok(), vector.is_none_or(|v| v < 7));
                    }
                    Step::DriverOk => {
                        let ready = transport.driver_status().contains(DeviceStatus::FEATURES_OK)
                            && !transport.driver_status().contains(DeviceStatus::FAILED);
                        let result = transport.driver_ok();
                        if ready && !device.status().contains(DeviceStatus::DEVICE_NEEDS_RESET) {
                            prop_assert!(result.is_ok());
                            prop_assert!(device.status().contains(DeviceStatus::DRIVER_OK));
                        } else {
                            prop_assert!(result.is_err());
                        }
                    }
                    Step::Fail => {
                        transport.fail();
                        prop_assert!(device.status().contains(DeviceStatus::FAILED));
                    }
                    Step::NeedsReset => device.set_device_needs_reset(),
                }
                // The device saw only legal accesses, and its status always holds exactly the
                // bits the driver set (minus a refused FEATURES_OK, plus DEVICE_NEEDS_RESET).
                prop_assert!(device.violations().is_empty(), "{:?}", device.violations());
                let device_set = device.status()
                    - DeviceStatus::DEVICE_NEEDS_RESET;
                prop_assert_eq!(
                    device_set | DeviceStatus::FEATURES_OK,
                    transport.driver_status() | DeviceStatus::FEATURES_OK
                );
            }
        }
    }
}
