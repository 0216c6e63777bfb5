//! Adaptive concurrency (`com.switchboard.concurrency: adaptive`): a
//! function's in-flight cap follows the function's own signals, by the
//! rules of TCP's congestion window and Netflix's concurrency-limits
//! `AIMDLimit` (additive increase, a cut on overload). Chosen over a
//! gradient limiter because the signal a function gives is mostly
//! explicit (429, 503) and these converge on it with few settings and no
//! smoothing to tune; latency counts too, as its recent average rising
//! past twice its usual one. docs/benchmarks.md measures it against fixed
//! caps.
//!
//! - A rejection (429 or 503) takes one slot off the cap; recent answers
//!   twice as slow as usual multiply it by 0.8. Once per window: only a
//!   call admitted since the last decrease can decrease it again, so the
//!   many calls in flight when a function saturates count as one signal,
//!   not dozens. (A rejection says the function was given one too many; a
//!   slow answer says nothing of how many, so it cuts harder. Against a
//!   function that rejects beyond N, the cap moves between N and N + 1,
//!   which keeps the function as busy as a fixed cap of N does, where
//!   cutting by a fifth left it a tenth below.)
//! - Each healthy answer adds 0.25/cap to it (a quarter slot per cap's
//!   worth of answers), while the function is given at least half the cap
//!   at once; until the first decrease, a whole slot (slow start: the cap
//!   doubles each round trip, from 4).
//! - The cap stays between 1 and the function's `max_inflight`.

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

const DECREASE: f64 = 0.8;
/// Slots added per cap's worth of healthy answers (per round trip), once
/// past slow start. Each probe past what the function takes costs a
/// rejection: a quarter slot per round trip kept those near one call in
/// sixteen for a function that takes only 4 at once (half a slot: one in
/// ten).
const INCREASE: f64 = 0.25;
/// How much slower than its usual latency a function's recent answers may
/// be before they count as it being overloaded.
const LATENCY_TOLERANCE: f64 = 2.0;
/// Weights of a new answer's latency in the recent average (about the last
/// 5 answers) and in the usual one (about the last 50): as Netflix's
/// gradient limiter compares a short and a long average, so that a machine
/// that is slower for everyone moves both and cuts nothing, while a
/// function queueing its calls moves the short one first.
const RECENT: f64 = 0.2;
const USUAL: f64 = 0.02;
/// Answers before latency counts: the averages need some to mean anything.
const WARM_UP: u32 = 20;
/// Where the cap starts, below the ceiling: it grows from there.
const INITIAL: f64 = 4.0;

#[derive(Debug)]
pub struct Adaptive {
    state: Mutex<State>,
    freed: Notify,
    ceiling: f64,
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    /// Bumped at each decrease: calls admitted before it cannot decrease again.
    window: u64,
    /// Seconds, averaged over the recent answers and over many.
    recent: f64,
    usual: f64,
    samples: u32,
}

/// How one call went, for the cap.
#[derive(Clone, Copy)]
pub enum Signal {
    /// A 2xx, or a failure that says nothing of load (a 500, a 404).
    Answered(Duration),
    /// 429 or 503: the function says it has too much.
    Rejected,
}

/// A place among the calls in flight; give it back with [`Adaptive::done`].
#[derive(Debug)]
pub struct Slot {
    window: u64,
}

impl Adaptive {
    pub fn new(ceiling: usize) -> Self {
        let ceiling = ceiling.max(1) as f64;
        let state = State { limit: INITIAL.min(ceiling), in_flight: 0, window: 0, recent: 0.0, usual: 0.0, samples: 0 };
        Self { state: Mutex::new(state), freed: Notify::new(), ceiling }
    }

    /// The cap now.
    pub fn limit(&self) -> usize {
        self.state.lock().expect("adaptive lock").limit as usize
    }

    /// Waits for a place under the cap.
    pub async fn acquire(&self) -> Slot {
        loop {
            let freed = self.freed.notified();
            {
                let mut s = self.state.lock().expect("adaptive lock");
                if (s.in_flight as f64) < s.limit.floor() {
                    s.in_flight += 1;
                    return Slot { window: s.window };
                }
            }
            freed.await;
        }
    }

