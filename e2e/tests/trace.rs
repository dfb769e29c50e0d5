//! Every job is one connected trace across the processes, api → queue →
//! worker → weather service → cache, checked through the Zipkin v2 JSON
//! they export.

use anyhow::Context;
use e2e::{Options, SEARCH_AND_FORECAST, Stack, WAIT, assert_job_tree};
use serde_json::{Value, json};

#[tokio::test]
async fn every_propagation_format_gives_one_connected_trace_across_the_queue() -> anyhow::Result<()>
{
    let stack = Stack::start().await?;
    let caller = "00f067aa0ba902b7";
    /// City, the trace id the caller sends, and the headers carrying it.
    type Case = (&'static str, &'static str, Vec<(&'static str, String)>);
    let cases: [Case; 3] = [
        (
            "Berlin",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            vec![(
                "traceparent",
                format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{caller}-01"),
            )],
        ),
        (
            "Oslo",
            "a3ce929d0e0e47364bf92f3577b34da6",
            vec![("b3", format!("a3ce929d0e0e47364bf92f3577b34da6-{caller}-1"))],
        ),
        (
            "Lima",
            "0e0e4736a3ce929d4bf92f3577b34da6",
            vec![
                ("X-B3-TraceId", "0e0e4736a3ce929d4bf92f3577b34da6".into()),
                ("X-B3-SpanId", caller.into()),
                ("X-B3-Sampled", "1".into()),
            ],
        ),
    ];
    for (city, trace, headers) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (id, trace_id) = stack
            .enqueue(&json!({ "city": city }).to_string(), &headers)
            .await?;
        assert_eq!(&trace_id, trace, "the api answers the caller's trace id");
        let done = stack.wait_done(&id).await?;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["result"]["source"], "upstream");
        assert_eq!(done["result"]["place"], *city);
        assert_eq!(done["trace_id"], *trace);
        let spans = stack.job_trace(trace, 2).await?;
        assert_job_tree(&spans, &id, Some(caller), SEARCH_AND_FORECAST);
    }

    // The same place again: a cache hit, and no weather-service spans.
    let again = "11112222333344445555666677778888";
    let (id, _) = stack
        .enqueue(
            r#"{"city": "berlin "}"#,
            &[("traceparent", &format!("00-{again}-{caller}-01"))],
        )
        .await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["result"]["source"], "cache", "{done}");
    let spans = stack.job_trace(again, 0).await?;
    assert_job_tree(&spans, &id, Some(caller), &[]);
    Ok(())
}

#[tokio::test]
async fn requests_without_or_with_malformed_trace_headers_still_cross_the_queue()
-> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Quito"}"#, &[]).await?;
    assert_eq!(trace.len(), 32);
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    let spans = stack.job_trace(&trace, 2).await?;
    assert_job_tree(&spans, &id, None, SEARCH_AND_FORECAST);

    let malformed = [
        (
            "00-xyz-00f067aa0ba902b7-01",
            r#"{"latitude": -33.9, "longitude": 18.4}"#,
        ),
        (
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            r#"{"latitude": 64.1, "longitude": -21.9}"#,
        ),
    ];
    for (bad, place) in malformed {
        let (id, trace) = stack.enqueue(place, &[("traceparent", bad)]).await?;
        assert_ne!(trace, "00000000000000000000000000000000");
        stack.wait_done(&id).await?;
        let spans = stack.job_trace(&trace, 1).await?;
        assert_job_tree(&spans, &id, None, &["GET /v1/forecast"]);
    }
    Ok(())
}

#[tokio::test]
async fn a_job_from_an_unsampled_request_is_not_traced_in_the_worker() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let unsampled = "99998888777766665555444433332222";
    let (id, trace) = stack
        .enqueue(
            r#"{"city": "Cairo"}"#,
            &[(
                "traceparent",
                &format!("00-{unsampled}-00f067aa0ba902b7-00"),
            )],
        )
        .await?;
    assert_eq!(trace, unsampled, "the trace id is kept, sampled or not");
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    // A sampled job afterwards proves export works.
    let (id, sampled) = stack.enqueue(r#"{"city": "Dakar"}"#, &[]).await?;
    stack.wait_done(&id).await?;
    stack.job_trace(&sampled, 2).await?;
    // Every service stopped has flushed what it buffered: had the
    // unsampled job left spans, on either worker, they are here now.
    let zipkin = stack.flush().await?;
    assert!(
        zipkin.trace(unsampled).is_empty(),
        "spans of an unsampled trace were exported: {:#?}",
        zipkin.trace(unsampled)
    );
    Ok(())
}

