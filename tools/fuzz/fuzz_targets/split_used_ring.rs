//! Fuzzes the split ring's handling of everything the device writes (used ring entries,
//! `used.idx`, `used.flags`, `avail_event`) interleaved with every driver operation.
#![no_main]

use std::sync::atomic::Ordering;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rvscsi_fuzz::ring::{self, DeviceSide, InFlight, Input};
use virtio_core::dma::DmaMemory;
use virtio_core::fake::FakeHal;
use virtio_core::hal::Hal;
use virtio_core::queue::split::{SplitLayout, SplitQueue};
use virtio_core::queue::{QueueFeatures, Slot, Virtqueue};

/// One device write into the used ring area.
#[derive(Arbitrary, Debug)]
enum Write {
    /// `used.ring[position % size] = { id, len }`, without publishing it.
    UsedElement { position: u16, id: u32, len: u32 },
    /// `used.idx = value`.
    UsedIdx(u16),
    /// `used.idx += by`.
    UsedIdxAdvance(u8),
    /// `used.flags = value` (VIRTQ_USED_F_NO_NOTIFY and reserved bits).
    UsedFlags(u16),
    /// `avail_event = value`.
    AvailEvent(u16),
    /// A well-formed completion of an in-flight chain: element at `used.idx`, then
    /// `used.idx += 1`; `len` within the writable bytes posted when `honest`.
    Complete { pick: u16, len: u32, honest: bool },
}

/// The device: the whole ring as the device sees it through the fake bus.
struct Device {
    ring: DmaMemory,
    layout: SplitLayout,
    completed: Vec<(u16, u64)>,
}

impl Device {
    fn used_idx(&self) -> u16 {
        self.ring
            .load_u16(self.layout.used_idx(), Ordering::Acquire)
    }

    fn set_used_idx(&self, value: u16) {
        // ORDERING: Release pairs with the driver's Acquire load of used.idx in pop_used
        // (virtio 1.2 section 2.7.8: the element is visible before the index).
        self.ring
            .store_u16(self.layout.used_idx(), value, Ordering::Release);
    }

    fn store_element(&self, position: u16, id: u32, len: u32) {
        let at = self.layout.used_ring(position % self.layout.size());
        self.ring.store_u32(at, id, Ordering::Relaxed);
        self.ring.store_u32(at + 4, len, Ordering::Relaxed);
    }
}

impl DeviceSide for Device {
    type Write = Write;

    fn write(&mut self, write: &Write, in_flight: &InFlight) {
        match *write {
            Write::UsedElement { position, id, len } => self.store_element(position, id, len),
            Write::UsedIdx(value) => self.set_used_idx(value),
            Write::UsedIdxAdvance(by) => {
                self.set_used_idx(self.used_idx().wrapping_add(u16::from(by)));
            }
            Write::UsedFlags(value) => {
                self.ring
                    .store_u16(self.layout.used_flags(), value, Ordering::Relaxed);
            }
            Write::AvailEvent(value) => {
                self.ring
                    .store_u16(self.layout.avail_event(), value, Ordering::Relaxed);
            }
            Write::Complete { pick, len, honest } => {
                if let Some((token, posted)) =
                    ring::pick_in_flight(in_flight, &self.completed, pick)
                {
                    let idx = self.used_idx();
                    self.store_element(
                        idx,
                        u32::from(token),
                        ring::completion_len(len, honest, &posted),
                    );
                    self.set_used_idx(idx.wrapping_add(1));
                    self.completed.push((token, posted.generation));
                }
            }
        }
    }

    fn reset(&mut self) {
        self.completed.clear();
    }
}

fuzz_target!(|input: Input<Write>| {
    // Sizes 1 to 16, powers of two: small rings wrap often and fill up quickly.
    let size = 1u16 << (input.size % 5);
    let hal = FakeHal::new();
    let ring_len = SplitQueue::<Vec<Slot>>::ring_len(size);
    let memory = hal
        .dma_alloc(ring_len, SplitQueue::<Vec<Slot>>::RING_ALIGN)
        .unwrap();
    let features = QueueFeatures {
        event_idx: input.event_idx,
        indirect: input.indirect,
    };
    let mut queue = SplitQueue::new(
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
        layout: queue.layout(),
        completed: Vec::new(),
    };
    ring::run(&hal, &mut queue, &mut device, &input.steps);
});
