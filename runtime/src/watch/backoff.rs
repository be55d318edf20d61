//! The retry delay of every watch: short and bounded, so a watch is back within about a
//! second of the API server answering again (kube's default grows to 30 s).

use std::time::Duration;

use kube::runtime::utils::Backoff;

/// The first delay after an error.
pub const FIRST_DELAY: Duration = Duration::from_millis(200);
/// The longest delay between two attempts, however long the outage.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// Doubles from [`FIRST_DELAY`] up to [`MAX_DELAY`]; the watch stream resets it on every
/// successful event, so the next outage starts short again.
#[derive(Debug, Clone)]
pub struct QuickBackoff {
    next: Duration,
}

impl Default for QuickBackoff {
    fn default() -> Self {
        Self { next: FIRST_DELAY }
    }
}

impl Iterator for QuickBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(MAX_DELAY);
        Some(delay)
    }
}

impl Backoff for QuickBackoff {
    fn reset(&mut self) {
        self.next = FIRST_DELAY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_bound_and_reset() {
        let mut b = QuickBackoff::default();
        let first: Vec<Duration> = b.by_ref().take(5).collect();
        assert_eq!(
            first,
            [200, 400, 800, 1000, 1000].map(Duration::from_millis)
        );
        b.reset();
        assert_eq!(b.next(), Some(FIRST_DELAY));
    }
}
