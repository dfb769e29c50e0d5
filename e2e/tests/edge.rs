//! What the api takes from callers it does not control: B3's "do not
//! sample", an untrusted caller's trace (linked, not adopted), and caller
//! baggage (allow-listed and bounded; that it never reaches third parties
//! is tested with the propagators).

use e2e::Stack;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn b3_do_not_sample_is_honoured_across_the_queue() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut denied = Vec::new();
    for header in [("b3", "0"), ("X-B3-Sampled", "0")] {
        let (id, trace) = stack.enqueue(r#"{"city": "Lima"}"#, &[header]).await?;
        let done = stack.wait_done(&id).await?;
        assert_eq!(done["status"], "succeeded", "{done}");
        denied.push(trace);
    }
    // A sampled job afterwards proves export works.
    let (id, sampled) = stack.enqueue(r#"{"city": "Quito"}"#, &[]).await?;
    stack.wait_done(&id).await?;
    stack.job_trace(&sampled, 2).await?;
    let zipkin = stack.flush().await?;
    for trace in &denied {
        assert!(
            zipkin.trace(trace).is_empty(),
            "a job the caller asked not to sample was traced: {:#?}",
            zipkin.trace(trace)
        );
    }
    let posts = zipkin
        .spans()
        .into_iter()
        .filter(|s| s["name"] == "POST /v1/jobs")
        .count();
    assert_eq!(posts, 1, "only the sampled request left a SERVER span");
    Ok(())
}

#[tokio::test]
async fn an_untrusted_callers_trace_is_linked_from_a_new_root() -> anyhow::Result<()> {
    let stack = Stack::start_with_api(&[("TRUST_INBOUND_TRACE", "false")]).await?;
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let (id, trace) = stack
        .enqueue(r#"{"city": "Accra"}"#, &[("traceparent", &traceparent)])
        .await?;
    assert_ne!(trace, CALLER_TRACE, "the caller's trace was adopted");
    stack.wait_done(&id).await?;
    let spans = stack.job_trace(&trace, 2).await?;
    let server = spans
        .iter()
        .find(|s| s["kind"] == "SERVER" && s["localEndpoint"]["serviceName"] == "api")
        .expect("the api's SERVER span");
    assert!(server.get("parentId").is_none(), "a root: {server}");
    assert_eq!(
        server["tags"]["otel.link.0"],
        format!("{CALLER_TRACE}-{CALLER_SPAN}"),
        "{server}"
    );
    let zipkin = stack.flush().await?;
    assert!(zipkin.trace(CALLER_TRACE).is_empty());
    Ok(())
}

#[tokio::test]
async fn only_allowed_caller_baggage_within_the_bound_reaches_the_job() -> anyhow::Result<()> {
    let stack =
        Stack::start_with_api(&[("BAGGAGE_ALLOW", "tenant"), ("BAGGAGE_MAX_BYTES", "64")]).await?;
    let long = "x".repeat(100);
    let baggage = format!("tenant=acme,secret=s3cr3t,note={long}");
    let (id, _) = stack
        .enqueue(r#"{"city": "Nairobi"}"#, &[("baggage", &baggage)])
        .await?;
    let client = redis::Client::open(stack.redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let meta: String = redis::cmd("HGET")
        .arg(format!("jobs:{{weather}}:job:{id}"))
        .arg("meta")
        .query_async(&mut conn)
        .await?;
    let meta: serde_json::Value = serde_json::from_str(&meta)?;
    assert_eq!(meta["baggage"], "tenant=acme", "{meta}");

    let allow_all =
        Stack::start_with_api(&[("BAGGAGE_ALLOW", "*"), ("BAGGAGE_MAX_BYTES", "40")]).await?;
    let (id, _) = allow_all
        .enqueue(r#"{"city": "Nairobi"}"#, &[("baggage", &baggage)])
        .await?;
    let done = allow_all.wait_done(&id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    let client = redis::Client::open(allow_all.redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let meta: String = redis::cmd("HGET")
        .arg(format!("jobs:{{weather}}:job:{id}"))
        .arg("meta")
        .query_async(&mut conn)
        .await?;
    let meta: serde_json::Value = serde_json::from_str(&meta)?;
    let kept = meta["baggage"].as_str().unwrap_or_default();
    assert!(
        kept.contains("tenant=acme") && kept.contains("secret=s3cr3t"),
        "{kept}"
    );
    assert!(
        !kept.contains(&long),
        "the bound cut the long entry: {kept}"
    );
    Ok(())
}

#[tokio::test]
async fn made_up_methods_share_one_other_label_and_add_no_series() -> anyhow::Result<()> {
    let stack = Stack::start_with_api(&[("API_KEYS", "a-key-for-the-test")]).await?;
    let http = reqwest::Client::new();
    for n in 0..40 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{n}").as_bytes())?;
        let res = http
            .request(method, format!("{}/v1/jobs", stack.api_url))
            .send()
            .await?;
        // Refused (no key, or no such method), never a 5xx.
        assert!(res.status().is_client_error(), "{}", res.status());
    }
    let page = stack.scrape(&stack.api_url).await?;
    assert!(!page.contains("MADEUP"), "a series per made-up method");
    assert!(
        page.contains(r#"http_request_method="_OTHER""#),
        "the made-up methods are counted as _OTHER"
    );
    Ok(())
}
