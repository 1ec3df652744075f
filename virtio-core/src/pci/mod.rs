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
mod tests;
