//! The fake device's register model: what each access to the common configuration, notify,
//! ISR and device configuration structures does, with the spec's semantics (virtio 1.x section
//! 4.1.4), and the [`Violation`]s it records for accesses the spec forbids.

use std::ops::Range;
use std::vec::Vec;

use super::{
    CONFIG_SPACE_SIZE, FakeQueue, FakeRegions, MIXED_WIDTH_DEVICE_CONFIG, NotifyWrite, Violation,
};
use crate::features::Features;
use crate::pci::{DeviceStatus, Region, VIRTIO_MSI_NO_VECTOR, VirtioPciCommonCfg as Common};

#[derive(Debug)]
pub(super) struct State {
    pub(super) config: [u8; CONFIG_SPACE_SIZE],
    pub(super) capability_offsets: Vec<u8>,
    pub(super) bar_lens: [Option<u64>; 6],
    pub(super) regions: FakeRegions,
    pub(super) device_features: Features,
    pub(super) required_features: Features,
    pub(super) refuse_features_ok: bool,
    pub(super) device_feature_select: u32,
    pub(super) driver_feature_select: u32,
    pub(super) driver_features: u64,
    pub(super) status: u8,
    /// Status reads that still show the pre-reset status after a reset (see `set_reset_delay`).
    pub(super) reset_delay: u32,
    pub(super) stale_status_reads: u32,
    pub(super) stale_status: u8,
    pub(super) config_msix_vector: u16,
    pub(super) queue_select: u16,
    pub(super) queues: Vec<FakeQueue>,
    pub(super) msix_table_size: Option<u16>,
    pub(super) refused_vectors: Vec<u16>,
    pub(super) isr: u8,
    pub(super) device_config_default: Vec<u8>,
    pub(super) device_config: Vec<u8>,
    pub(super) device_config_writable: Vec<Range<u32>>,
    pub(super) device_config_fields: Vec<Range<u32>>,
    pub(super) generation: u8,
    /// Device configuration reads that will each bump the generation (a racing device update).
    pub(super) generation_bumps: u32,
    pub(super) status_writes: Vec<u8>,
    pub(super) notifications: Vec<NotifyWrite>,
    pub(super) violations: Vec<Violation>,
}

/// The high halves of the 64-bit queue address fields.
const QUEUE_DESC_HI: u64 = Common::QUEUE_DESC + 4;
const QUEUE_DRIVER_HI: u64 = Common::QUEUE_DRIVER + 4;
const QUEUE_DEVICE_HI: u64 = Common::QUEUE_DEVICE + 4;

/// Which structure an access hits, with the offset relative to it.
enum Target {
    Common(u64),
    Notify(u64),
    Isr(u64),
    Device(u64),
    Unbacked,
    OutsideBar,
}

fn within(region: Region, bar: u8, offset: u64, width: u8, cap: u64) -> Option<u64> {
    let start = u64::from(region.offset);
    let len = u64::from(region.length).min(cap);
    let rel = offset.checked_sub(start)?;
    (region.bar == bar && rel + u64::from(width) <= len).then_some(rel)
}

impl State {
    pub(super) fn violation(&mut self, bar: u8, offset: u64, width: u8, what: &'static str) {
        self.violations.push(Violation {
            bar,
            offset,
            width,
            what,
        });
    }

    fn target(&self, bar: u8, offset: u64, width: u8) -> Target {
        let mapped = self.bar_lens.get(usize::from(bar)).copied().flatten();
        match mapped {
            Some(len)
                if offset
                    .checked_add(u64::from(width))
                    .is_some_and(|end| end <= len) => {}
            _ => return Target::OutsideBar,
        }
        let r = self.regions;
        if let Some(rel) = within(r.common, bar, offset, width, 64) {
            Target::Common(rel)
        } else if let Some(rel) = within(r.notify, bar, offset, width, u64::MAX) {
            Target::Notify(rel)
        } else if let Some(rel) = within(r.isr, bar, offset, width, u64::MAX) {
            Target::Isr(rel)
        } else if let Some(rel) = within(r.device, bar, offset, width, u64::MAX) {
            Target::Device(rel)
        } else {
            Target::Unbacked
        }
    }

    fn vector_accepted(&self, vector: u16) -> bool {
        vector == VIRTIO_MSI_NO_VECTOR
            || (self.msix_table_size.is_some_and(|size| vector < size)
                && !self.refused_vectors.contains(&vector))
    }

