//! Waiting on a condition with a deadline, the one way tests wait for
//! something that happens in another process.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

/// Polls `check` every `every` until it answers `Some`, and returns that.
/// After `limit`, fails naming `what` and the last thing `check` saw
/// (`Err` answers from `check` count as "not yet" and are kept for the
/// message).
///
/// A test that asserts several things produced elsewhere waits for all of
/// them in one `check`, never for one and then asserts the rest at once.
pub async fn eventually<T, F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => String::from("not yet"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("{what}: not within {limit:?} (last: {last})");
        }
        tokio::time::sleep(every).await;
    }
}

/// How often [`wait_for_job`] reads a job.
const JOB_POLL: Duration = Duration::from_millis(20);

/// Reads job `id` with `read` (however the test reads a job: the api's
/// status document, the queue's record) until `reached` holds of what it
/// answers, and returns that. After `limit`, fails naming the job, `want`
/// (what `reached` waits for, in words) and the last thing read; an `Err`
/// from `read` counts as "not yet".
///
/// Built on [`eventually`]: a test that needs more than the job (its
/// trace, say) waits for all of it there instead.
pub async fn wait_for_job<S, F, Fut, P>(
    id: &str,
    want: &str,
    limit: Duration,
    mut read: F,
    reached: P,
) -> anyhow::Result<S>
where
    S: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<S>>,
    P: Fn(&S) -> bool,
{
    let reached = &reached;
    eventually(&format!("job {id} {want}"), limit, JOB_POLL, || {
        let seen = read();
        async move {
            let seen = seen.await?;
            match reached(&seen) {
                true => Ok(Some(seen)),
                false => Err(anyhow!("{seen:?}")),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn eventually_answers_once_the_condition_holds() -> anyhow::Result<()> {
        let calls = AtomicU32::new(0);
        let n = eventually(
            "the third call",
            Duration::from_secs(5),
            Duration::ZERO,
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move { Ok((n == 3).then_some(n)) }
            },
        )
        .await?;
        assert_eq!(n, 3);
        Ok(())
    }

    #[tokio::test]
    async fn eventually_fails_past_its_deadline_naming_what_it_waited_for() {
        let err = eventually::<(), _, _>(
            "a thing that never comes",
            Duration::from_millis(30),
            Duration::from_millis(5),
            || async { anyhow::bail!("still broken") },
        )
        .await
        .expect_err("it never holds");
        let text = format!("{err:#}");
        assert!(text.contains("a thing that never comes"), "{text}");
        assert!(text.contains("still broken"), "{text}");
    }

    #[tokio::test]
    async fn a_job_is_waited_for_until_it_reaches_the_status_and_is_named_if_it_does_not()
    -> anyhow::Result<()> {
        let reads = AtomicU32::new(0);
        let status = |n: u32| if n < 3 { "running" } else { "succeeded" };
        let read = || {
            let n = reads.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok(status(n)) }
        };
        let done = wait_for_job("j1", "to succeed", Duration::from_secs(5), read, |s| {
            *s == "succeeded"
        })
        .await?;
        assert_eq!(done, "succeeded");

        let err = wait_for_job(
            "j2",
            "to fail",
            Duration::from_millis(50),
            || async { Ok("running") },
            |s| *s == "failed",
        )
        .await
        .expect_err("it never fails");
        let text = format!("{err:#}");
        assert!(text.contains("job j2 to fail"), "{text}");
        assert!(text.contains("running"), "{text}");
        Ok(())
    }
}
