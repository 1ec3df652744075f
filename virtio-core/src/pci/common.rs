//! The common configuration structure (virtio 1.x section 4.1.4.3) and what the transport does
//! through it: the status handshake, feature negotiation, queue setup and MSI-X vectors.

use core::mem::offset_of;
use core::sync::atomic::{Ordering, fence};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{
    PciTransport, QueueNotifier, TransportError, VIRTIO_MSI_MAX_VECTOR, VIRTIO_MSI_NO_VECTOR,
};
use crate::features::{FeatureError, Features, negotiate};
use crate::hal::RegisterIo;
use crate::queue::QueueAddresses;

/// Number of status reads [`PciTransport::reset`] makes before giving up. A read is a bus
/// round trip (about a microsecond on real hardware), so this is a bound of tenths of a second,
/// far beyond any device's reset time; QEMU completes the reset within the write.
pub const RESET_POLL_LIMIT: u32 = 100_000;

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

/// Features this transport cannot honour, removed from whatever the caller wants:
/// `NOTIFICATION_DATA` changes the notification format, `RING_RESET` needs per-queue reset support,
/// `SR_IOV` needs the SR-IOV extended capability (section 6.1: must not be negotiated without it).
const TRANSPORT_UNSUPPORTED: Features = Features::NOTIFICATION_DATA
    .union(Features::RING_RESET)
    .union(Features::SR_IOV);

impl<R: RegisterIo> PciTransport<R> {
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
    pub(super) fn require_configuring(&self) -> Result<(), TransportError> {
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

    /// Reads `config_generation`.
    #[must_use]
    pub fn config_generation(&self) -> u8 {
        self.common_read8(VirtioPciCommonCfg::CONFIG_GENERATION)
    }
}
