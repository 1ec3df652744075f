//! Per-queue and adapter-wide counters, readable from a crash dump and through WMI.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

/// Per-queue counters, readable from a crash dump and (later) through WMI; each queue's alone
/// on its cache lines (`crate::adapter::CACHE_LINE`), as every I/O of the queue writes them.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct QueueCounters {
    /// Requests submitted.
    pub requests: AtomicU64,
    /// Device notifications (kicks).
    pub kicks: AtomicU64,
    /// Interrupts taken for the queue.
    pub interrupts: AtomicU64,
    /// Requests completed with SRB_STATUS_BUSY because the ring was full.
    pub queue_full: AtomicU64,
    /// Requests completed.
    pub completions: AtomicU64,
    /// Completed requests that read data from the device.
    pub reads: AtomicU64,
    /// Completed requests that wrote data to the device.
    pub writes: AtomicU64,
    /// Bytes read (as completed: the device's residual taken off).
    pub bytes_read: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
}

/// Adapter-wide recovery and lifecycle counters, readable from a crash dump (task management
/// has its own, [`crate::recovery::tmf::TmfCounters`]).
#[derive(Debug, Default)]
pub struct RecoveryCounters {
    /// Times the device reported `DEVICE_NEEDS_RESET` (each leads to a full reset).
    pub needs_reset: AtomicU64,
    /// Times the health timer found a queue whose completions had waited a whole period for
    /// an interrupt, and drained it.
    pub lost_interrupts: AtomicU64,
    /// HwResetBus calls (and `SRB_FUNCTION_RESET_BUS` requests).
    pub bus_resets: AtomicU64,
    /// Of `bus_resets`: polling the queues completed everything, no function was needed.
    pub bus_resets_polled: AtomicU64,
    /// ScsiStopAdapter calls.
    pub stops: AtomicU64,
    /// ScsiRestartAdapter calls that brought the device back.
    pub restarts: AtomicU64,
    /// Resets or restarts after which the device could not be brought back (it is failed).
    pub bring_up_failures: AtomicU64,
    /// Requests refused with `SRB_STATUS_BUSY` because the adapter was stopped.
    pub busy_while_stopped: AtomicU64,
}

impl QueueCounters {
    /// Counts a completed request ([`Self::completions`]) that moved `bytes` in `direction`
    /// ([`Self::record_transfer`]).
    #[inline]
    pub fn record_completion(&self, direction: virtio_core::scsi::DataDirection, bytes: u32) {
        self.completions.fetch_add(1, Ordering::Relaxed);
        self.record_transfer(direction, bytes);
    }

    /// Counts a completed request that moved `bytes` in `direction`.
    pub fn record_transfer(&self, direction: virtio_core::scsi::DataDirection, bytes: u32) {
        use virtio_core::scsi::DataDirection;
        let (requests, total) = match direction {
            DataDirection::FromDevice => (&self.reads, &self.bytes_read),
            DataDirection::ToDevice => (&self.writes, &self.bytes_written),
            DataDirection::None | DataDirection::Bidirectional => return,
        };
        requests.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(u64::from(bytes), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use virtio_core::scsi::DataDirection;

    use super::*;

    #[test]
    fn a_completion_is_counted_once_with_its_transfer_by_direction() {
        let counters = QueueCounters::default();
        counters.record_completion(DataDirection::FromDevice, 4096);
        counters.record_completion(DataDirection::ToDevice, 512);
        counters.record_completion(DataDirection::None, 0);
        counters.record_completion(DataDirection::FromDevice, 0);
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        assert_eq!(load(&counters.completions), 4);
        assert_eq!(load(&counters.reads), 2);
        assert_eq!(load(&counters.bytes_read), 4096);
        assert_eq!(load(&counters.writes), 1);
        assert_eq!(load(&counters.bytes_written), 512);
        assert_eq!(load(&counters.requests), 0);
    }
}
