//! [`FakeVirtioPciBuilder`]: describes a fake device (IDs, features, queues, capability list,
//! BARs, MSI-X, device configuration) and lays out its configuration space.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::vec;
use std::vec::Vec;

use super::registers::State;
use super::{CONFIG_SPACE_SIZE, FakeCapability, FakeQueue, FakeRegions, FakeVirtioPci};
use crate::features::Features;
use crate::pci::{
    PCI_CAPABILITY_LIST, PCI_DEVICE_ID, PCI_STATUS, PCI_STATUS_CAP_LIST, PCI_VENDOR_ID,
    VIRTIO_MSI_NO_VECTOR, VIRTIO_PCI_VENDOR_ID,
};

/// Builds a [`FakeVirtioPci`]; starts from a QEMU-like device.
#[derive(Clone, Debug)]
pub struct FakeVirtioPciBuilder {
    pub(super) vendor_id: u16,
    pub(super) device_id: u16,
    pub(super) device_features: Features,
    pub(super) required_features: Features,
    pub(super) queue_max_sizes: Vec<u16>,
    pub(super) queue_notify_offs: Option<Vec<u16>>,
    pub(super) regions: FakeRegions,
    pub(super) capabilities: Option<Vec<FakeCapability>>,
    pub(super) bar_lens: [Option<u64>; 6],
    pub(super) msix_table_size: Option<u16>,
    pub(super) device_config: Vec<u8>,
    pub(super) device_config_writable: Vec<Range<u32>>,
    pub(super) device_config_fields: Vec<Range<u32>>,
}

impl FakeVirtioPciBuilder {
    /// Vendor ID (default 0x1AF4).
    #[must_use]
    pub fn vendor_id(mut self, id: u16) -> Self {
        self.vendor_id = id;
        self
    }

    /// Device ID (default 0x1040 + device type).
    #[must_use]
    pub fn device_id(mut self, id: u16) -> Self {
        self.device_id = id;
        self
    }

    /// Offered features (default `VERSION_1` only for a generic device).
    #[must_use]
    pub fn device_features(mut self, features: Features) -> Self {
        self.device_features = features;
        self
    }

    /// Features the device insists on: it refuses `FEATURES_OK` without them (default `VERSION_1`,
    /// as QEMU does for a modern-only device).
    #[must_use]
    pub fn required_features(mut self, features: Features) -> Self {
        self.required_features = features;
        self
    }

    /// One entry per queue: its maximum size (0 = unavailable). Sets `num_queues`.
    #[must_use]
    pub fn queues(mut self, max_sizes: &[u16]) -> Self {
        self.queue_max_sizes = max_sizes.to_vec();
        self
    }

    /// `queue_notify_off` per queue (default: the queue index).
    #[must_use]
    pub fn queue_notify_offs(mut self, offs: &[u16]) -> Self {
        self.queue_notify_offs = Some(offs.to_vec());
        self
    }

    /// Where the register model serves the structures (default [`FakeRegions::qemu`]).
    #[must_use]
    pub fn regions(mut self, regions: FakeRegions) -> Self {
        self.regions = regions;
        self
    }

    /// The advertised capability list, in list order (default: QEMU's list for the regions).
    #[must_use]
    pub fn capabilities(mut self, caps: Vec<FakeCapability>) -> Self {
        self.capabilities = Some(caps);
        self
    }

    /// Length of BAR `bar` as mapped, `None` for unmapped (default: BAR 1 4 KiB, BAR 4 16 KiB).
    /// Out-of-range BAR numbers are ignored.
    #[must_use]
    pub fn bar_len(mut self, bar: u8, len: Option<u64>) -> Self {
        if let Some(slot) = self.bar_lens.get_mut(usize::from(bar)) {
            *slot = len;
        }
        self
    }

    /// MSI-X table size, or `None` for no MSI-X capability (then every vector is refused).
    #[must_use]
    pub fn msix_table_size(mut self, size: Option<u16>) -> Self {
        self.msix_table_size = size;
        self
    }

    /// Device configuration contents after reset, and the byte ranges the driver may write.
    #[must_use]
    pub fn device_config(mut self, bytes: &[u8], writable: &[Range<u32>]) -> Self {
        self.device_config = bytes.to_vec();
        self.device_config_writable = writable.to_vec();
        self
    }

