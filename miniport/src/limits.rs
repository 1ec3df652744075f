//! What the adapter tells StorPort it can do, derived from the device's limits and ring sizes.
//!
//! One pure function, [`StorLimits::derive`], so the transfer limits, the SRB extension size
//! and the queue depth reported to StorPort always agree with what the rings can carry.
#![forbid(unsafe_code)]

use virtio_core::scsi::Limits;

use crate::sizing::{HEADER_DESCRIPTORS, MAX_DATA_SEGMENTS, PAGE_SIZE};
use crate::srb_extension::RequestLayout;

/// Limits reported to StorPort in `PORT_CONFIGURATION_INFORMATION`, all derived together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorLimits {
    /// Data segments one SRB may carry (`NumberOfPhysicalBreaks + 1`); an SRB whose
    /// scatter/gather list is longer is refused, never overflowed.
    pub max_segments: u32,
    /// `MaximumTransferLength` in bytes: the largest transfer that needs at most
    /// [`Self::max_segments`] pages whatever its alignment, and no more than the device's
    /// `max_sectors`.
    pub max_transfer_length: u32,
    /// `NumberOfPhysicalBreaks`: [`Self::max_segments`] - 1 (WDK: "the number of
    /// scatter/gather elements minus one").
    pub physical_breaks: u32,
    /// Requests one request queue holds at once: its size with indirect descriptors (one ring
    /// descriptor per request), otherwise the number of one-segment requests (three
    /// descriptors each) that fit.
    pub depth_per_queue: u32,
    /// `MaxNumberOfIO`: depth per queue times the request queues.
    pub max_ios: u32,
    /// `MaxIOsPerLun` and `InitialLunQueueDepth`: the device's `cmd_per_lun`, capped by
    /// [`Self::max_ios`].
    pub ios_per_lun: u32,
    /// Where each part of a request lives in the SRB extension.
    pub request: RequestLayout,
}

/// Why the device's limits cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitsError {
    /// A request queue is smaller than a request with one data segment needs.
    QueueTooSmall {
        /// The queue size.
        size: u16,
    },
}

impl core::fmt::Display for LimitsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::QueueTooSmall { size } => write!(
                f,
                "request queue of {size} descriptors is too small for one request"
            ),
        }
    }
}

impl StorLimits {
    /// Derives the limits for `request_queues` request queues of `queue_size` entries each
    /// (the smallest if they differ), with indirect descriptors if `indirect`.
    ///
    /// # Errors
    /// [`LimitsError`] if a queue cannot carry even a one-segment request.
    pub fn derive(
        device: &Limits,
        queue_size: u16,
        request_queues: u16,
        indirect: bool,
    ) -> Result<Self, LimitsError> {
        let size = u32::from(queue_size);
        // virtio 1.x section 2.7.5.3.1: no chain (indirect ones included) may be longer than
        // the queue size, so the data segments are bounded by it as well as by seg_max.
        let Some(ring_bound) = size.checked_sub(HEADER_DESCRIPTORS).filter(|&n| n >= 1) else {
            return Err(LimitsError::QueueTooSmall { size: queue_size });
        };
        let mut max_segments = device.seg_max.min(ring_bound).min(MAX_DATA_SEGMENTS);
        if let Some(sectors) = device.max_sectors {
            // virtio-scsi calls max_sectors a hint; Linux drives devices whatever its value, and
            // so do we: a device below one page gets transfers of that size, which StorPort's
            // class drivers split requests into. A transfer of `bytes` at the worst offset
            // spans `pages_spanned(bytes)` pages; more segments than that are never needed.
            let pages = pages_spanned(u64::from(sectors) * 512);
            max_segments = max_segments.min(u32::try_from(pages).unwrap_or(u32::MAX));
        }
        // With one segment only a page-aligned page fits; with n segments any buffer of
        // (n - 1) pages fits whatever its offset.
        let by_segments = if max_segments == 1 {
            PAGE_SIZE
        } else {
            (max_segments - 1) * PAGE_SIZE
        };
        let by_sectors = device
            .max_sectors
            .map_or(u64::MAX, |sectors| u64::from(sectors) * 512);
        let max_transfer_length =
            u32::try_from(u64::from(by_segments).min(by_sectors)).unwrap_or(u32::MAX);
        let depth_per_queue = if indirect {
            size
        } else {
            (size / (HEADER_DESCRIPTORS + 1)).max(1)
        };
        let max_ios = depth_per_queue.saturating_mul(u32::from(request_queues.max(1)));
        Ok(Self {
            max_segments,
            max_transfer_length,
            physical_breaks: max_segments - 1,
            depth_per_queue,
            max_ios,
            ios_per_lun: device.cmd_per_lun.min(max_ios).max(1),
            request: RequestLayout::new(max_segments),
        })
    }
}

