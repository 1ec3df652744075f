//! Feature bits (virtio 1.x sections 2.2, 5.6.3 and 6) and the choice of what the driver accepts.
#![forbid(unsafe_code)]

bitflags::bitflags! {
    /// The 64 feature bits of a virtio device, as offered in `device_feature` and accepted in
    /// `driver_feature` (virtio 1.x section 2.2).
    ///
    /// Only the bits rvscsi knows are named: the device-independent ones of section 6 and
    /// virtio-scsi's of section 5.6.3. Unnamed bits can appear in a value read from the device
    /// (`from_bits_retain`) but [`negotiate`] never accepts them, as section 2.2.1 requires.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Features: u64 {
        /// `VIRTIO_SCSI_F_INOUT` (bit 0, section 5.6.3): one request may carry both
        /// device-readable and device-writable data buffers.
        const SCSI_INOUT = 1 << 0;
        /// `VIRTIO_SCSI_F_HOTPLUG` (bit 1, section 5.6.3): the device reports LUN hot-plug and
        /// hot-unplug events on the eventq.
        const SCSI_HOTPLUG = 1 << 1;
        /// `VIRTIO_SCSI_F_CHANGE` (bit 2, section 5.6.3): the device reports LUN parameter changes
        /// (`VIRTIO_SCSI_T_PARAM_CHANGE`).
        const SCSI_CHANGE = 1 << 2;
        /// `VIRTIO_SCSI_F_T10_PI` (bit 3, section 5.6.3): request headers carry T10 protection
        /// information fields.
        const SCSI_T10_PI = 1 << 3;
        /// `VIRTIO_F_NOTIFY_ON_EMPTY` (bit 24, section 6.1, legacy only).
        const NOTIFY_ON_EMPTY = 1 << 24;
        /// `VIRTIO_F_ANY_LAYOUT` (bit 27, legacy; implied by `VERSION_1`): descriptor boundaries
        /// need not match message framing.
        const ANY_LAYOUT = 1 << 27;
        /// `VIRTIO_F_INDIRECT_DESC` (bit 28, section 6): indirect descriptor tables.
        const INDIRECT_DESC = 1 << 28;
        /// `VIRTIO_F_EVENT_IDX` (bit 29, section 6): `used_event` / `avail_event` suppression.
        const EVENT_IDX = 1 << 29;
        /// `VIRTIO_F_VERSION_1` (bit 32, section 6): compliance with virtio 1.x.
        const VERSION_1 = 1 << 32;
        /// `VIRTIO_F_ACCESS_PLATFORM` (bit 33, section 6): the device reaches memory through
        /// platform-translated bus addresses (an IOMMU); the driver hands it bus addresses.
        const ACCESS_PLATFORM = 1 << 33;
        /// `VIRTIO_F_RING_PACKED` (bit 34, section 6): the packed virtqueue layout.
        const RING_PACKED = 1 << 34;
        /// `VIRTIO_F_IN_ORDER` (bit 35, section 6): buffers are used in the order made available.
        const IN_ORDER = 1 << 35;
        /// `VIRTIO_F_ORDER_PLATFORM` (bit 36, section 6): the driver must use the platform's
        /// barriers for hardware devices.
        const ORDER_PLATFORM = 1 << 36;
        /// `VIRTIO_F_SR_IOV` (bit 37, section 6): the device supports SR-IOV.
        const SR_IOV = 1 << 37;
        /// `VIRTIO_F_NOTIFICATION_DATA` (bit 38, section 6): notifications carry ring positions.
        const NOTIFICATION_DATA = 1 << 38;
        /// `VIRTIO_F_RING_RESET` (bit 40, section 6): queues can be reset individually.
        const RING_RESET = 1 << 40;
    }
}

/// The features rvscsi's virtio-scsi driver can use, before the caller removes any it wants off
/// (see [`negotiate`]).
///
/// Deliberately absent: `SCSI_INOUT` and `SCSI_T10_PI` (`StorPort` gives no bidirectional or
/// protection-information requests to this miniport), `IN_ORDER`, `ORDER_PLATFORM`,
/// `NOTIFICATION_DATA` and `RING_RESET` (not implemented by the queues or the transport),
/// `SR_IOV` (no SR-IOV capability handling) and `NOTIFY_ON_EMPTY` (legacy only).
pub const SCSI_DRIVER_FEATURES: Features = Features::VERSION_1
    .union(Features::RING_PACKED)
    .union(Features::EVENT_IDX)
    .union(Features::INDIRECT_DESC)
    .union(Features::ANY_LAYOUT)
    .union(Features::ACCESS_PLATFORM)
    .union(Features::SCSI_HOTPLUG)
    .union(Features::SCSI_CHANGE);

/// Why no feature set can be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureError {
    /// The device (or the caller's wanted set) lacks `VIRTIO_F_VERSION_1`: it is a legacy-only
    /// device, which this driver does not support (section 6.1 allows failing).
    Version1Missing {
        /// Everything the device offered, including bits unknown to rvscsi.
        offered: Features,
    },
}

