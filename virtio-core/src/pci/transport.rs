//! The transport handle: [`PciTransport::probe`] identifies the device and walks its
//! capabilities; the handle then owns the register access, and sends notifications and reads
//! the ISR (virtio 1.x sections 4.1.4.4, 4.1.4.5 and 4.1.5.2).

use core::sync::atomic::{Ordering, fence};

use super::{
    DeviceStatus, PCI_DEVICE_ID, PCI_VENDOR_ID, PciLayout, TransportError, device_type,
    parse_capabilities,
};
use crate::features::Features;
use crate::hal::{PciConfig, RegisterIo};

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

/// Where to notify one queue: returned by [`PciTransport::setup_queue`], used by
/// [`PciTransport::notify`]. The offset was validated against the notification structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueNotifier {
    pub(super) queue: u16,
    pub(super) offset: u64,
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

/// A probed virtio 1.x PCI device: owns the register access and remembers the validated layout
/// and the driver's side of the status handshake.
///
/// Methods that select a queue or change status take `&mut self`; [`PciTransport::notify`],
/// [`PciTransport::read_isr`] and the device-configuration reads take `&self`, so they can run
/// from interrupt and I/O paths while the transport is shared.
#[derive(Debug)]
pub struct PciTransport<R: RegisterIo> {
    pub(super) regs: R,
    pub(super) device_type: u16,
    pub(super) layout: PciLayout,
    /// The status bits the driver has set since the last reset. Status writes write this value,
    /// so the driver never clears a bit (section 2.1.1) nor echoes back a device-set bit.
    pub(super) driver_status: DeviceStatus,
    pub(super) offered: Features,
    pub(super) negotiated: Features,
}

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
}
