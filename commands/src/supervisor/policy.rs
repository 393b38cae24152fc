//! What to do after a process ended: restart after a backoff, give up, or stay down. Pure.
//!
//! Failure counting: every unplanned end of a process that ran for less than `stable_after`
//! (exit, crash, failed liveness, or a spawn that failed) is one more consecutive failure; a
//! process that stayed up at least `stable_after` resets the count first. The n-th consecutive
//! failure waits `backoff.delay(n)`; reaching `start_limit` gives up (`error`, alarm).
//!
//! `stable_after = max(start_secs, backoff.max)`: merely passing `start_secs` is not enough,
//! otherwise a program that dies a little after `start_secs` every time would restart forever at
//! the initial delay. Staying up as long as the longest backoff proves the crash loop is over.

use std::time::Duration;

use crate::spec::{ProgramSpec, RestartPolicy};

/// The decision after a process ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterExit {
    /// Start again after `delay`; this is consecutive failure number `attempt`.
    Restart { delay: Duration, attempt: u32 },
    /// The start limit was reached.
    GiveUp { failures: u32 },
    /// A clean exit that the policy does not restart.
    Stopped,
    /// A failure that the policy does not restart (`restart = "never"`).
    Crashed,
}

/// How long a process must stay up for the failure count to reset.
pub(crate) fn stable_after(spec: &ProgramSpec) -> Duration {
    spec.start_secs.max(spec.backoff.max)
}

/// Decides what follows an unplanned end. `failures` is the consecutive count before this end
/// and is updated; `failed` is false only for a clean exit (code 0) with liveness intact.
pub(crate) fn after_exit(
    spec: &ProgramSpec,
    failures: &mut u32,
    failed: bool,
    uptime: Duration,
) -> AfterExit {
    if uptime >= stable_after(spec) {
        *failures = 0;
    }
    let restart = match spec.restart {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => failed,
        RestartPolicy::Never => false,
    };
    if !restart {
        return if failed {
            AfterExit::Crashed
        } else {
            AfterExit::Stopped
        };
    }
    *failures = failures.saturating_add(1);
    if *failures >= spec.start_limit {
        return AfterExit::GiveUp {
            failures: *failures,
        };
    }
    AfterExit::Restart {
        delay: spec.backoff.delay(*failures),
        attempt: *failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Backoff;

    fn spec(restart: RestartPolicy) -> ProgramSpec {
        ProgramSpec {
            command: "x".into(),
            restart,
            start_secs: Duration::from_secs(1),
            start_limit: 4,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(2),
                factor: 3.0,
            },
            ..ProgramSpec::default()
        }
    }

    fn check(policy: RestartPolicy, ends: &[(bool, u64)], expected: &[AfterExit]) {
        let s = spec(policy);
        let mut failures = 0;
        let got: Vec<AfterExit> = ends
            .iter()
            .map(|&(failed, up_ms)| {
                after_exit(&s, &mut failures, failed, Duration::from_millis(up_ms))
            })
            .collect();
        assert_eq!(got, expected);
    }

    fn restart(ms: u64, attempt: u32) -> AfterExit {
        AfterExit::Restart {
            delay: Duration::from_millis(ms),
            attempt,
        }
    }

    #[test]
    fn crash_loop_backs_off_then_gives_up() {
        check(
            RestartPolicy::OnFailure,
            &[(true, 10), (true, 10), (true, 1500), (true, 10)],
            &[
                restart(100, 1),
                restart(300, 2),
                // Past start_secs but not stable: still the same crash loop.
                restart(900, 3),
                AfterExit::GiveUp { failures: 4 },
            ],
        );
    }

    #[test]
    fn a_stable_run_resets_the_count() {
        check(
            RestartPolicy::OnFailure,
            &[(true, 10), (true, 10), (true, 2000), (true, 10)],
            &[
                restart(100, 1),
                restart(300, 2),
                restart(100, 1),
                restart(300, 2),
            ],
        );
    }

    #[test]
    fn policies() {
        check(
            RestartPolicy::OnFailure,
            &[(false, 10)],
            &[AfterExit::Stopped],
        );
        check(RestartPolicy::Never, &[(true, 10)], &[AfterExit::Crashed]);
        check(RestartPolicy::Never, &[(false, 10)], &[AfterExit::Stopped]);
        // A clean exit is restarted under `always`, and a quick one counts as a failure.
        check(
            RestartPolicy::Always,
            &[(false, 10), (false, 5000)],
            &[restart(100, 1), restart(100, 1)],
        );
    }

    #[test]
    fn the_delay_is_capped() {
        let mut s = spec(RestartPolicy::Always);
        s.start_limit = 100;
        let mut failures = 0;
        let delays: Vec<Duration> = (0..6)
            .map(
                |_| match after_exit(&s, &mut failures, true, Duration::ZERO) {
                    AfterExit::Restart { delay, .. } => delay,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(delays[5], Duration::from_secs(2));
    }
}
