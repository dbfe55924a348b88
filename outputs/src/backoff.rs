//! Exponential backoff with full jitter.
//!
//! Attempt `n` (counting from 0) waits a uniformly random time in
//! `[0, min(max, initial * 2^n)]` ("full jitter"), so many agents that lost
//! the same collector at the same moment do not come back in lock step. The
//! type holds no clock and never sleeps: callers decide how to wait, which
//! keeps it usable from async tasks and plain threads alike.

use rand::Rng;
use std::time::Duration;

/// The delays between successive attempts of one operation.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and never above `max` (`max` is raised
    /// to `initial` if it is smaller).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// Retries handed out so far (delays returned by [`Backoff::next_delay`]).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the next delay: `min(max, initial * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        // 2^31 * initial is far past any sane `max`; clamping the exponent
        // keeps the multiplication from overflowing.
        let factor = 1u32 << self.attempt.min(31);
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The largest delay this backoff ever returns.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The next delay, drawn with the thread-local random generator.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::rng())
    }

    /// The next delay, drawn from `rng` (for reproducible tests).
    pub fn next_delay_with(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }

    /// The next delay when the server said how long to wait (`Retry-After`):
    /// its value, capped at `max`. The attempt still counts, so the backoff
    /// keeps growing if the server stops saying.
    pub fn next_delay_after(&mut self, server_asked: Duration) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        server_asked.min(self.max)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceiling_doubles_then_caps() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let mut rng = StdRng::seed_from_u64(1);
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            ceilings.push(b.ceiling());
            b.next_delay_with(&mut rng);
        }
        assert_eq!(
            ceilings,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        assert_eq!(b.attempt(), 6);
    }

    #[test]
    fn delays_stay_within_bounds() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = Backoff::new(10 * MS, 300 * MS);
        for _ in 0..1000 {
            let ceiling = b.ceiling();
            let d = b.next_delay_with(&mut rng);
            assert!(d <= ceiling, "{d:?} > {ceiling:?}");
            assert!(d <= 300 * MS);
        }
    }

    #[test]
    fn delays_are_jittered_over_the_whole_range() {
        // Full jitter: at the cap, draws spread over [0, max], not bunched at
        // the top.
        let mut rng = StdRng::seed_from_u64(42);
        let mut b = Backoff::new(MS, 100 * MS);
        for _ in 0..10 {
            b.next_delay_with(&mut rng);
        }
        let draws: Vec<Duration> = (0..500).map(|_| b.next_delay_with(&mut rng)).collect();
        let low = draws.iter().filter(|d| **d < 25 * MS).count();
        let high = draws.iter().filter(|d| **d > 75 * MS).count();
        assert!(low > 50 && high > 50, "low {low} high {high}");
        let mut distinct = draws.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 400);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            assert!(b.next_delay_with(&mut rng) <= Duration::from_secs(30));
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30));
    }

    #[test]
    fn server_asked_delay_is_capped_and_counts() {
        let mut b = Backoff::new(10 * MS, Duration::from_secs(2));
        assert_eq!(
            b.next_delay_after(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.next_delay_after(Duration::from_secs(3600)),
            Duration::from_secs(2)
        );
        assert_eq!(b.attempt(), 2);
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.ceiling(), 10 * MS);
    }

    #[test]
    fn max_below_initial_is_raised() {
        let b = Backoff::new(50 * MS, 10 * MS);
        assert_eq!(b.max(), 50 * MS);
        assert_eq!(b.ceiling(), 50 * MS);
    }
}
