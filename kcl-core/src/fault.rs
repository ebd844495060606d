//! Fault injection shared by the in-memory backends (shard engine, lease store).
//!
//! Tests schedule faults per operation: fail, or delay, the next N calls, or each call with a
//! probability drawn from a seeded generator so that a failing run reproduces exactly. Delays go
//! through `tokio::time`, so they cost nothing under a paused clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// What happens to a call a fault rule matches.
#[derive(Debug, Clone)]
pub enum FaultAction<E> {
    /// The call fails with this error and has no effect.
    Fail(E),
    /// The call waits this long, then runs normally.
    Delay(Duration),
    /// The call takes effect, then reports this error: a timeout after the write landed.
    FailAfterApplying(E),
}

/// What is left of a fault once the call has run: an error to report instead of its result.
#[must_use = "call `finish` with the call's result so an after-effect fault is reported"]
#[derive(Debug)]
pub struct AfterEffect<E>(Option<E>);

impl<E> AfterEffect<E> {
    /// The call's result, or the scheduled error if the fault fails the call after it ran.
    pub fn finish<T>(self, result: T) -> Result<T, E> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(result),
        }
    }
}

#[derive(Debug)]
enum Trigger {
    NextCalls(u64),
    Probability(f64),
}

#[derive(Debug)]
struct Rule<E> {
    action: FaultAction<E>,
    trigger: Trigger,
}

#[derive(Debug)]
struct State<Op, E> {
    rules: HashMap<Op, Vec<Rule<E>>>,
    rng: SmallRng,
    injected: u64,
}

/// A per-operation schedule of faults. Cheap to check when nothing is scheduled.
#[derive(Debug)]
pub struct FaultInjector<Op, E> {
    state: Mutex<State<Op, E>>,
}

impl<Op: Eq + Hash + Copy, E: Clone> FaultInjector<Op, E> {
    /// An injector with no faults whose random choices follow `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Mutex::new(State {
                rules: HashMap::new(),
                rng: SmallRng::seed_from_u64(seed),
                injected: 0,
            }),
        }
    }

    /// Restarts the random sequence from `seed`.
    pub fn reseed(&self, seed: u64) {
        self.state.lock().rng = SmallRng::seed_from_u64(seed);
    }

    /// Applies `action` to the next `n` calls of `op`.
    pub fn next_calls(&self, op: Op, n: u64, action: FaultAction<E>) {
        self.push(
            op,
            Rule {
                action,
                trigger: Trigger::NextCalls(n),
            },
        );
    }

    /// Applies `action` to each call of `op` with probability `p` (clamped to 0..=1), until cleared.
    pub fn with_probability(&self, op: Op, p: f64, action: FaultAction<E>) {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self.push(
            op,
            Rule {
                action,
                trigger: Trigger::Probability(p),
            },
        );
    }

    /// Removes every scheduled fault.
    pub fn clear(&self) {
        self.state.lock().rules.clear();
    }

    /// How many faults have fired so far.
    pub fn injected(&self) -> u64 {
        self.state.lock().injected
    }

    fn push(&self, op: Op, rule: Rule<E>) {
        self.state.lock().rules.entry(op).or_default().push(rule);
    }

    /// Decides the fate of one call of `op`: the first rule that fires wins.
    fn decide(&self, op: Op) -> Option<FaultAction<E>> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let rules = state.rules.get_mut(&op)?;
        let mut fired = None;
        for (i, rule) in rules.iter_mut().enumerate() {
            let fires = match &mut rule.trigger {
                Trigger::NextCalls(n) => {
                    *n -= 1;
                    true
                }
                Trigger::Probability(p) => state.rng.random_bool(*p),
            };
            if fires {
                fired = Some((i, rule.action.clone()));
                break;
            }
        }
        rules.retain(|r| !matches!(r.trigger, Trigger::NextCalls(0)));
        let (_, action) = fired?;
        state.injected += 1;
        Some(action)
    }

    /// Runs the scheduled fault for one call of `op`, if any, before the call: sleeps for a
    /// delay, or returns the error the call must fail with without running. The returned
    /// [`AfterEffect`] carries an error to report after the call has run.
    pub async fn apply(&self, op: Op) -> Result<AfterEffect<E>, E> {
        match self.decide(op) {
            None => Ok(AfterEffect(None)),
            Some(FaultAction::Fail(e)) => Err(e),
            Some(FaultAction::FailAfterApplying(e)) => Ok(AfterEffect(Some(e))),
            Some(FaultAction::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(AfterEffect(None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn next_calls_then_clean() {
        let f = FaultInjector::<u8, &str>::new(1);
        f.next_calls(1, 2, FaultAction::Fail("boom"));
        assert_eq!(f.apply(1).await.unwrap_err(), "boom");
        assert_eq!(f.apply(2).await.unwrap().finish(5), Ok(5));
        assert_eq!(f.apply(1).await.unwrap_err(), "boom");
        assert_eq!(f.apply(1).await.unwrap().finish(()), Ok(()));
        f.next_calls(1, 1, FaultAction::FailAfterApplying("late"));
        assert_eq!(f.apply(1).await.unwrap().finish(7), Err("late"));
        assert_eq!(f.injected(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn delays_use_tokio_time() {
        let f = FaultInjector::<u8, ()>::new(1);
        f.next_calls(0, 1, FaultAction::Delay(Duration::from_secs(30)));
        let start = tokio::time::Instant::now();
        f.apply(0).await.unwrap().finish(()).unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn probability_is_reproducible() {
        let run = |seed| async move {
            let f = FaultInjector::<u8, ()>::new(seed);
            f.with_probability(0, 0.3, FaultAction::Fail(()));
            let mut out = Vec::new();
            for _ in 0..200 {
                out.push(f.apply(0).await.is_err());
            }
            out
        };
        let a = run(7).await;
        assert_eq!(a, run(7).await);
        let hits = a.iter().filter(|x| **x).count();
        assert!((30..90).contains(&hits), "{hits} of 200 at p = 0.3");
    }
}