    fn selected(&mut self) -> Option<&mut FakeQueue> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    fn device_reset(&mut self) {
        self.status = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.config_msix_vector = VIRTIO_MSI_NO_VECTOR;
        self.queue_select = 0;
        self.queues.iter_mut().for_each(FakeQueue::reset);
        self.isr = 0;
        self.device_config.clone_from(&self.device_config_default);
    }

    fn write_status(&mut self, value: u8) {
        self.status_writes.push(value);
        if value == 0 {
            // A reset requested while one is still in progress does not restart it, and a
            // device whose status is already 0 has nothing stale to show.
            if self.stale_status_reads == 0 {
                self.stale_status = self.status;
                self.stale_status_reads = if self.status == 0 {
                    0
                } else {
                    self.reset_delay
                };
            }
            self.device_reset();
            return;
        }
        if self.stale_status_reads > 0 {
            self.stale_status_reads = 0;
            self.violation(
                self.regions.common.bar,
                Common::DEVICE_STATUS,
                1,
                "status written before the reset completed",
            );
        }
        let needs_reset = DeviceStatus::DEVICE_NEEDS_RESET.bits();
        let driver_bits = self.status & !needs_reset;
        if value & driver_bits != driver_bits {
            self.violation(
                self.regions.common.bar,
                Common::DEVICE_STATUS,
                1,
                "cleared a status bit",
            );
        }
        let features_ok = DeviceStatus::FEATURES_OK.bits();
        let mut new = value | (self.status & needs_reset);
        if value & features_ok != 0 && self.status & features_ok == 0 {
            let accepted = self.driver_features;
            let refused = self.refuse_features_ok
                || accepted & !self.device_features.bits() != 0
                || accepted & self.required_features.bits() != self.required_features.bits();
            if refused {
                new &= !features_ok;
            }
        }
        self.status = new;
    }

    fn read_status(&mut self) -> u8 {
        if self.stale_status_reads > 0 {
            self.stale_status_reads -= 1;
            return self.stale_status;
        }
        self.status
    }

