//! The simulated machine's clocks (system time, tick count, stalls, timer requests and the port
//! driver's busy hold-offs), which may run a whole number of times faster than real time, so
//! that a session whose miniport waits out seconds-long deadlines runs in a fraction of them.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// 100 ns units between 1601-01-01 (Windows' epoch) and 1970-01-01.
const EPOCH_DIFFERENCE: u64 = 116_444_736_000_000_000;

/// One machine's clocks: they start at the real time of boot and run `rate` times faster.
#[derive(Debug)]
pub struct SimClock {
    rate: u32,
    started: Instant,
    /// The system time at boot, in 100 ns units since 1601.
    system_at_start: u64,
}

impl SimClock {
    /// Clocks running `rate` times faster than real time (0 counts as 1).
    #[must_use]
    pub fn new(rate: u32) -> Self {
        let since_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            rate: rate.max(1),
            started: Instant::now(),
            system_at_start: EPOCH_DIFFERENCE
                + u64::try_from(since_unix.as_nanos() / 100).unwrap_or(0),
        }
    }

    /// How many times faster than real time the clocks run.
    #[must_use]
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Simulated time since boot.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed().saturating_mul(self.rate)
    }

    /// The system time (`StorPortQuerySystemTime`): 100 ns units since 1601.
    #[must_use]
    pub fn system_time(&self) -> u64 {
        self.system_at_start + self.ticks()
    }

    /// 100 ns ticks since boot (`StorPortQueryTickCount`).
    #[must_use]
    pub fn ticks(&self) -> u64 {
        u64::try_from(self.elapsed().as_nanos() / 100).unwrap_or(u64::MAX)
    }

    /// The real time a simulated `duration` takes.
    #[must_use]
    pub fn real(&self, duration: Duration) -> Duration {
        duration / self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_faster_clock_waits_less_real_time_and_counts_more_ticks() {
        let real = SimClock::new(1);
        let fast = SimClock::new(20);
        assert_eq!(real.real(Duration::from_secs(2)), Duration::from_secs(2));
        assert_eq!(
            fast.real(Duration::from_secs(2)),
            Duration::from_millis(100)
        );
        std::thread::sleep(Duration::from_millis(10));
        // 10 ms of real time is at least 200 ms on the fast clock, and its system time moved
        // at least as far.
        assert!(fast.ticks() >= 2_000_000, "{}", fast.ticks());
        assert!(fast.system_time() >= fast.system_at_start + 2_000_000);
        assert!(real.ticks() >= 100_000 && real.ticks() < fast.ticks());
    }

    #[test]
    fn a_rate_of_zero_is_real_time() {
        assert_eq!(SimClock::new(0).rate(), 1);
    }
}
