//! The task management table: the slots, their DMA memory on the controlq, and the claim,
//! answer, finish and resolve steps each slot goes through.

use core::borrow::Borrow;
use core::sync::atomic::Ordering;

use virtio_core::dma::DmaMemory;
use virtio_core::hal::Segment;
use virtio_core::scsi::{TmfReq, TmfResp, complete_tmf};
use zerocopy::IntoBytes;

use super::{
    ANSWERED, Active, Answer, Claim, Ended, Nexus, Owner, Phase, RESPONSE_OFFSET, SLOT_STRIDE,
    TmfCounters, TmfSlot, UNWRITTEN, generation, word,
};
use crate::in_flight::InFlight;

/// The slots and their DMA memory.
#[derive(Debug)]
pub struct TmfTable<S> {
    slots: S,
    pub(super) memory: DmaMemory,
    /// What happened to the functions.
    pub counters: TmfCounters,
}

impl<S: Borrow<[TmfSlot]>> TmfTable<S> {
    /// Bytes of DMA memory [`TmfTable::new`] needs for `slots` slots (16-aligned).
    #[must_use]
    pub const fn memory_len(slots: usize) -> usize {
        slots * SLOT_STRIDE
    }

    /// A table over `slots` (all free) and `memory` (at least [`TmfTable::memory_len`] bytes,
    /// 16-aligned, device-reachable). Slots without memory behind them are never claimed.
    #[must_use]
    pub fn new(slots: S, memory: DmaMemory) -> Self {
        Self {
            slots,
            memory,
            counters: TmfCounters::default(),
        }
    }

    fn slots(&self) -> &[TmfSlot] {
        self.slots.borrow()
    }

    fn usable(&self) -> usize {
        self.slots().len().min(self.memory.len() / SLOT_STRIDE)
    }