#[tokio::test]
async fn unknown_places_fail_at_once_and_bad_input_harms_nothing() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Nowhere Special"}"#, &[]).await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["attempts"], 1, "an unknown place is not retried");
    assert!(
        done["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown place"),
        "{done}"
    );
    let consumer = stack
        .zipkin
        .wait_for(WAIT, "failed CONSUMER span", |spans| {
            spans
                .iter()
                .find(|s| s["traceId"] == trace.as_str() && s["kind"] == "CONSUMER")
                .cloned()
        })
        .await?;
    assert_eq!(consumer["tags"]["otel.status_code"], "ERROR");
    assert_eq!(consumer["tags"]["error.type"], "unknown_place");

    for (body, status) in [
        ("{", 400),
        ("[]", 422),
        (r#"{"city": ""}"#, 422),
        (r#"{"latitude": 91, "longitude": 0}"#, 422),
        (r#"{"city": "Oslo", "units": "kelvin"}"#, 422),
    ] {
        let (got, problem) = stack.post(body, &[]).await?;
        assert_eq!(got, status, "{body}: {problem}");
        assert_eq!(problem["status"], status);
    }
    let huge = format!(r#"{{"city": "{}"}}"#, "x".repeat(100_000));
    assert_eq!(stack.post(&huge, &[]).await?.0, 413);
    let res = stack
        .http
        .get(format!("{}/v1/jobs/not-a-job", stack.api_url))
        .send()
        .await?;
    assert_eq!(res.status(), 404);

    assert!(stack.api.is_running(), "the api survived");
    assert!(stack.stub.is_running(), "the stub survived");
    for w in &mut stack.workers {
        assert!(w.is_running(), "every worker survived");
    }
    // And it still works.
    let (id, _) = stack
        .enqueue(r#"{"city": "Accra", "units": "imperial"}"#, &[])
        .await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["result"]["temperature_unit"], "°F", "{done}");
    Ok(())
}

#[tokio::test]
async fn each_retry_is_its_own_span_linked_to_the_attempt_before() -> anyhow::Result<()> {
    let stack = Stack::start_with(&[("STUB_FAIL_RATE", "1")], &[("JOB_MAX_ATTEMPTS", "3")]).await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Paris"}"#, &[]).await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["attempts"], 3);
    assert!(
        done["error"].as_str().unwrap_or_default().contains("503"),
        "{done}"
    );

    // The PRODUCER span is the api's and the attempts the workers', each
    // sent in its own process's export batch: wait for all four.
    let (producer, attempts) = stack
        .zipkin
        .wait_for(
            WAIT,
            "the PRODUCER span and three CONSUMER spans",
            |spans| {
                let of_trace = || spans.iter().filter(|s| s["traceId"] == trace.as_str());
                let producer = of_trace().find(|s| s["kind"] == "PRODUCER")?.clone();
                let mut c: Vec<Value> = of_trace()
                    .filter(|s| s["kind"] == "CONSUMER")
                    .cloned()
                    .collect();
                c.sort_by_key(|s| {
                    s["tags"]["job.attempt"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                });
                (c.len() == 3).then_some((producer, c))
            },
        )
        .await?;
    for (i, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["tags"]["job.attempt"], (i + 1).to_string());
        assert_eq!(
            attempt["parentId"], producer["id"],
            "every attempt hangs under the producer"
        );
        assert_eq!(attempt["tags"]["otel.status_code"], "ERROR");
        assert_eq!(attempt["tags"]["error.type"], "503");
        match i {
            0 => assert!(attempt["tags"].get("otel.link.1").is_none(), "{attempt}"),
            _ => assert_eq!(
                attempt["tags"]["otel.link.1"],
                format!(
                    "{trace}-{}",
                    attempts[i - 1]["id"].as_str().unwrap_or_default()
                ),
                "attempt {} links to attempt {i}",
                i + 1
            ),
        }
    }
    Ok(())
}

#[tokio::test]
async fn trace_filter_leaves_out_the_spans_it_names_and_refuses_nonsense() -> anyhow::Result<()> {
    let stack = Stack::launch(Options {
        worker_env: &[("TRACE_FILTER", "info,worker::cache=off")],
        workers: Some(1),
        ..Options::default()
    })
    .await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Lima"}"#, &[]).await?;
    stack.wait_done(&id).await?;
    let zipkin = stack.flush().await?;
    let worker: Vec<Value> = zipkin
        .trace(&trace)
        .into_iter()
        .filter(|s| s["localEndpoint"]["serviceName"] == "worker")
        .collect();
    let client = |s: &&Value| s["kind"] == "CLIENT";
    assert_eq!(
        worker.iter().filter(|s| s["kind"] == "CONSUMER").count(),
        1,
        "{worker:#?}"
    );
    assert_eq!(
        worker.iter().filter(client).count(),
        2,
        "the search and the forecast, no cache spans: {worker:#?}"
    );
    assert!(
        worker
            .iter()
            .filter(client)
            .all(|s| s["tags"]["db.system.name"].is_null()),
        "{worker:#?}"
    );

    // A filter that does not parse stops the service at start, saying why.
    let run = tokio::process::Command::new(testkit::project_binary("worker")?)
        .env("TRACE_FILTER", "worker=loudly")
        .env("OTEL_TRACES_EXPORTER", "none")
        // Nothing listens there: the worker must fail before using it.
        .env(
            "REDIS_URL",
            format!("redis://127.0.0.1:{}", testkit::free_port()?),
        )
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, run)
        .await
        .context("the worker did not stop on a bad TRACE_FILTER")??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("TRACE_FILTER"), "{stderr}");
    Ok(())
}
