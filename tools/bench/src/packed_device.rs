//! The packed-ring device for the benchmark, written from the spec's device-side rules
//! (virtio 1.x section 2.8), since rust-vmm's `virtio-queue` has no packed queue.
//!
//! Like [`crate::split_device`], it runs only when kicked, disables kicks while draining,
//! re-enables them with a descriptor event (EVENT_IDX) or plain enable when idle, and interrupts
//! only when the driver's event suppression structure asks for it.

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::memory::ram;
use crate::split_device::WRITTEN_PER_REQUEST;

const AVAIL: u16 = 1 << 7;
const USED: u16 = 1 << 15;
const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;
const EVENT_ENABLE: u16 = 0;
const EVENT_DISABLE: u16 = 1;
const EVENT_DESC: u16 = 2;

/// The device side of one packed virtqueue.
#[expect(
    clippy::struct_excessive_bools,
    reason = "distinct spec state: two wrap counters, a negotiated feature, a pending kick"
)]
pub struct PackedDevice {
    size: u16,
    ring: u64,
    driver_event: u64,
    device_event: u64,
    event_idx: bool,
    next_avail: u16,
    avail_wrap: bool,
    next_used: u16,
    used_wrap: bool,
    /// Used position (as a free-running u16 of descriptors) at the last interrupt.
    signalled_used: u16,
    /// Free-running count of used descriptor positions advanced.
    used_counter: u16,
    kicked: bool,
    /// Notifications (kicks) received.
    pub kicks: u64,
    /// Interrupts raised.
    pub interrupts: u64,
}

fn mem() -> &'static GuestMemoryMmap {
    &ram().memory
}

fn load16(address: u64, order: Ordering) -> u16 {
    mem()
        .load::<u16>(GuestAddress(address), order)
        .expect("guest load")
}

fn store16(address: u64, value: u16, order: Ordering) {
    mem()
        .store::<u16>(value, GuestAddress(address), order)
        .expect("guest store");
}

