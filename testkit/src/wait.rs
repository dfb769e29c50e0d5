//! Waiting on a condition with a deadline, the one way tests wait for
//! something that happens in another process.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;

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
}
