//! The packed-ring device for the benchmark: virtio-core's spec-written packed device
//! ([`virtio_core::fake::packed_device`], the one the ring tests and the simulator's device use
//! too), driven the way [`crate::split_device`] drives rust-vmm's split queue.
//!
//! It runs only when kicked, disables kicks while draining, re-enables them with a descriptor
//! event (EVENT_IDX) or plain enable when idle, and interrupts only when the driver's event
//! suppression structure asks for it.

use rvscsi_tests::device::PackedGuest;
use virtio_core::fake::packed_device::{PackedAreas, PackedDevice as SpecDevice, PackedFeatures};

use crate::memory::ram;
use crate::split_device::WRITTEN_PER_REQUEST;

/// Bytes of the device-readable part of every request: one `virtio_scsi_cmd_req`.
const READ_PER_REQUEST: u64 = 51;

/// The device side of one packed virtqueue, with the benchmark's counters.
pub struct PackedDevice {
    device: SpecDevice,
    kicked: bool,
    /// Notifications (kicks) received.
    pub kicks: u64,
    /// Interrupts raised.
    pub interrupts: u64,
}

impl PackedDevice {
    /// The device side of a packed queue whose areas start at the given guest addresses.
    pub fn new(size: u16, areas: PackedAreas, features: PackedFeatures) -> Self {
        Self {
            device: SpecDevice::new(size, areas, features),
            kicked: false,
            kicks: 0,
            interrupts: 0,
        }
    }

    /// The driver wrote the notify register.
    pub fn notify(&mut self) {
        self.kicks += 1;
        self.kicked = true;
    }

    /// Runs the device if it was kicked: uses every available request, checking its shape.
    /// Returns whether an interrupt is raised.
    ///
    /// # Panics
    /// If the driver broke the ring protocol or posted a request of another shape.
    pub fn process(&mut self) -> bool {
        if !self.kicked {
            return false;
        }
        self.kicked = false;
        let memory = PackedGuest(&ram().memory);
        let mut completed = 0;
        loop {
            self.device.disable_kicks(&memory).expect("device event");
            while let Some(chain) = self.device.pop(&memory).expect("a well-formed chain") {
                let readable: u64 = chain
                    .elements
                    .iter()
                    .filter(|e| !e.writable)
                    .map(|e| u64::from(e.len))
                    .sum();
                assert_eq!(readable, READ_PER_REQUEST, "readable part: one cmd_req");
                assert_eq!(
                    chain.writable_len(),
                    u64::from(WRITTEN_PER_REQUEST),
                    "writable part of the chain"
                );
                self.device
                    .push_used(
                        &memory,
                        chain.id,
                        WRITTEN_PER_REQUEST,
                        chain.descriptors,
                        true,
                    )
                    .expect("used descriptor");
                completed += 1;
            }
            if !self.device.enable_kicks(&memory).expect("device event") {
                break;
            }
        }
        let interrupt =
            completed > 0 && self.device.needs_interrupt(&memory).expect("driver event");
        if interrupt {
            self.interrupts += 1;
        }
        interrupt
    }
}
