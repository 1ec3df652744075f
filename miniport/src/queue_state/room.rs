//! Room on a ring for a large request, so that smaller ones cannot starve it.
//!
//! A request that goes on the ring as a direct chain (no indirect descriptors negotiated, or its
//! table not contiguous) needs one descriptor per segment, up to the whole ring. While small
//! requests keep the ring partly full, such a request finds no room however often StorPort
//! resends it, until it times out into a reset. So a request refused for room reserves the
//! descriptors it needs: smaller requests are admitted only while that many stay free, and the
//! ring drains until the large request, on its next try, fits. A reservation whose owner does
//! not come back (aborted, or completed by a reset) lapses after [`RESERVATION_LIFETIME`].
#![forbid(unsafe_code)]

/// How long a reservation lasts without its owner trying again, in the 100 ns units of
/// StorPortQuerySystemTime: 100 ms, a hundred times StorPort's usual hold-off before it resends
/// a request the miniport answered BUSY.
pub const RESERVATION_LIFETIME: u64 = 1_000_000;

/// Descriptors kept free on one ring for the largest request refused for room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reservation {
    /// Descriptors kept free (0: none).
    descriptors: u16,
    /// When the owner last asked (system time).
    since: u64,
}

impl Reservation {
    /// Whether a request needing `needed` descriptors may try the ring, which has `free` now.
    /// `now` (the system time) is asked only while a reservation holds room back.
    #[expect(
        clippy::inline_always,
        reason = "StartIo asks on every I/O; out of line it costs a call per I/O (cargo xtask bench)"
    )]
    #[inline(always)]
    pub fn admits(&mut self, needed: u16, free: u16, now: impl FnOnce() -> u64) -> bool {
        if self.descriptors == 0 || needed >= self.descriptors {
            // No reservation, or the owner (or a request at least as large) itself.
            return true;
        }
        if u32::from(free) >= u32::from(needed) + u32::from(self.descriptors) {
            return true;
        }
        if now().saturating_sub(self.since) > RESERVATION_LIFETIME {
            *self = Self::default();
            return true;
        }
        false
    }

    /// A request needing `needed` descriptors went on the ring: if it was the owner (or as
    /// large), the room it waited for is used.
    #[inline]
    pub fn admitted(&mut self, needed: u16) {
        // Nothing to store without a reservation (every I/O but the rare large one).
        if self.descriptors != 0 && needed >= self.descriptors {
            *self = Self::default();
        }
    }

    /// A request needing `needed` descriptors found no room at `now`: keep that many free
    /// from now on (the largest such request wins).
    pub fn refused(&mut self, needed: u16, now: u64) {
        if needed >= self.descriptors {
            self.descriptors = needed;
            self.since = now;
        }
    }

    /// Descriptors kept free (0: none).
    #[must_use]
    pub const fn descriptors(&self) -> u16 {
        self.descriptors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_reservation_everything_may_try() {
        let mut room = Reservation::default();
        assert!(room.admits(3, 0, || unreachable!("no time needed")));
        // And admitting keeps it without one (StartIo asks both on every I/O, the dump
        // stack's too, which must not ask for the time).
        room.admitted(3);
        assert_eq!(room, Reservation::default());
        assert!(room.admits(u16::MAX, 0, || unreachable!("no time needed")));
    }

    #[test]
    fn a_refused_large_request_keeps_its_room_from_smaller_ones() {
        let mut room = Reservation::default();
        // A 130-descriptor chain on a ring with 40 free: refused, reserved.
        room.refused(130, 1000);
        assert_eq!(room.descriptors(), 130);
        // Small requests may take only what leaves 130 free.
        assert!(!room.admits(3, 40, || 1000));
        assert!(!room.admits(3, 132, || 1000));
        assert!(room.admits(3, 133, || 1000));
        // The owner may always try; once it is on the ring, the reservation ends.
        assert!(room.admits(130, 40, || 1000));
        room.admitted(130);
        assert_eq!(room.descriptors(), 0);
        assert!(room.admits(3, 0, || unreachable!()));
    }

    #[test]
    fn the_largest_refused_request_wins_and_smaller_admissions_keep_it() {
        let mut room = Reservation::default();
        room.refused(20, 5);
        room.refused(60, 6);
        room.refused(30, 7);
        assert_eq!(room.descriptors(), 60);
        room.admitted(30);
        assert_eq!(room.descriptors(), 60);
    }

    #[test]
    fn a_reservation_whose_owner_never_returns_lapses() {
        let mut room = Reservation::default();
        room.refused(256, 10);
        assert!(!room.admits(3, 100, || 10 + RESERVATION_LIFETIME));
        assert!(room.admits(3, 100, || 11 + RESERVATION_LIFETIME));
        assert_eq!(room.descriptors(), 0);
    }

    #[test]
    fn asking_again_renews_the_reservation() {
        let mut room = Reservation::default();
        room.refused(100, 0);
        room.refused(100, RESERVATION_LIFETIME);
        assert!(!room.admits(3, 50, || RESERVATION_LIFETIME + 10));
    }
}