    /// Claims a free slot for `nexus`, writes its request, and records `owner`, the time `now`
    /// and each request queue's submission count (`snapshot(queue)` for `0..queues`). Returns
    /// the claim and the request's device-readable and device-writable segments, or `None`
    /// when every slot is busy (or the LUN cannot be encoded).
    pub fn claim(
        &self,
        nexus: Nexus,
        owner: &mut Option<Owner>,
        now: u64,
        queues: u16,
        mut snapshot: impl FnMut(u16) -> u64,
    ) -> Option<(Claim, Segment, Segment)> {
        let lun = nexus.lun().ok()?;
        let request = TmfReq::new(nexus.subtype(), lun, nexus.tag());
        for (index, slot) in self.slots().iter().enumerate().take(self.usable()) {
            let current = slot.state.load(Ordering::Relaxed);
            if Phase::of(current) != Some(Phase::Free) {
                continue;
            }
            let next = generation(current).wrapping_add(1);
            // ORDERING: Acquire pairs with the Release store that freed the slot, so the
            // previous owner's last use of the slot happens before this claim's writes.
            if slot
                .state
                .compare_exchange(
                    current,
                    word(next, Phase::Claimed),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
            let at = index * SLOT_STRIDE;
            let written = self.memory.write_bytes(at, request.as_bytes())
                && self.memory.write_bytes(at + RESPONSE_OFFSET, &[0xFF]);
            if !written {
                slot.state.store(word(next, Phase::Free), Ordering::Release);
                return None;
            }
            let (packed, tag) = nexus.pack();
            slot.nexus.store(packed, Ordering::Relaxed);
            slot.tag.store(tag, Ordering::Relaxed);
            if let Some(owner) = owner.take() {
                // The cell is empty: every incarnation's owner was taken when its slot was
                // freed (`release`, `take`).
                let _none = slot.owner.put(owner, Ordering::Relaxed);
            }
            slot.posted_at.store(now, Ordering::Relaxed);
            slot.response.store(0, Ordering::Relaxed);
            for (queue, count) in slot.snapshot.iter().enumerate() {
                let value = if queue < usize::from(queues) {
                    snapshot(queue as u16)
                } else {
                    0
                };
                count.store(value, Ordering::Relaxed);
            }
            let bus = self.memory.bus_address() + at as u64;
            return Some((
                Claim {
                    index,
                    generation: next,
                },
                Segment::new(bus, size_of::<TmfReq>() as u32),
                Segment::new(bus + RESPONSE_OFFSET as u64, size_of::<TmfResp>() as u32),
            ));
        }
        None
    }

    /// The claimed function went on the controlq (call under the controlq's lock, after the
    /// ring accepted it).
    #[expect(
        clippy::needless_pass_by_value,
        reason = "consuming the claim is the point: a claimed slot is posted or released once"
    )]
    pub fn posted(&self, claim: Claim) {
        let Claim { index, generation } = claim;
        if let Some(slot) = self.slots().get(index) {
            // ORDERING: Release publishes the bookkeeping written while Claimed to whoever
            // loads this word with Acquire (the interrupt, the timer, a reset).
            slot.state
                .store(word(generation, Phase::Posted), Ordering::Release);
        }
    }

    /// Gives a claimed slot up (the controlq refused the request); returns its owner.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "consuming the claim is the point: a claimed slot is posted or released once"
    )]
    pub fn release(&self, claim: Claim) -> Option<Owner> {
        let Claim { index, generation } = claim;
        let slot = self.slots().get(index)?;
        let owner = slot.owner.take(Ordering::Relaxed);
        // ORDERING: Release pairs with the Acquire of the next claim.
        slot.state
            .store(word(generation, Phase::Free), Ordering::Release);
        owner
    }

    /// The device used slot `index`'s chain, writing `written` bytes: records the answer.
    /// Returns false if the slot was not waiting for one (a stale or forged token).
    pub fn answer(&self, index: usize, written: u32) -> bool {
        let Some(slot) = self.slots().get(index) else {
            return false;
        };
        let current = slot.state.load(Ordering::Acquire);
        if Phase::of(current) != Some(Phase::Posted) {
            return false;
        }
        let response = if written >= 1 {
            ANSWERED | u16::from(self.memory.load_u8(index * SLOT_STRIDE + RESPONSE_OFFSET))
        } else {
            UNWRITTEN
        };
        slot.response.store(response, Ordering::Relaxed);
        // ORDERING: Release publishes the response word with the phase; the timer loads the
        // state with Acquire before reading it.
        slot.state
            .compare_exchange(
                current,
                word(generation(current), Phase::Answered),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Views of every function on the device or back from it, one by one, as `visit` gets
    /// them.
    pub fn for_each_active(&self, mut visit: impl FnMut(Active)) {
        for (index, slot) in self.slots().iter().enumerate() {
            if let Some(active) = Self::view(index, slot) {
                visit(active);
            }
        }
    }

    /// A view of slot `index` if its function is on the device or back from it.
    fn view(index: usize, slot: &TmfSlot) -> Option<Active> {
        // ORDERING: Acquire pairs with the Release stores of `posted` and `answer`.
        let current = slot.state.load(Ordering::Acquire);
        let phase = Phase::of(current).filter(|phase| phase.is_active())?;
        let nexus = Nexus::unpack(
            slot.nexus.load(Ordering::Relaxed),
            slot.tag.load(Ordering::Relaxed),
        )?;
        let response = if phase == Phase::Posted {
            0
        } else {
            slot.response.load(Ordering::Relaxed)
        };
        let answer = if phase == Phase::Posted {
            Answer::Pending
        } else if response & ANSWERED != 0 {
            match complete_tmf(&TmfResp {
                response: response as u8,
            }) {
                Ok(outcome) => Answer::Outcome(outcome),
                Err(_) => Answer::Broken,
            }
        } else {
            Answer::Broken
        };
        Some(Active {
            index,
            word: current,
            response,
            nexus,
            answer,
            posted_at: slot.posted_at.load(Ordering::Relaxed),
        })
    }

    /// Whether any function is on the device or back from it.
    #[must_use]
    pub fn any_active(&self) -> bool {
        self.slots()
            .iter()
            .any(|slot| Phase::of(slot.state.load(Ordering::Relaxed)).is_some_and(Phase::is_active))
    }

    /// Whether `active` covers `request`: same nexus, and on its ring when the function was
    /// sent (its queue's submission count below the snapshot).
    #[must_use]
    pub fn covers(&self, active: &Active, request: &InFlight) -> bool {
        let Some(slot) = self.slots().get(active.index) else {
            return false;
        };
        let Some(count) = slot.snapshot.get(usize::from(request.queue)) else {
            return false;
        };
        active.nexus.contains(request) && request.sequence < count.load(Ordering::Relaxed)
    }

    /// Moves an answered function to `Waiting` (its covered requests are still out). Losing
    /// the exchange means a reset resolved it meanwhile.
    pub fn mark_waiting(&self, active: &Active) {
        if let Some(slot) = self.slots().get(active.index)
            && Phase::of(active.word) == Some(Phase::Answered)
        {
            let _ = slot.state.compare_exchange(
                active.word,
                word(generation(active.word), Phase::Waiting),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Ends the function `active` saw, if it is still in that state (`None`: someone else
    /// ended it first); the caller then completes the owner's SRB, if it has one.
    pub fn finish(&self, active: &Active) -> Option<Ended> {
        let slot = self.slots().get(active.index)?;
        Self::take(slot, active.word)
    }

    /// Moves `slot` from `current` to `Completing` and then `Free`, returning its owner, if no
    /// one else moved it first.
    fn take(slot: &TmfSlot, current: u64) -> Option<Ended> {
        let generation = generation(current);
        // ORDERING: Acquire pairs with the Release of `posted`/`answer`, so the owner word is
        // the one this incarnation wrote.
        slot.state
            .compare_exchange(
                current,
                word(generation, Phase::Completing),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()?;
        let owner = slot.owner.take(Ordering::Relaxed);
        // ORDERING: Release pairs with the Acquire of the next claim.
        slot.state
            .store(word(generation, Phase::Free), Ordering::Release);
        Some(Ended { owner })
    }

    /// Ends every function on the device or back from it (after a device reset, with the
    /// controlq's lock held), calling `complete` with the last view of each and its owner;
    /// returns how many ended.
    pub fn resolve_all(&self, mut complete: impl FnMut(&Active, Option<Owner>)) -> u64 {
        let mut resolved = 0;
        for (index, slot) in self.slots().iter().enumerate() {
            let Some(active) = Self::view(index, slot) else {
                continue;
            };
            if let Some(ended) = Self::take(slot, active.word) {
                // Counted before the SRB completes: whoever waits for it may read the counter
                // at once.
                self.counters.superseded.fetch_add(1, Ordering::Relaxed);
                complete(&active, ended.owner);
                resolved += 1;
            }
        }
        resolved
    }
}
