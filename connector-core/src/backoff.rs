//! The one reconnect backoff: every source's connection loop and discovery
//! wait with it. It doubles from `min` to `max` with jitter, so replicas
//! that lost a broker together do not come back in step, and starts again
//! from `min` once the connection has been up.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    /// 250 ms doubling to 10 s: quick after a blip, gentle on a broker that stays down.
    fn default() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(10))
    }
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), next: min }
    }

    /// Connected again: the next failure waits the shortest time.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The wait before the next try: half the current step plus up to as
    /// much again at random. The step doubles each time.
    pub fn next_wait(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.max);
        step / 2 + (step / 2).mul_f64(rand::random::<f64>())
    }

    /// Sleeps the next wait; false when `stop` came first.
    pub async fn sleep(&mut self, stop: &CancellationToken) -> bool {
        let wait = self.next_wait();
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = stop.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(400));
        let steps: Vec<Duration> = (0..5).map(|_| b.next_wait()).collect();
        for (wait, step) in steps.iter().zip([100, 200, 400, 400, 400]) {
            assert!(*wait >= ms(step / 2) && *wait <= ms(step), "{wait:?} outside [{}ms, {step}ms]", step / 2);
        }
        b.reset();
        assert!(b.next_wait() <= ms(100));
    }
}
