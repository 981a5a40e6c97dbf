//! The one backoff function of the product: exponential, capped, jittered, with the randomness
//! passed in (so it is tested on values and every caller draws its own).
//!
//! After the `n`-th consecutive failure (1-based) the ceiling is `min(cap, base · 2^(n−1))`
//! ([`ceiling`]); the wait is drawn under it by [`Jitter`]:
//!
//! * [`Jitter::Full`] — uniform in `[0, ceiling)`: the AWS architecture blog's "full jitter",
//!   which spreads a crowd of clients that failed together the most (webhook deliveries);
//! * [`Jitter::Equal`] — uniform in `[ceiling/2, ceiling]`: never much sooner than the
//!   exponential schedule, still spread (the proxy's reconnects and push retries).

use std::time::Duration;

/// How a wait is drawn under the exponential ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// `ceiling · r`.
    Full,
    /// `ceiling · (1 + r) / 2`.
    Equal,
}

/// `min(cap, base · 2^(failures−1))`, without overflow; `failures` 0 counts as 1.
pub fn ceiling(failures: u32, base: Duration, cap: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(62);
    let factor = 1u64 << exp;
    let base = base.as_millis().min(u128::from(u64::MAX)) as u64;
    Duration::from_millis(base.saturating_mul(factor)).min(cap)
}

/// The wait after the `failures`-th consecutive failure (1-based). `random` is uniform in
/// `[0, 1)`; values outside are clamped to `[0, 1]`, never a panic or a negative wait.
pub fn backoff(
    failures: u32,
    base: Duration,
    cap: Duration,
    jitter: Jitter,
    random: f64,
) -> Duration {
    let ceiling = ceiling(failures, base, cap);
    let r = if random.is_nan() {
        0.0
    } else {
        random.clamp(0.0, 1.0)
    };
    match jitter {
        Jitter::Full => ceiling.mul_f64(r),
        Jitter::Equal => ceiling.mul_f64(0.5 + r / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let (base, cap) = (ms(500), Duration::from_secs(300));
        assert_eq!(ceiling(0, base, cap), ms(500));
        assert_eq!(ceiling(1, base, cap), ms(500));
        assert_eq!(ceiling(2, base, cap), ms(1000));
        assert_eq!(ceiling(4, base, cap), ms(4000));
        assert_eq!(ceiling(20, base, cap), cap);
        assert_eq!(ceiling(u32::MAX, base, cap), cap);
        assert_eq!(
            ceiling(u32::MAX, Duration::MAX, Duration::MAX),
            ms(u64::MAX)
        );
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let (base, cap) = (ms(500), Duration::from_secs(300));
        assert_eq!(backoff(2, base, cap, Jitter::Full, 0.0), Duration::ZERO);
        assert_eq!(backoff(2, base, cap, Jitter::Full, 0.5), ms(500));
        assert!(backoff(2, base, cap, Jitter::Full, 0.999_999) < ms(1000));
        assert_eq!(backoff(1, base, cap, Jitter::Full, 7.0), ms(500));
        assert_eq!(backoff(1, base, cap, Jitter::Full, -1.0), Duration::ZERO);
        assert_eq!(
            backoff(1, base, cap, Jitter::Full, f64::NAN),
            Duration::ZERO
        );
    }

    #[test]
    fn equal_jitter_spans_half_to_the_ceiling() {
        let (base, cap) = (ms(100), ms(1000));
        assert_eq!(backoff(1, base, cap, Jitter::Equal, 0.0), ms(50));
        assert_eq!(backoff(1, base, cap, Jitter::Equal, 1.0), ms(100));
        assert_eq!(backoff(3, base, cap, Jitter::Equal, 1.0), ms(400));
        assert_eq!(backoff(30, base, cap, Jitter::Equal, 1.0), ms(1000));
    }
}
