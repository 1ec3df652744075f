//! rvscsi's own WMI classes: per-queue counters (`Rvscsi_QueueStatistics`) and the limits
//! negotiated with the device (`Rvscsi_AdapterLimits`), so an administrator can read them with
//! `Get-CimInstance -Namespace root/wmi -ClassName Rvscsi_QueueStatistics`.
//!
//! The MOF source is `wmi/mof/rvscsi.mof`; its `WmiDataId` order and types must match the
//! encoders here, which the tests in this module check against the MOF text itself. The GUIDs
//! were generated once for rvscsi (random, version 4) and must never change.

use crate::encode::Encoder;
use crate::guid::Guid;

/// `Rvscsi_QueueStatistics`: {915F210C-F859-4179-A298-53324462913F}.
pub const RVSCSI_QUEUE_STATISTICS_GUID: Guid = Guid::from_fields(
    0x915f_210c,
    0xf859,
    0x4179,
    [0xa2, 0x98, 0x53, 0x32, 0x44, 0x62, 0x91, 0x3f],
);

/// `Rvscsi_AdapterLimits`: {128DB6CA-FB35-4DDB-905A-0BFE6152E94C}.
pub const RVSCSI_ADAPTER_LIMITS_GUID: Guid = Guid::from_fields(
    0x128d_b6ca,
    0xfb35,
    0x4ddb,
    [0x90, 0x5a, 0x0b, 0xfe, 0x61, 0x52, 0xe9, 0x4c],
);

/// Data items of `Rvscsi_QueueStatistics`.
pub const QUEUE_STATISTICS_ITEMS: u32 = 7;
/// Encoded size of one `Rvscsi_QueueStatistics` instance.
pub const QUEUE_STATISTICS_SIZE: usize = 48;
/// Data items of `Rvscsi_AdapterLimits`.
pub const ADAPTER_LIMITS_ITEMS: u32 = 14;
/// Encoded size of `Rvscsi_AdapterLimits`.
pub const ADAPTER_LIMITS_SIZE: usize = 51;

/// Counters of one request queue (one `Rvscsi_QueueStatistics` instance).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStatistics {
    /// Index of the request queue (0-based, not counting the control and event queues).
    pub queue_index: u32,
    /// Size of the virtqueue, in descriptors.
    pub queue_size: u32,
    /// Requests submitted.
    pub requests: u64,
    /// Device notifications (kicks) sent.
    pub kicks: u64,
    /// Interrupts (MSI-X messages) handled.
    pub interrupts: u64,
    /// Times the queue was full and a request had to wait (`StorPort` busy).
    pub queue_full: u64,
    /// Resets that affected the queue.
    pub resets: u64,
}

impl QueueStatistics {
    /// Writes the instance: `uint32` index and size, then five `uint64` counters.
    pub fn encode(&self, out: &mut Encoder<'_>) {
        out.u32(self.queue_index);
        out.u32(self.queue_size);
        out.u64(self.requests);
        out.u64(self.kicks);
        out.u64(self.interrupts);
        out.u64(self.queue_full);
        out.u64(self.resets);
    }
}

/// What was negotiated with the device (the `Rvscsi_AdapterLimits` instance).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdapterLimits {
    /// Request queues in use.
    pub request_queues: u32,
    /// Size of each request virtqueue.
    pub queue_size: u32,
    /// `seg_max` from the device configuration.
    pub seg_max: u32,
    /// `max_sectors` from the device configuration.
    pub max_sectors: u32,
    /// `cmd_per_lun` from the device configuration.
    pub cmd_per_lun: u32,
    /// `max_channel` from the device configuration.
    pub max_channel: u32,
    /// `max_target` from the device configuration.
    pub max_target: u32,
    /// `max_lun` from the device configuration.
    pub max_lun: u32,
    /// Maximum transfer length reported to `StorPort`, in bytes.
    pub max_transfer_length: u32,
    /// Scatter/gather elements per request reported to `StorPort`.
    pub physical_breaks: u32,
    /// Negotiated virtio feature bits.
    pub features: u64,
    /// The packed ring is in use (else the split ring).
    pub packed_ring: bool,
    /// Indirect descriptors are in use.
    pub indirect_descriptors: bool,
    /// Event index notification suppression is in use.
    pub event_index: bool,
}