    fn common_read(&mut self, rel: u64, width: u8) -> Option<u64> {
        let queue = self.selected().copied();
        let half = |value: u64, rel: u64, field: u64| {
            if rel == field {
                value & 0xFFFF_FFFF
            } else {
                value >> 32
            }
        };
        let value = match (rel, width) {
            (Common::DEVICE_FEATURE_SELECT, 4) => u64::from(self.device_feature_select),
            (Common::DEVICE_FEATURE, 4) => match self.device_feature_select {
                0 => self.device_features.bits() & 0xFFFF_FFFF,
                1 => self.device_features.bits() >> 32,
                _ => 0,
            },
            (Common::DRIVER_FEATURE_SELECT, 4) => u64::from(self.driver_feature_select),
            (Common::DRIVER_FEATURE, 4) => match self.driver_feature_select {
                0 => self.driver_features & 0xFFFF_FFFF,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            (Common::CONFIG_MSIX_VECTOR, 2) => u64::from(self.config_msix_vector),
            (Common::NUM_QUEUES, 2) => self.queues.len() as u64,
            (Common::DEVICE_STATUS, 1) => u64::from(self.read_status()),
            (Common::CONFIG_GENERATION, 1) => u64::from(self.generation),
            // `queue_notif_config_data` is the queue index, the trivial choice of section 4.1.4.3.
            (Common::QUEUE_SELECT | Common::QUEUE_NOTIF_CONFIG_DATA, 2) => {
                u64::from(self.queue_select)
            }
            (Common::QUEUE_SIZE, 2) => queue.map_or(0, |q| u64::from(q.size)),
            (Common::QUEUE_MSIX_VECTOR, 2) => queue.map_or(u64::from(VIRTIO_MSI_NO_VECTOR), |q| {
                u64::from(q.msix_vector)
            }),
            (Common::QUEUE_ENABLE, 2) => queue.map_or(0, |q| u64::from(q.enabled)),
            (Common::QUEUE_NOTIFY_OFF, 2) => queue.map_or(0, |q| u64::from(q.notify_off)),
            (Common::QUEUE_DESC | QUEUE_DESC_HI, 4) => {
                queue.map_or(0, |q| half(q.desc, rel, Common::QUEUE_DESC))
            }
            (Common::QUEUE_DRIVER | QUEUE_DRIVER_HI, 4) => {
                queue.map_or(0, |q| half(q.driver, rel, Common::QUEUE_DRIVER))
            }
            (Common::QUEUE_DEVICE | QUEUE_DEVICE_HI, 4) => {
                queue.map_or(0, |q| half(q.device, rel, Common::QUEUE_DEVICE))
            }
            (Common::QUEUE_RESET | Common::ADMIN_QUEUE_INDEX | Common::ADMIN_QUEUE_NUM, 2) => 0,
            _ => return None,
        };
        Some(value)
    }

    fn common_write(&mut self, rel: u64, width: u8, value: u64) -> Result<(), &'static str> {
        let features_ok = self.status & DeviceStatus::FEATURES_OK.bits() != 0;
        let set_half = |field: &mut u64, high: bool, value: u64| {
            *field = if high {
                (*field & 0xFFFF_FFFF) | (value << 32)
            } else {
                (*field & !0xFFFF_FFFF) | (value & 0xFFFF_FFFF)
            };
        };
        match (rel, width) {
            (Common::DEVICE_FEATURE_SELECT, 4) => self.device_feature_select = value as u32,
            (Common::DRIVER_FEATURE_SELECT, 4) => self.driver_feature_select = value as u32,
            (Common::DRIVER_FEATURE, 4) => {
                if features_ok {
                    return Err("driver features written after FEATURES_OK");
                }
                match self.driver_feature_select {
                    0 => set_half(&mut self.driver_features, false, value),
                    1 => set_half(&mut self.driver_features, true, value),
                    _ => {}
                }
            }
            (Common::CONFIG_MSIX_VECTOR, 2) => {
                let vector = value as u16;
                self.config_msix_vector = if self.vector_accepted(vector) {
                    vector
                } else {
                    VIRTIO_MSI_NO_VECTOR
                };
            }
            (Common::DEVICE_STATUS, 1) => self.write_status(value as u8),
            (Common::QUEUE_SELECT, 2) => self.queue_select = value as u16,
            (Common::QUEUE_SIZE, 2) => {
                let queue = self.selected().ok_or("queue_size of a missing queue")?;
                if value as u16 > queue.max_size {
                    return Err("queue_size above the maximum");
                }
                queue.size = value as u16;
            }
            (Common::QUEUE_MSIX_VECTOR, 2) => {
                let vector = value as u16;
                let accepted = self.vector_accepted(vector);
                let queue = self
                    .selected()
                    .ok_or("queue_msix_vector of a missing queue")?;
                queue.msix_vector = if accepted {
                    vector
                } else {
                    VIRTIO_MSI_NO_VECTOR
                };
            }
            (Common::QUEUE_ENABLE, 2) => {
                if value != 1 {
                    return Err("queue_enable written with a value other than 1");
                }
                self.selected()
                    .ok_or("queue_enable of a missing queue")?
                    .enabled = true;
            }
            (
                Common::QUEUE_DESC
                | QUEUE_DESC_HI
                | Common::QUEUE_DRIVER
                | QUEUE_DRIVER_HI
                | Common::QUEUE_DEVICE
                | QUEUE_DEVICE_HI,
                4,
            ) => {
                let queue = self.selected().ok_or("queue address of a missing queue")?;
                let high = rel % 8 == 4;
                let field = match rel & !7 {
                    Common::QUEUE_DESC => &mut queue.desc,
                    Common::QUEUE_DRIVER => &mut queue.driver,
                    _ => &mut queue.device,
                };
                set_half(field, high, value);
            }
            (Common::QUEUE_RESET, 2) => {}
            (
                Common::DEVICE_FEATURE
                | Common::NUM_QUEUES
                | Common::CONFIG_GENERATION
                | Common::QUEUE_NOTIFY_OFF
                | Common::QUEUE_NOTIF_CONFIG_DATA
                | Common::ADMIN_QUEUE_INDEX
                | Common::ADMIN_QUEUE_NUM,
                _,
            ) => return Err("write to a read-only field"),
            _ => return Err("access of the wrong width or misaligned"),
        }
        Ok(())
    }