    /// Gives `slot` back, moving the cap by how the call went.
    pub fn done(&self, slot: Slot, signal: Signal) {
        let mut s = self.state.lock().expect("adaptive lock");
        let busy = s.in_flight as f64 >= s.limit.floor() / 2.0;
        s.in_flight -= 1;
        let overloaded = match signal {
            Signal::Rejected => true,
            Signal::Answered(took) => {
                let t = took.as_secs_f64();
                if s.samples == 0 {
                    (s.recent, s.usual) = (t, t);
                }
                s.samples = s.samples.saturating_add(1);
                s.recent += RECENT * (t - s.recent);
                s.usual += USUAL * (t - s.usual);
                s.samples > WARM_UP && s.recent > s.usual.max(0.001) * LATENCY_TOLERANCE
            }
        };
        if overloaded {
            if slot.window == s.window {
                // A rejection says the cap is one too many; slowness says
                // nothing of how many, so it cuts the cap by a fifth.
                let rejected = matches!(signal, Signal::Rejected);
                s.limit = if rejected { s.limit - 1.0 } else { s.limit * DECREASE }.max(1.0);
                s.window += 1;
            }
        } else if busy {
            // Slow start until the first decrease: one more slot per answer
            // (the cap doubles each round trip) to find the range quickly.
            let step = if s.window == 0 { 1.0 } else { INCREASE / s.limit };
            s.limit = (s.limit + step).min(self.ceiling);
        }
        drop(s);
        self.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function that takes `n` at once in 10 ms and rejects the rest,
    /// served by 64 callers: the cap settles near `n`, with few rejections.
    #[tokio::test]
    async fn the_cap_settles_near_what_the_function_takes() {
        let n = 6;
        let a = std::sync::Arc::new(Adaptive::new(64));
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let rejected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let callers = (0..64).map(|_| {
            let (a, busy, rejected) = (a.clone(), busy.clone(), rejected.clone());
            tokio::spawn(async move {
                for _ in 0..60 {
                    let slot = a.acquire().await;
                    use std::sync::atomic::Ordering::SeqCst;
                    let now = busy.fetch_add(1, SeqCst) + 1;
                    let signal = if now > n {
                        rejected.fetch_add(1, SeqCst);
                        Signal::Rejected
                    } else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Signal::Answered(Duration::from_millis(10))
                    };
                    busy.fetch_sub(1, SeqCst);
                    a.done(slot, signal);
                }
            })
        });
        // The cap while every caller is busy (at the end, the last few
        // callers have the function to themselves and grow it).
        let sampled = a.clone();
        let sampler = tokio::spawn(async move {
            let mut samples = vec![];
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                samples.push(sampled.limit());
            }
            samples
        });
        futures_util::future::join_all(callers).await;
        let mut samples = sampler.await.unwrap();
        samples.sort();
        let median = samples[samples.len() / 2];
        assert!((n - 2..=n + 2).contains(&median), "the cap is {median} (of {samples:?}), the function takes {n}");
        let rejected = rejected.load(std::sync::atomic::Ordering::SeqCst);
        assert!(rejected < 64 * 60 / 10, "{rejected} of {} rejected", 64 * 60);
    }

    #[test]
    fn slow_answers_shrink_the_cap_once_per_window() {
        let a = Adaptive::new(64);
        let slot = || futures_util::FutureExt::now_or_never(a.acquire()).unwrap();
        for _ in 0..30 {
            a.done(slot(), Signal::Answered(Duration::from_millis(10)));
        }
        assert_eq!(a.limit(), 4, "one call at a time does not grow the cap");
        // Four calls admitted in one window, all slow: one decrease.
        let slots: Vec<Slot> = (0..4).map(|_| slot()).collect();
        for s in slots {
            a.done(s, Signal::Answered(Duration::from_millis(100)));
        }
        assert_eq!(a.limit(), 3, "4 × 0.8, once");
    }
}