impl AdapterLimits {
    /// Writes the instance: ten `uint32`, one `uint64`, three `boolean`.
    pub fn encode(&self, out: &mut Encoder<'_>) {
        for value in [
            self.request_queues,
            self.queue_size,
            self.seg_max,
            self.max_sectors,
            self.cmd_per_lun,
            self.max_channel,
            self.max_target,
            self.max_lun,
            self.max_transfer_length,
            self.physical_breaks,
        ] {
            out.u32(value);
        }
        out.u64(self.features);
        out.bool(self.packed_ring);
        out.bool(self.indirect_descriptors);
        out.bool(self.event_index);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::String;
    use std::vec::Vec;

    use super::*;

    const MOF: &str = include_str!("../../mof/rvscsi.mof");

    /// The `(WmiDataId, type, name)` items of `class` in the MOF source.
    fn mof_items(class: &str) -> Vec<(u32, String, String)> {
        let start = MOF
            .find(&std::format!("class {class}"))
            .expect("class in MOF");
        let body = &MOF[start..];
        let body = &body[..body.find("};").expect("class end")];
        let mut items = Vec::new();
        for line in body.lines() {
            let line = line.trim();
            let Some(id_start) = line.find("WmiDataId(") else {
                continue;
            };
            let id_text = &line[id_start + 10..];
            let id: u32 = id_text[..id_text.find(')').unwrap()].parse().unwrap();
            let declaration = line[line.rfind(']').unwrap() + 1..]
                .trim()
                .trim_end_matches(';');
            let mut words = declaration.split_whitespace();
            let ty = words.next().unwrap().into();
            let name = words.next().unwrap().into();
            items.push((id, ty, name));
        }
        items
    }

    fn guid_qualifier(class: &str) -> String {
        let end = MOF.find(&std::format!("class {class}")).unwrap();
        let head = &MOF[..end];
        let start = head.rfind("guid(\"{").unwrap() + 7;
        head[start..start + 36].into()
    }

    #[test]
    fn mof_matches_queue_statistics_encoding() {
        let items = mof_items("Rvscsi_QueueStatistics");
        let expected = [
            "uint32 QueueIndex",
            "uint32 QueueSize",
            "uint64 Requests",
            "uint64 Kicks",
            "uint64 Interrupts",
            "uint64 QueueFull",
            "uint64 Resets",
        ];
        assert_eq!(items.len(), expected.len());
        assert_eq!(items.len() as u32, QUEUE_STATISTICS_ITEMS);
        for (index, ((id, ty, name), want)) in items.iter().zip(expected).enumerate() {
            assert_eq!(*id as usize, index + 1);
            assert_eq!(std::format!("{ty} {name}"), want);
        }
        assert_eq!(
            guid_qualifier("Rvscsi_QueueStatistics"),
            "915F210C-F859-4179-A298-53324462913F"
        );

        let stats = QueueStatistics {
            queue_index: 3,
            queue_size: 256,
            requests: 1,
            kicks: 2,
            interrupts: 3,
            queue_full: 4,
            resets: 5,
        };
        let mut buf = [0u8; 64];
        let mut out = Encoder::new(&mut buf);
        stats.encode(&mut out);
        assert_eq!(out.finish(), Ok(QUEUE_STATISTICS_SIZE));
        let mut expected = [0u8; 48];
        expected[0] = 3;
        expected[4..6].copy_from_slice(&256u16.to_le_bytes());
        for (i, value) in [1u8, 2, 3, 4, 5].into_iter().enumerate() {
            expected[8 + 8 * i] = value;
        }
        assert_eq!(&buf[..48], &expected);
    }

    #[test]
    fn mof_matches_adapter_limits_encoding() {
        let items = mof_items("Rvscsi_AdapterLimits");
        assert_eq!(items.len() as u32, ADAPTER_LIMITS_ITEMS);
        let types: Vec<&str> = items.iter().map(|(_, ty, _)| ty.as_str()).collect();
        let mut expected = std::vec!["uint32"; 10];
        expected.extend(["uint64", "boolean", "boolean", "boolean"]);
        assert_eq!(types, expected);
        assert!(
            items
                .iter()
                .enumerate()
                .all(|(i, (id, _, _))| *id as usize == i + 1)
        );
        assert_eq!(
            guid_qualifier("Rvscsi_AdapterLimits"),
            "128DB6CA-FB35-4DDB-905A-0BFE6152E94C"
        );

        let limits = AdapterLimits {
            request_queues: 4,
            queue_size: 256,
            seg_max: 254,
            max_sectors: 0xFFFF,
            cmd_per_lun: 128,
            max_channel: 0,
            max_target: 255,
            max_lun: 16383,
            max_transfer_length: 0x0010_0000,
            physical_breaks: 254,
            features: 0x0000_0001_3000_0006,
            packed_ring: false,
            indirect_descriptors: true,
            event_index: true,
        };
        let mut buf = [0xAAu8; 64];
        let mut out = Encoder::new(&mut buf);
        limits.encode(&mut out);
        assert_eq!(out.finish(), Ok(ADAPTER_LIMITS_SIZE));
        // Offsets from the MOF item list: ten uint32 at 0..40, the uint64 at 40, booleans 48..51.
        assert_eq!(&buf[0..4], &[4, 0, 0, 0]);
        assert_eq!(&buf[28..32], &[0xFF, 0x3F, 0, 0]);
        assert_eq!(&buf[36..40], &[254, 0, 0, 0]);
        assert_eq!(&buf[40..48], &[6, 0, 0, 0x30, 1, 0, 0, 0]);
        assert_eq!(&buf[48..51], &[0, 1, 1]);
    }
}