    /// The fields of the device configuration, as byte ranges. Each access must then cover
    /// exactly one field at its natural width (section 4.1.3.1: 8-bit fields with 8-bit
    /// accesses, 16-bit with 16-bit, 32-bit with 32-bit, 64-bit with two 32-bit accesses);
    /// any other access, such as one 32-bit read spanning two 16-bit fields, is served as the
    /// device would serve it and recorded as a [`Violation`](super::Violation). Empty (the default): unchecked.
    #[must_use]
    pub fn device_config_fields(mut self, fields: &[Range<u32>]) -> Self {
        self.device_config_fields = fields.to_vec();
        self
    }

    /// Builds the device.
    ///
    /// # Panics
    /// If the capabilities do not fit in configuration space (a test-authoring error).
    #[must_use]
    pub fn build(self) -> FakeVirtioPci {
        let capabilities = self
            .capabilities
            .clone()
            .unwrap_or_else(|| self.regions.capabilities(self.msix_table_size));
        let mut config = [0u8; CONFIG_SPACE_SIZE];
        let put = |config: &mut [u8; CONFIG_SPACE_SIZE], at: usize, bytes: &[u8]| {
            config[at..at + bytes.len()].copy_from_slice(bytes);
        };
        put(
            &mut config,
            usize::from(PCI_VENDOR_ID),
            &self.vendor_id.to_le_bytes(),
        );
        put(
            &mut config,
            usize::from(PCI_DEVICE_ID),
            &self.device_id.to_le_bytes(),
        );
        put(&mut config, 0x08, &[1, 0x00, 0x00, 0x01]); // revision 1, class 01 00 00 (SCSI)
        put(&mut config, 0x14, &0xFEB0_0000u32.to_le_bytes()); // BAR 1: 32-bit memory
        put(&mut config, 0x20, &0xFE00_000Cu32.to_le_bytes()); // BAR 4: 64-bit prefetchable
        put(&mut config, 0x2C, &VIRTIO_PCI_VENDOR_ID.to_le_bytes());
        put(&mut config, 0x2E, &0x1100u16.to_le_bytes());
        config[0x3D] = 1; // INTA#

        // Allocate addresses upwards from 0x40 in reverse list order, as QEMU's prepending
        // `pci_add_capability` does, so the default list is byte-for-byte QEMU's.
        let mut offsets = vec![0u8; capabilities.len()];
        let mut next_free = 0x40usize;
        for (index, cap) in capabilities.iter().enumerate().rev() {
            assert!(
                next_free + cap.footprint() <= CONFIG_SPACE_SIZE,
                "capabilities overflow"
            );
            offsets[index] = next_free as u8;
            next_free += cap.footprint();
        }
        for (index, cap) in capabilities.iter().enumerate() {
            let at = usize::from(offsets[index]);
            let next = offsets.get(index + 1).copied().unwrap_or(0);
            put(&mut config, at, &[cap.cap_id, next]);
            put(&mut config, at + 2, &cap.body);
        }
        if let Some(&first) = offsets.first() {
            config[usize::from(PCI_CAPABILITY_LIST)] = first;
            put(
                &mut config,
                usize::from(PCI_STATUS),
                &PCI_STATUS_CAP_LIST.to_le_bytes(),
            );
        }

        let notify_offs = self
            .queue_notify_offs
            .unwrap_or_else(|| (0..self.queue_max_sizes.len() as u16).collect());
        let queues = self
            .queue_max_sizes
            .iter()
            .enumerate()
            .map(|(i, &max)| FakeQueue::new(max, notify_offs.get(i).copied().unwrap_or(0)))
            .collect();
        let state = State {
            config,
            capability_offsets: offsets,
            bar_lens: self.bar_lens,
            regions: self.regions,
            device_features: self.device_features,
            required_features: self.required_features,
            refuse_features_ok: false,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            reset_delay: 0,
            stale_status_reads: 0,
            stale_status: 0,
            config_msix_vector: VIRTIO_MSI_NO_VECTOR,
            queue_select: 0,
            queues,
            msix_table_size: self.msix_table_size,
            refused_vectors: Vec::new(),
            isr: 0,
            device_config_default: self.device_config.clone(),
            device_config: self.device_config,
            device_config_writable: self.device_config_writable,
            device_config_fields: self.device_config_fields,
            generation: 0,
            generation_bumps: 0,
            status_writes: Vec::new(),
            notifications: Vec::new(),
            violations: Vec::new(),
        };
        FakeVirtioPci {
            state: Arc::new(Mutex::new(state)),
        }
    }
}