impl core::fmt::Display for FeatureError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Version1Missing { offered } => write!(
                f,
                "VIRTIO_F_VERSION_1 is not both offered and wanted (offered {:#x})",
                offered.bits()
            ),
        }
    }
}

impl core::error::Error for FeatureError {}

/// The set the driver accepts: what the device `offered`, intersected with what the driver
/// `wanted` and with the bits this crate knows (section 2.2.1: never accept unknown bits).
///
/// The caller turns features off by removing them from `wanted`, e.g.
/// `SCSI_DRIVER_FEATURES - Features::RING_PACKED` to force split rings.
///
/// # Errors
/// [`FeatureError::Version1Missing`] if `VERSION_1` would not be accepted: the driver is a
/// virtio 1.x driver only.
pub fn negotiate(offered: Features, wanted: Features) -> Result<Features, FeatureError> {
    let accepted = offered.intersection(wanted).intersection(Features::all());
    if accepted.contains(Features::VERSION_1) {
        Ok(accepted)
    } else {
        Err(FeatureError::Version1Missing { offered })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_positions_match_the_spec() {
        let expected: [(Features, u32); 16] = [
            (Features::SCSI_INOUT, 0),
            (Features::SCSI_HOTPLUG, 1),
            (Features::SCSI_CHANGE, 2),
            (Features::SCSI_T10_PI, 3),
            (Features::NOTIFY_ON_EMPTY, 24),
            (Features::ANY_LAYOUT, 27),
            (Features::INDIRECT_DESC, 28),
            (Features::EVENT_IDX, 29),
            (Features::VERSION_1, 32),
            (Features::ACCESS_PLATFORM, 33),
            (Features::RING_PACKED, 34),
            (Features::IN_ORDER, 35),
            (Features::ORDER_PLATFORM, 36),
            (Features::SR_IOV, 37),
            (Features::NOTIFICATION_DATA, 38),
            (Features::RING_RESET, 40),
        ];
        for (flag, bit) in expected {
            assert_eq!(flag.bits(), 1u64 << bit, "{flag:?}");
        }
    }

    #[test]
    fn driver_set_is_exactly_the_documented_one() {
        let names: std::vec::Vec<&str> =
            SCSI_DRIVER_FEATURES.iter_names().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "SCSI_HOTPLUG",
                "SCSI_CHANGE",
                "ANY_LAYOUT",
                "INDIRECT_DESC",
                "EVENT_IDX",
                "VERSION_1",
                "ACCESS_PLATFORM",
                "RING_PACKED"
            ]
        );
    }

    #[test]
    fn negotiation_intersects_and_drops_unknown_bits() {
        // A QEMU-like offer plus an unknown device bit (5) and an unknown reserved bit (50).
        let offered = Features::from_bits_retain(
            (Features::VERSION_1
                | Features::RING_PACKED
                | Features::EVENT_IDX
                | Features::INDIRECT_DESC
                | Features::ANY_LAYOUT
                | Features::NOTIFY_ON_EMPTY
                | Features::SCSI_HOTPLUG
                | Features::SCSI_INOUT)
                .bits()
                | (1 << 5)
                | (1 << 50),
        );
        let accepted = negotiate(offered, SCSI_DRIVER_FEATURES).unwrap();
        assert_eq!(
            accepted,
            Features::VERSION_1
                | Features::RING_PACKED
                | Features::EVENT_IDX
                | Features::INDIRECT_DESC
                | Features::ANY_LAYOUT
                | Features::SCSI_HOTPLUG
        );
        // Unknown bits are never accepted, even if the caller asks for them.
        let all_bits = negotiate(offered, Features::from_bits_retain(u64::MAX)).unwrap();
        assert_eq!(all_bits.bits() & ((1 << 5) | (1 << 50)), 0);
    }

    #[test]
    fn the_caller_can_turn_ring_features_off() {
        let offered = SCSI_DRIVER_FEATURES;
        let wanted = SCSI_DRIVER_FEATURES
            - Features::RING_PACKED
            - Features::EVENT_IDX
            - Features::INDIRECT_DESC;
        let accepted = negotiate(offered, wanted).unwrap();
        assert!(
            !accepted
                .intersects(Features::RING_PACKED | Features::EVENT_IDX | Features::INDIRECT_DESC)
        );
        assert!(accepted.contains(Features::VERSION_1 | Features::SCSI_HOTPLUG));
    }

    #[test]
    fn version_1_is_required() {
        let legacy = Features::EVENT_IDX | Features::INDIRECT_DESC;
        assert_eq!(
            negotiate(legacy, SCSI_DRIVER_FEATURES),
            Err(FeatureError::Version1Missing { offered: legacy })
        );
        // Also when the caller removed it from its own set.
        assert!(
            negotiate(
                SCSI_DRIVER_FEATURES,
                SCSI_DRIVER_FEATURES - Features::VERSION_1
            )
            .is_err()
        );
    }
}
