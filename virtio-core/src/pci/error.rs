//! [`TransportError`]: why the PCI transport refused a device or an operation.

use super::DeviceStatus;
use crate::features::Features;

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
    /// `device_status` did not read 0 within [`RESET_POLL_LIMIT`](super::RESET_POLL_LIMIT) reads after a reset.
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
    /// The vector is beyond the MSI-X table or above [`VIRTIO_MSI_MAX_VECTOR`](super::VIRTIO_MSI_MAX_VECTOR).
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
        /// The value written ([`VIRTIO_MSI_NO_VECTOR`](super::VIRTIO_MSI_NO_VECTOR) when unmapping).
        vector: u16,
    },
    /// `config_msix_vector` did not read back as written.
    ConfigMsixVectorRefused {
        /// The value written ([`VIRTIO_MSI_NO_VECTOR`](super::VIRTIO_MSI_NO_VECTOR) when unmapping).
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
    /// `config_generation` kept changing for [`CONFIG_GENERATION_ATTEMPTS`](super::CONFIG_GENERATION_ATTEMPTS) reads.
    ConfigGenerationUnstable,
    /// The device set `DEVICE_NEEDS_RESET`.
    DeviceNeedsReset,
}

/// The structure a `cfg_type` names, for messages.
struct Structure(u8);

impl core::fmt::Display for Structure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            super::VIRTIO_PCI_CAP_COMMON_CFG => f.write_str("common configuration"),
            super::VIRTIO_PCI_CAP_NOTIFY_CFG => f.write_str("notification"),
            super::VIRTIO_PCI_CAP_ISR_CFG => f.write_str("ISR"),
            super::VIRTIO_PCI_CAP_DEVICE_CFG => f.write_str("device configuration"),
            super::VIRTIO_PCI_CAP_PCI_CFG => f.write_str("PCI configuration access"),
            other => write!(f, "type {other}"),
        }
    }
}

impl core::fmt::Display for TransportError {
    #[expect(
        clippy::too_many_lines,
        reason = "one arm per variant, nothing to factor out"
    )]
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::NotVirtio {
                vendor_id,
                device_id,
            } => write!(
                f,
                "PCI function {vendor_id:04x}:{device_id:04x} is not a virtio device"
            ),
            Self::UnknownTransitionalDevice(id) => {
                write!(
                    f,
                    "transitional device ID {id:#06x} names no virtio device type"
                )
            }
            Self::NoCapabilityList => {
                f.write_str("no PCI capability list (a legacy-only virtio device)")
            }
            Self::CapabilityPointerInvalid { at, pointer } => write!(
                f,
                "capability pointer at {at:#04x} is {pointer:#04x}, inside the configuration header"
            ),
            Self::CapabilityLoop { at } => {
                write!(f, "the capability list loops back to {at:#04x}")
            }
            Self::CapabilityTruncated { at, cap_len } => write!(
                f,
                "capability at {at:#04x} is truncated (cap_len {cap_len}, or past configuration space)"
            ),
            Self::BarOutOfRange { cfg_type, bar } => write!(
                f,
                "{} structure names BAR {bar}, which does not exist",
                Structure(cfg_type)
            ),
            Self::BarNotMapped { cfg_type, bar } => write!(
                f,
                "{} structure lies in BAR {bar}, which is not mapped",
                Structure(cfg_type)
            ),
            Self::CapabilityOutsideBar {
                cfg_type,
                offset,
                length,
                bar_len,
            } => write!(
                f,
                "{} structure at {offset:#x}+{length:#x} runs past its BAR of {bar_len:#x} bytes",
                Structure(cfg_type)
            ),
            Self::CapabilityMisaligned { cfg_type, offset } => write!(
                f,
                "{} structure offset {offset:#x} is misaligned",
                Structure(cfg_type)
            ),
            Self::CapabilityTooSmall { cfg_type, length } => write!(
                f,
                "{} structure of {length} bytes is too small",
                Structure(cfg_type)
            ),
            Self::NotifyMultiplierInvalid(multiplier) => write!(
                f,
                "notify_off_multiplier {multiplier} is neither 0 nor an even power of two"
            ),
            Self::MissingCapability(cfg_type) => {
                write!(
                    f,
                    "the device has no usable {} structure",
                    Structure(cfg_type)
                )
            }
            Self::ResetTimeout { status } => {
                write!(f, "device_status still reads {status:#04x} after a reset")
            }
            Self::Version1Missing { offered } => write!(
                f,
                "the device does not offer VIRTIO_F_VERSION_1 (offered {:#x})",
                offered.bits()
            ),
            Self::FeaturesRejected { accepted } => write!(
                f,
                "the device cleared FEATURES_OK for features {:#x}",
                accepted.bits()
            ),
            Self::InvalidState { driver_status } => write!(
                f,
                "not allowed with driver status {:#04x}",
                driver_status.bits()
            ),
            Self::QueueUnavailable(queue) => write!(f, "queue {queue} does not exist"),
            Self::QueueAlreadyEnabled(queue) => write!(f, "queue {queue} is already enabled"),
            Self::QueueSizeInvalid { queue, size } => {
                write!(f, "queue {queue}: size {size} is not allowed")
            }
            Self::QueueTooLarge { queue, size, max } => {
                write!(
                    f,
                    "queue {queue}: size {size} is above the device's maximum {max}"
                )
            }
            Self::MsixVectorOutOfRange {
                vector,
                table_size: Some(size),
            } => write!(
                f,
                "MSI-X vector {vector} is outside the table of {size} entries"
            ),
            Self::MsixVectorOutOfRange {
                vector,
                table_size: None,
            } => write!(
                f,
                "MSI-X vector {vector} is above the highest vector number"
            ),
            Self::MsixVectorRefused { queue, vector } => {
                write!(
                    f,
                    "queue {queue}: the device refused MSI-X vector {vector:#x}"
                )
            }
            Self::ConfigMsixVectorRefused { vector } => write!(
                f,
                "the device refused MSI-X vector {vector:#x} for configuration changes"
            ),
            Self::NotifyOffsetOutOfRange { queue, notify_off } => write!(
                f,
                "queue {queue}: queue_notify_off {notify_off} points outside the notification structure"
            ),
            Self::DeviceConfigOutOfRange { offset, len } => write!(
                f,
                "device configuration access of {len} bytes at {offset:#x} is out of range"
            ),
            Self::DeviceConfigMisaligned { offset } => {
                write!(
                    f,
                    "device configuration access at {offset:#x} is misaligned"
                )
            }
            Self::ConfigGenerationUnstable => f.write_str(
                "config_generation kept changing while reading the device configuration",
            ),
            Self::DeviceNeedsReset => f.write_str("the device set DEVICE_NEEDS_RESET"),
        }
    }
}

impl core::error::Error for TransportError {}