impl PackedDevice {
    /// The device side of a packed queue whose areas start at the given guest addresses.
    pub fn new(
        size: u16,
        ring: u64,
        driver_event: u64,
        device_event: u64,
        event_idx: bool,
    ) -> Self {
        Self {
            size,
            ring,
            driver_event,
            device_event,
            event_idx,
            next_avail: 0,
            avail_wrap: true,
            next_used: 0,
            used_wrap: true,
            signalled_used: 0,
            used_counter: 0,
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

    fn descriptor(&self, position: u16) -> u64 {
        self.ring + u64::from(position) * 16
    }

    fn is_available(&self, flags: u16) -> bool {
        (flags & AVAIL != 0) == self.avail_wrap && (flags & USED != 0) != self.avail_wrap
    }

    /// Takes the chain at `next_avail`, if one is available: returns (buffer id, ring
    /// descriptors it occupies), after checking its shape.
    fn take_chain(&mut self) -> Option<(u16, u16)> {
        let first = self.descriptor(self.next_avail);
        // ORDERING: acquire on the first descriptor's flags pairs with the driver's release
        // store of them, which it makes last (section 2.8.21), so the rest of the chain is
        // visible once we see them.
        let flags = load16(first + 14, Ordering::Acquire);
        if !self.is_available(flags) {
            return None;
        }
        let mut readable = 0u32;
        let mut writable = 0u32;
        let mut count = 0u16;
        let mut id;
        loop {
            let address = self.descriptor(self.next_avail);
            let flags = load16(address + 14, Ordering::Relaxed);
            let len: u32 = mem().read_obj(GuestAddress(address + 8)).expect("len");
            id = load16(address + 12, Ordering::Relaxed);
            if flags & INDIRECT != 0 {
                let table: u64 = mem().read_obj(GuestAddress(address)).expect("addr");
                for entry in 0..u64::from(len / 16) {
                    let e = table + entry * 16;
                    let entry_flags = load16(e + 14, Ordering::Relaxed);
                    let entry_len: u32 = mem().read_obj(GuestAddress(e + 8)).expect("len");
                    if entry_flags & WRITE != 0 {
                        writable += entry_len;
                    } else {
                        readable += entry_len;
                    }
                }
            } else if flags & WRITE != 0 {
                writable += len;
            } else {
                readable += len;
            }
            count += 1;
            self.next_avail += 1;
            if self.next_avail == self.size {
                self.next_avail = 0;
                self.avail_wrap = !self.avail_wrap;
            }
            if flags & NEXT == 0 {
                break;
            }
        }
        assert_eq!(readable, 51, "readable part: one virtio_scsi_cmd_req");
        assert_eq!(writable, WRITTEN_PER_REQUEST, "writable part of the chain");
        Some((id, count))
    }

    fn put_used(&mut self, id: u16, count: u16) {
        let address = self.descriptor(self.next_used);
        store16(address + 12, id, Ordering::Relaxed);
        mem()
            .write_obj(WRITTEN_PER_REQUEST, GuestAddress(address + 8))
            .expect("len");
        let flags = if self.used_wrap { AVAIL | USED } else { 0 };
        // ORDERING: release publishes id and len before the flags that make the element used
        // (section 2.8.21); pairs with the driver's acquire load of the flags.
        store16(address + 14, flags, Ordering::Release);
        self.next_used += count;
        self.used_counter = self.used_counter.wrapping_add(count);
        if self.next_used >= self.size {
            self.next_used -= self.size;
            self.used_wrap = !self.used_wrap;
        }
    }

    fn enable_kicks(&self) {
        if self.event_idx {
            let off_wrap = self.next_avail | (u16::from(self.avail_wrap) << 15);
            store16(self.device_event, off_wrap, Ordering::Relaxed);
            store16(self.device_event + 2, EVENT_DESC, Ordering::Release);
        } else {
            store16(self.device_event + 2, EVENT_ENABLE, Ordering::Release);
        }
    }

    /// Whether the driver asked for an interrupt for the used descriptors written since the
    /// last one (its driver event suppression structure).
    fn driver_wants_interrupt(&self) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        let flags = load16(self.driver_event + 2, Ordering::Acquire);
        match flags {
            EVENT_DISABLE => false,
            EVENT_DESC if self.event_idx => {
                let off_wrap = load16(self.driver_event, Ordering::Relaxed);
                let wrap = off_wrap & 0x8000 != 0;
                let mut event = off_wrap & 0x7fff;
                // Convert the (offset, wrap) event to the same free-running space as
                // `used_counter`: positions are counted from the current lap.
                let lap_start = self.used_counter.wrapping_sub(self.next_used);
                event = lap_start.wrapping_add(event);
                if wrap != self.used_wrap {
                    event = event.wrapping_sub(self.size);
                }
                virtio_core::queue::need_event(event, self.used_counter, self.signalled_used)
            }
            _ => true,
        }
    }

    /// Runs the device if it was kicked. Returns whether an interrupt is raised.
    pub fn process(&mut self) -> bool {
        if !self.kicked {
            return false;
        }
        self.kicked = false;
        let mut completed = 0;
        loop {
            store16(self.device_event + 2, EVENT_DISABLE, Ordering::Relaxed);
            while let Some((id, count)) = self.take_chain() {
                self.put_used(id, count);
                completed += 1;
            }
            self.enable_kicks();
            // ORDERING: the re-check after re-enabling pairs with the driver's full fence
            // between publishing a chain and reading our event structure: one of us sees the
            // other's write, so no chain is left without a kick.
            std::sync::atomic::fence(Ordering::SeqCst);
            let flags = load16(self.descriptor(self.next_avail) + 14, Ordering::Acquire);
            if !self.is_available(flags) {
                break;
            }
        }
        let interrupt = completed > 0 && self.driver_wants_interrupt();
        if interrupt {
            self.signalled_used = self.used_counter;
            self.interrupts += 1;
        }
        interrupt
    }
}
