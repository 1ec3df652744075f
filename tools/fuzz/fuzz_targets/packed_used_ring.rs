//! Fuzzes the packed ring's handling of everything the device writes (used descriptors with any
//! id, length and flags at any position, the device event suppression area) interleaved with
//! every driver operation.
#![no_main]

use std::sync::atomic::Ordering;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rvscsi_fuzz::ring::{self, DeviceSide, InFlight, Input};
use virtio_core::dma::DmaMemory;
use virtio_core::fake::FakeHal;
use virtio_core::hal::Hal;
use virtio_core::queue::packed::{PackedQueue, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED};
use virtio_core::queue::{QueueFeatures, Slot, Virtqueue};

/// Offsets inside `struct pvirtq_desc` (virtio 1.2 section 2.8.13).
const LEN: usize = 8;
const ID: usize = 12;
const FLAGS: usize = 14;

/// One device write.
#[derive(Arbitrary, Debug)]
enum Write {
    /// Used descriptor fields at ring `position % size`, anything at all.
    UsedDescriptor {
        position: u16,
        id: u16,
        len: u32,
        flags: u16,
    },
    /// The device event suppression structure (`desc`, `flags`).
    DeviceEvent { desc: u16, flags: u16 },
    /// A well-formed completion of an in-flight chain at the device's next used position with
    /// its wrap counter; `len` within the writable bytes posted when `honest`.
    Complete { pick: u16, len: u32, honest: bool },
}

/// The device: the ring, its next used position and wrap counter.
struct Device {
    ring: DmaMemory,
    size: u16,
    position: u16,
    wrap: bool,
    completed: Vec<(u16, u64)>,
}

impl Device {
    fn store_used(&self, position: u16, id: u16, len: u32, flags: u16) {
        let at = 16 * usize::from(position % self.size);
        self.ring.store_u32(at + LEN, len, Ordering::Relaxed);
        self.ring.store_u16(at + ID, id, Ordering::Relaxed);
        // ORDERING: Release pairs with the driver's Acquire load of the flags in pop_used
        // (virtio 1.2 section 2.8.6: id and len are visible before the USED flag).
        self.ring.store_u16(at + FLAGS, flags, Ordering::Release);
    }
}

impl DeviceSide for Device {
    type Write = Write;

    fn write(&mut self, write: &Write, in_flight: &InFlight) {
        match *write {
            Write::UsedDescriptor {
                position,
                id,
                len,
                flags,
            } => self.store_used(position, id, len, flags),
            Write::DeviceEvent { desc, flags } => {
                let at = 16 * usize::from(self.size) + 4;
                self.ring.store_u16(at, desc, Ordering::Relaxed);
                self.ring.store_u16(at + 2, flags, Ordering::Relaxed);
            }
            Write::Complete { pick, len, honest } => {
                if let Some((token, posted)) =
                    ring::pick_in_flight(in_flight, &self.completed, pick)
                {
                    let flags = if self.wrap {
                        VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED
                    } else {
                        0
                    };
                    let len = ring::completion_len(len, honest, &posted);
                    self.store_used(self.position, token, len, flags);
                    // The device skips the chain's other descriptors (section 2.8.5).
                    let next = u32::from(self.position) + u32::from(posted.descriptors);
                    if next >= u32::from(self.size) {
                        self.wrap = !self.wrap;
                    }
                    self.position = (next % u32::from(self.size)) as u16;
                    self.completed.push((token, posted.generation));
                }
            }
        }
    }

    fn reset(&mut self) {
        self.position = 0;
        self.wrap = true;
        self.completed.clear();
    }
}

fuzz_target!(|input: Input<Write>| {
    // Sizes 1 to 16, any value: the packed ring has no power-of-two rule.
    let size = u16::from(input.size % 16) + 1;
    let hal = FakeHal::new();
    let ring_len = PackedQueue::<Vec<Slot>>::ring_len(size);
    let memory = hal
        .dma_alloc(ring_len, PackedQueue::<Vec<Slot>>::RING_ALIGN)
        .unwrap();
    let features = QueueFeatures {
        event_idx: input.event_idx,
        indirect: input.indirect,
    };
    let mut queue = PackedQueue::new(
        0,
        size,
        memory,
        vec![Slot::EMPTY; usize::from(size)],
        features,
    )
    .unwrap();
    let ring = hal
        .memory_at(queue.addresses().descriptors, ring_len)
        .unwrap();
    let mut device = Device {
        ring,
        size,
        position: 0,
        wrap: true,
        completed: Vec::new(),
    };
    ring::run(&hal, &mut queue, &mut device, &input.steps);
});