/// The most pages a buffer of `bytes` (at least 1) can touch, whatever its offset in its first
/// page: its last byte lies at most `PAGE_SIZE - 1 + bytes - 1` bytes past that page's start.
const fn pages_spanned(bytes: u64) -> u64 {
    (bytes.saturating_add(PAGE_SIZE as u64 - 2)) / PAGE_SIZE as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu(seg_max: u32, max_sectors: Option<u32>) -> Limits {
        Limits {
            num_queues: 4,
            seg_max,
            max_sectors,
            cmd_per_lun: 128,
            max_target: 255,
            max_lun: 16383,
        }
    }

    #[test]
    fn qemu_defaults_give_254_segments_and_a_253_page_transfer() {
        let limits = StorLimits::derive(&qemu(254, Some(0xFFFF)), 256, 4, true).unwrap();
        assert_eq!(limits.max_segments, 254);
        assert_eq!(limits.physical_breaks, 253);
        assert_eq!(limits.max_transfer_length, 253 * 4096);
        assert_eq!(limits.depth_per_queue, 256);
        assert_eq!(limits.max_ios, 1024);
        assert_eq!(limits.ios_per_lun, 128);
    }

    #[test]
    fn the_ring_bounds_segments_when_seg_max_is_larger() {
        let limits = StorLimits::derive(&qemu(4096, None), 128, 1, true).unwrap();
        assert_eq!(limits.max_segments, 126);
        assert_eq!(limits.max_transfer_length, 125 * 4096);
    }

    #[test]
    fn our_cap_bounds_segments_on_huge_rings() {
        let limits = StorLimits::derive(&qemu(u32::MAX, None), 1024, 1, true).unwrap();
        assert_eq!(limits.max_segments, MAX_DATA_SEGMENTS);
        assert_eq!(limits.max_transfer_length, (MAX_DATA_SEGMENTS - 1) * 4096);
    }

    #[test]
    fn max_sectors_bounds_the_transfer_and_the_segments() {
        // 64 KiB: at most 17 pages for an unaligned 64 KiB buffer.
        let limits = StorLimits::derive(&qemu(254, Some(128)), 256, 1, true).unwrap();
        assert_eq!(limits.max_transfer_length, 65536);
        assert_eq!(limits.max_segments, 17);
        assert_eq!(limits.physical_breaks, 16);
    }

    #[test]
    fn without_indirect_the_depth_counts_three_descriptors_per_request() {
        let limits = StorLimits::derive(&qemu(254, None), 256, 2, false).unwrap();
        assert_eq!(limits.depth_per_queue, 85);
        assert_eq!(limits.max_ios, 170);
        assert_eq!(limits.ios_per_lun, 128);
    }

    #[test]
    fn cmd_per_lun_is_capped_by_what_the_rings_hold() {
        let mut device = qemu(254, None);
        device.cmd_per_lun = 100_000;
        let limits = StorLimits::derive(&device, 64, 2, true).unwrap();
        assert_eq!(limits.ios_per_lun, 128);
    }

    #[test]
    fn single_segment_devices_still_carry_one_aligned_page() {
        let limits = StorLimits::derive(&qemu(1, None), 256, 1, true).unwrap();
        assert_eq!(limits.max_segments, 1);
        assert_eq!(limits.physical_breaks, 0);
        assert_eq!(limits.max_transfer_length, 4096);
    }

    #[test]
    fn unusable_devices_are_refused() {
        assert_eq!(
            StorLimits::derive(&qemu(254, None), 2, 1, true),
            Err(LimitsError::QueueTooSmall { size: 2 })
        );
    }

    #[test]
    fn max_sectors_below_a_page_is_driven_with_transfers_of_that_size() {
        // 4 sectors: 2 KiB transfers, which can straddle a page boundary, so two segments.
        let limits = StorLimits::derive(&qemu(254, Some(4)), 256, 1, true).unwrap();
        assert_eq!(limits.max_transfer_length, 2048);
        assert_eq!(limits.max_segments, 2);
        assert_eq!(limits.physical_breaks, 1);
        // One sector: 512-byte transfers.
        let limits = StorLimits::derive(&qemu(254, Some(1)), 256, 1, false).unwrap();
        assert_eq!(limits.max_transfer_length, 512);
        assert_eq!(limits.max_segments, 2);
        // A one-segment device with a sub-page limit: one segment, the sector limit.
        let limits = StorLimits::derive(&qemu(1, Some(4)), 256, 1, true).unwrap();
        assert_eq!(limits.max_segments, 1);
        assert_eq!(limits.max_transfer_length, 2048);
    }

    #[test]
    // 50 million steps of plain arithmetic: no unsafe code for Miri to check, hours to interpret.
    #[cfg_attr(miri, ignore)]
    fn pages_spanned_is_the_worst_offset() {
        assert_eq!(pages_spanned(1), 1);
        assert_eq!(pages_spanned(2), 2);
        assert_eq!(pages_spanned(4096), 2);
        assert_eq!(pages_spanned(4097), 2);
        assert_eq!(pages_spanned(4098), 3);
        assert_eq!(pages_spanned(65536), 17);
        // By brute force over every offset for small sizes.
        for bytes in 1..=3 * 4096u64 {
            let worst = (0..4096u64)
                .map(|offset| (offset + bytes - 1) / 4096 + 1)
                .max()
                .unwrap();
            assert_eq!(pages_spanned(bytes), worst, "{bytes}");
        }
    }
}