    /// Whether an access of `width` bytes at `rel` in the device configuration covers one field
    /// at its natural width (see [`FakeVirtioPciBuilder::device_config_fields`](super::FakeVirtioPciBuilder::device_config_fields)).
    /// Bytes past every field (padding up to the structure's length) are not fields: reading
    /// them is not this rule's concern.
    fn device_access_is_one_field(&self, rel: u64, width: u8) -> bool {
        let end = rel + u64::from(width);
        let overlaps_a_field = self
            .device_config_fields
            .iter()
            .any(|field| rel < u64::from(field.end) && u64::from(field.start) < end);
        !overlaps_a_field
            || self.device_config_fields.iter().any(|field| {
                let (start, end) = (u64::from(field.start), u64::from(field.end));
                match end - start {
                    8 => width == 4 && (rel == start || rel == start + 4),
                    size => rel == start && u64::from(width) == size,
                }
            })
    }

    fn device_read(&mut self, rel: u64, width: u8) -> Option<u64> {
        if !rel.is_multiple_of(u64::from(width)) {
            return None;
        }
        if self.generation_bumps > 0 {
            self.generation_bumps -= 1;
            self.generation = self.generation.wrapping_add(1);
        }
        let mut bytes = [0u8; 8];
        let start = usize::try_from(rel).ok()?;
        for (i, byte) in bytes.iter_mut().take(usize::from(width)).enumerate() {
            *byte = self.device_config.get(start + i).copied().unwrap_or(0);
        }
        Some(u64::from_le_bytes(bytes))
    }

    fn device_write(&mut self, rel: u64, width: u8, value: u64) -> Result<(), &'static str> {
        if !rel.is_multiple_of(u64::from(width)) {
            return Err("misaligned device configuration write");
        }
        let writable = (0..u64::from(width)).all(|i| {
            let at = rel + i;
            self.device_config_writable
                .iter()
                .any(|r| u64::from(r.start) <= at && at < u64::from(r.end))
        });
        if !writable {
            return Err("write to a read-only device configuration byte");
        }
        for (i, byte) in value
            .to_le_bytes()
            .into_iter()
            .take(usize::from(width))
            .enumerate()
        {
            let at = usize::try_from(rel).map_err(|_| "offset overflow")? + i;
            if let Some(slot) = self.device_config.get_mut(at) {
                *slot = byte;
            }
        }
        Ok(())
    }

    pub(super) fn read(&mut self, bar: u8, offset: u64, width: u8) -> u64 {
        let all_ones = u64::MAX >> (64 - 8 * u32::from(width));
        let value = match self.target(bar, offset, width) {
            Target::Common(rel) => self.common_read(rel, width),
            Target::Isr(0) if width == 1 => Some(u64::from(core::mem::take(&mut self.isr))),
            Target::Device(rel) => {
                // A misaligned access is recorded below as such.
                if rel.is_multiple_of(u64::from(width))
                    && !self.device_access_is_one_field(rel, width)
                {
                    self.violation(bar, offset, width, MIXED_WIDTH_DEVICE_CONFIG);
                }
                self.device_read(rel, width)
            }
            // The ISR status is one byte; anything else in its region is undefined.
            Target::Isr(_) => None,
            Target::Notify(_) | Target::Unbacked => Some(0),
            Target::OutsideBar => {
                self.violation(bar, offset, width, "read outside a mapped BAR");
                return all_ones;
            }
        };
        value.unwrap_or_else(|| {
            self.violation(bar, offset, width, "read of the wrong width or misaligned");
            all_ones
        })
    }

    pub(super) fn write(&mut self, bar: u8, offset: u64, width: u8, value: u64) {
        let result = match self.target(bar, offset, width) {
            Target::Common(rel) => self.common_write(rel, width, value),
            Target::Notify(rel) => {
                self.notifications.push(NotifyWrite {
                    offset: rel,
                    width,
                    value,
                });
                Ok(())
            }
            Target::Device(rel) if !self.device_access_is_one_field(rel, width) => {
                Err(MIXED_WIDTH_DEVICE_CONFIG)
            }
            Target::Device(rel) => self.device_write(rel, width, value),
            Target::Isr(_) => Err("write to the ISR status"),
            Target::Unbacked => Err("write to an unbacked register"),
            Target::OutsideBar => Err("write outside a mapped BAR"),
        };
        if let Err(what) = result {
            self.violation(bar, offset, width, what);
        }
    }

    pub(super) fn config_byte(&self, offset: u16) -> u8 {
        self.config
            .get(usize::from(offset))
            .copied()
            .unwrap_or(0xFF)
    }
}
