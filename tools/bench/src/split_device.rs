//! The split-ring device: rust-vmm's `virtio-queue`, driven the way QEMU drives a queue.
//!
//! It only runs when kicked (or while it is still draining), suppresses kicks while it works,
//! re-enables them when idle (which publishes `avail_event`), and raises an interrupt only when
//! `needs_notification` says so (`used_event` with EVENT_IDX). A driver that forgets a kick or an
//! interrupt re-check stalls here, and the benchmark reports it.

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use crate::memory::ram;

/// Bytes the device "writes" per request: the virtio-scsi response plus the 4 KiB of data.
pub const WRITTEN_PER_REQUEST: u32 = 108 + 4096;

/// The device side of one split virtqueue.
pub struct SplitDevice {
    queue: Queue,
    kicked: bool,
    /// Notifications (kicks) received.
    pub kicks: u64,
    /// Interrupts raised.
    pub interrupts: u64,
}

impl SplitDevice {
    /// Sets up the device side of a queue at the given ring addresses.
    pub fn new(size: u16, descriptors: u64, driver: u64, device: u64, event_idx: bool) -> Self {
        let mut queue = Queue::new(size).expect("queue size");
        queue.set_size(size);
        queue
            .try_set_desc_table_address(vm_memory::GuestAddress(descriptors))
            .expect("desc");
        queue
            .try_set_avail_ring_address(vm_memory::GuestAddress(driver))
            .expect("avail");
        queue
            .try_set_used_ring_address(vm_memory::GuestAddress(device))
            .expect("used");
        queue.set_event_idx(event_idx);
        queue.set_ready(true);
        Self {
            queue,
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

    /// Runs the device if it was kicked: drains every available chain, checking its shape, then
    /// re-enables notifications. Returns whether an interrupt is raised.
    pub fn process(&mut self) -> bool {
        if !self.kicked {
            return false;
        }
        self.kicked = false;
        let memory: &GuestMemoryMmap = &ram().memory;
        let mut completed = 0u32;
        loop {
            self.queue
                .disable_notification(memory)
                .expect("disable notification");
            while let Some(chain) = self.queue.pop_descriptor_chain(memory) {
                let head = chain.head_index();
                let writable: u32 = chain.clone().writable().map(|d| d.len()).sum();
                assert_eq!(writable, WRITTEN_PER_REQUEST, "writable part of the chain");
                let readable: u32 = chain.readable().map(|d| d.len()).sum();
                assert_eq!(readable, 51, "readable part: one virtio_scsi_cmd_req");
                self.queue
                    .add_used(memory, head, WRITTEN_PER_REQUEST)
                    .expect("add used");
                completed += 1;
            }
            if !self
                .queue
                .enable_notification(memory)
                .expect("enable notification")
            {
                break;
            }
        }
        let interrupt = completed > 0
            && self
                .queue
                .needs_notification(memory)
                .expect("needs notification");
        if interrupt {
            self.interrupts += 1;
        }
        interrupt
    }
}
