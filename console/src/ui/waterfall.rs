//! A trace as a waterfall: every span of every service on one time axis,
//! coloured by service (and named, so colour is never the only cue), with
//! a badge for its kind. A CONSUMER span draws the time its job waited in
//! the queue as a dashed bar before its own. Each row opens (keyboard or
//! pointer) to show the span's tags, events and links; a link to a span
//! of the same trace (a retry's previous attempt, the producer) jumps to it.

use std::collections::{HashMap, HashSet};

use maud::{Markup, html};

use crate::store::model::{Kind, Span};

/// Colours with white text readable on them (contrast 4.5:1 or more).
const PALETTE: &[&str] = &[
    "#0969da", "#bc4c00", "#1a7f37", "#8250df", "#cf222e", "#0a7e8c", "#9a6700", "#57606a",
];

/// A colour for each of `services`, by their sorted order: distinct for
/// up to eight services, and the same for the same set on every page.
pub(crate) fn colours<'a>(services: &[&'a str]) -> HashMap<&'a str, &'static str> {
    let mut sorted = services.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, s)| (s, PALETTE[i % PALETTE.len()]))
        .collect()
}

fn kind(k: Option<Kind>) -> &'static str {
    match k {
        Some(Kind::Server) => "server",
        Some(Kind::Client) => "client",
        Some(Kind::Producer) => "producer",
        Some(Kind::Consumer) => "consumer",
        None => "local",
    }
}

pub(crate) fn millis(us: u64) -> String {
    if us >= 100_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else {
        format!("{:.1} ms", us as f64 / 1000.0)
    }
}

pub(crate) fn service(s: &Span) -> &str {
    s.local_endpoint
        .as_ref()
        .and_then(|e| e.service_name.as_deref())
        .unwrap_or("?")
}

/// The spans in tree order (parents first, siblings by start), with their
/// depth.
fn ordered(spans: &[Span]) -> Vec<(&Span, usize)> {
    let children = crate::tree::children(spans);
    let mut out = Vec::with_capacity(spans.len());
    let mut seen = HashSet::new();
    let mut stack: Vec<(&Span, usize)> = children
        .get(&None)
        .map(|roots| roots.iter().rev().map(|s| (*s, 0)).collect())
        .unwrap_or_default();
    while let Some((s, depth)) = stack.pop() {
        if !seen.insert(s.id.as_str()) {
            continue;
        }
        out.push((s, depth));
        if let Some(kids) = children.get(&Some(s.id.as_str())) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    out
}

/// The spans on the critical path of each root: the chain of work that
/// decided when the trace finished. From a span, the child that finished
/// last is on it, then the child that finished last before that one
/// started, and so on back to the span's start, each followed down the
/// same way (Jaeger's rule). A span "finishes" when the last work under it
/// does: a PRODUCER span ends before the job it sent runs, and the job is
/// still what the trace waited for. Walked with a stack: a trace may be
/// thousands of spans deep.
fn critical_path(spans: &[Span]) -> HashSet<&str> {
    let children = crate::tree::children(spans);
    let own_end = |s: &Span| {
        s.timestamp
            .unwrap_or(0)
            .saturating_add(s.duration.unwrap_or(0))
    };
    // Children before parents: the tree order, backwards.
    let mut finish: HashMap<&str, u64> = HashMap::with_capacity(spans.len());
    for (s, _) in ordered(spans).into_iter().rev() {
        let under = children
            .get(&Some(s.id.as_str()))
            .into_iter()
            .flatten()
            .filter_map(|k| finish.get(k.id.as_str()).copied())
            .max()
            .unwrap_or(0);
        finish.insert(s.id.as_str(), own_end(s).max(under));
    }
    let end = |s: &Span| {
        finish
            .get(s.id.as_str())
            .copied()
            .unwrap_or_else(|| own_end(s))
    };
    let mut on = HashSet::new();
    let mut stack: Vec<&Span> = children.get(&None).cloned().unwrap_or_default();
    while let Some(s) = stack.pop() {
        if !on.insert(s.id.as_str()) {
            continue;
        }
        let Some(kids) = children.get(&Some(s.id.as_str())) else {
            continue;
        };
        let mut by_end: Vec<&Span> = kids
            .iter()
            .copied()
            .filter(|k| k.timestamp.is_some())
            .collect();
        by_end.sort_by_key(|k| std::cmp::Reverse(end(k)));
        let mut cursor = end(s);
        for k in by_end {
            if end(k) <= cursor {
                stack.push(k);
                cursor = k.timestamp.unwrap_or(0);
            }
        }
    }
    on
}

/// Rows a waterfall draws at first: a trace larger than this draws its
/// first rows, in tree order, and a summary of the rest with a link that
/// draws this many more.
pub(crate) const ROWS: usize = 2000;

/// How many rows a `?spans=N` asks for: [`ROWS`] at least.
pub(crate) fn rows_asked(query: &std::collections::HashMap<String, String>) -> usize {
    query
        .get("spans")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(ROWS)
        .max(ROWS)
}

/// Renders the waterfall of one trace, drawing at most `rows` spans;
/// `zipkin_ui` adds an "open in Zipkin" link; `more` is the page the
/// "draw more" link goes to (its `spans` parameter is added).
pub(crate) fn render(spans: &[Span], zipkin_ui: Option<&str>, rows: usize, more: &str) -> Markup {
    if spans.is_empty() {
        return html! { p.empty { "No spans yet: services send theirs within a second or so." } };
    }
    let start = spans.iter().filter_map(|s| s.timestamp).min().unwrap_or(0);
    // Saturating: posted times and durations are anyone's numbers.
    let end = spans
        .iter()
        .filter_map(|s| Some(s.timestamp?.saturating_add(s.duration.unwrap_or(1))))
        .max()
        .unwrap_or(start.saturating_add(1));
    let total = end.saturating_sub(start).max(1) as f64;
    let pct = |us: u64| us as f64 * 100.0 / total;
    let ids: HashSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    // A job in link mode shows two traces: the request's and its own.
    let mut trace_ids: Vec<&str> = Vec::new();
    for s in spans {
        if !trace_ids.contains(&s.trace_id.as_str()) {
            trace_ids.push(s.trace_id.as_str());
        }
    }
    let mut services: Vec<&str> = spans.iter().map(service).collect();
    services.sort_unstable();
    services.dedup();
    let colour = colours(&services);
    html! {
        div.trace-head {
            p {
                @if trace_ids.len() == 1 { "Trace " } @else { "Traces " }
                @for (i, t) in trace_ids.iter().enumerate() {
                    @if i > 0 { " and " }
                    code { (t) }
                }
                ": " (spans.len()) " spans, "
                (services.len()) " services, " (millis(total as u64)) "."
                @if let Some(ui) = zipkin_ui {
                    @for t in &trace_ids {
                        " " a href=(format!("{}/zipkin/traces/{t}", ui.trim_end_matches('/'))) { "Open " code { (&t[..8]) } " in Zipkin" }
                    }
                }
            }
            ul.legend aria-label="Services" {
                @for s in &services {
                    li { span.swatch style=(format!("background:{}", colour[s])) {} (s) }
                }
            }
        }
        @let tree = ordered(spans);
        @let drawn = tree.len().min(rows);
        @let critical = critical_path(spans);
        p.hint { "Spans on the critical path (the work the trace waited for) are marked ◆ and outlined." }
        ol.waterfall aria-label="Spans on one time axis" {
            @for &(s, depth) in &tree[..drawn] {
                @let begin = s.timestamp.unwrap_or(start).saturating_sub(start);
                @let width = pct(s.duration.unwrap_or(1)).max(0.3);
                @let wait = (s.kind == Some(Kind::Consumer))
                    .then(|| s.tags.get("job.queue_wait_ms")?.parse::<u64>().ok())
                    .flatten()
                    .map(|ms| ms.saturating_mul(1000));
                li.span id=(format!("span-{}", s.id)) style=(format!("--depth:{depth};--c:{}", colour[service(s)])) {
                    details {
                        summary {
                            span.name {
                                span.svc { (service(s)) }
                                " " (s.name.as_deref().unwrap_or("?"))
                                @if let Some(r) = s.remote_endpoint.as_ref().and_then(|e| e.service_name.as_deref()) {
                                    " → " (r)
                                }
                                " "
                                span class=(format!("kind kind-{}", kind(s.kind))) { (kind(s.kind)) }
                                @if s.tags.contains_key("error") { " " span.err { "error" } }
                                @if critical.contains(s.id.as_str()) { " " span.crit title="On the critical path" aria-label="on the critical path" { "◆" } }
                            }
                            span.track aria-hidden="true" {
                                @if let Some(w) = wait {
                                    span.wait style=(format!("left:{:.3}%;width:{:.3}%", pct(begin.saturating_sub(w)), pct(w.min(begin)))) {}
                                }
                                span class=(if critical.contains(s.id.as_str()) { "bar critical" } else { "bar" }) style=(format!("left:{:.3}%;width:{:.3}%", pct(begin), width)) {}
                            }
                            span.dur {
                                (s.duration.map_or("?".into(), millis))
                                @if let Some(w) = wait { " (waited " (millis(w)) ")" }
                            }
                        }
                        (details(s, &ids))
                    }
                }
            }
        }
        @if drawn < tree.len() {
            (not_drawn(&tree[drawn..], drawn, more))
        }
    }
}

/// The summary of the spans a large trace's waterfall leaves out: how many,
/// of which services, and a link that draws [`ROWS`] more.
fn not_drawn(rest: &[(&Span, usize)], drawn: usize, more: &str) -> Markup {
    let mut by_service: Vec<(&str, usize)> = Vec::new();
    for (s, _) in rest {
        let name = service(s);
        match by_service.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => by_service.push((name, 1)),
        }
    }
    by_service.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let sep = if more.contains('?') { '&' } else { '?' };
    html! {
        p.more #spans-not-drawn role="status" {
            (rest.len()) " more spans not drawn ("
            @for (i, (name, count)) in by_service.iter().enumerate() {
                @if i > 0 { ", " }
                (name) " " (count)
            }
            "). "
            a #draw-more href=(format!("{more}{sep}spans={}", drawn + ROWS)) { "Draw " (ROWS.min(rest.len())) " more" }
        }
    }
}

/// What a span row shows when opened.
fn details(s: &Span, ids: &HashSet<&str>) -> Markup {
    let tags = serde_json::to_string_pretty(&s.tags).unwrap_or_default();
    html! {
        div.details {
            button.copy type="button" data-copy=(tags) { "Copy tags" }
            dl {
                dt { "span id" } dd { code { (s.id) } }
                @if let Some(p) = &s.parent_id { dt { "parent" } dd { a href=(format!("#span-{p}")) { code { (p) } } } }
                @if let Some(r) = s.remote_endpoint.as_ref().and_then(|e| e.service_name.as_deref()) {
                    dt { "remote" } dd { (r) }
                }
                @for (k, v) in &s.tags {
                    @if let Some(target) = k.strip_prefix("otel.link.").and(v.split_once('-')) {
                        dt { "link" }
                        dd {
                            @if ids.contains(target.1) {
                                a href=(format!("#span-{}", target.1)) { code { (target.1) } }
                            } @else {
                                code { (v) }
                            }
                        }
                    } @else {
                        dt { (k) } dd { (v) }
                    }
                }
            }
            @if !s.annotations.is_empty() {
                h4 { "Events" }
                ul.events {
                    @for a in &s.annotations {
                        li {
                            "+" (millis(a.timestamp.saturating_sub(s.timestamp.unwrap_or(a.timestamp)))) " "
                            (a.value)
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::test_span;

    fn span(
        id: u64,
        parent: Option<u64>,
        svc: &str,
        name: &str,
        k: Option<Kind>,
        at: u64,
        dur: u64,
    ) -> Span {
        test_span(id, parent, svc, name, k, at, dur)
    }

    #[test]
    fn spans_sit_on_one_axis_with_the_queue_wait_before_the_consumer() {
        let mut consumer = span(
            3,
            Some(2),
            "worker",
            "process weather",
            Some(Kind::Consumer),
            5_000,
            5_000,
        );
        consumer.tags.insert("job.queue_wait_ms".into(), "3".into());
        consumer.tags.insert(
            "otel.link.0".into(),
            "4bf92f3577b34da6a3ce929d0e0e4736-0000000000000002".into(),
        );
        consumer
            .tags
            .insert("error".into(), "<script>alert(1)</script>".into());
        let spans = vec![
            consumer,
            span(
                1,
                None,
                "api",
                "post /v1/jobs",
                Some(Kind::Server),
                0,
                2_000,
            ),
            span(
                2,
                Some(1),
                "api",
                "send weather",
                Some(Kind::Producer),
                1_000,
                1_000,
            ),
        ];
        let page = render(&spans, Some("http://zipkin:9411/"), ROWS, "/jobs/x").into_string();
        let rows: Vec<&str> = page
            .match_indices("<li class=\"span\"")
            .map(|(i, _)| &page[i..i + 60])
            .collect();
        assert_eq!(rows.len(), 3, "{page}");
        assert!(
            rows[0].contains("span-0000000000000001"),
            "tree order: {rows:?}"
        );
        assert!(
            rows[2].contains("span-0000000000000003"),
            "tree order: {rows:?}"
        );
        // The consumer starts at half the trace and lasts half of it; it
        // waited 3 ms of the 5 before it.
        assert!(
            page.contains("class=\"bar critical\" style=\"left:50.000%;width:50.000%\""),
            "{page}"
        );
        assert!(
            page.contains("class=\"wait\" style=\"left:20.000%;width:30.000%\""),
            "{page}"
        );
        assert!(page.contains("(waited 3.0 ms)"));
        assert!(
            page.contains("href=\"#span-0000000000000002\""),
            "links jump to the producer"
        );
        assert!(page.contains(
            "href=\"http://zipkin:9411/zipkin/traces/4bf92f3577b34da6a3ce929d0e0e4736\""
        ));
        assert!(page.contains("kind kind-consumer"));
        assert!(!page.contains("<script>alert"), "tags are escaped");
        assert!(page.contains("&lt;script&gt;"));
        assert_eq!(page.matches("<details>").count(), 3, "every row opens");
        let c = colours(&["worker", "api", "weather-stub", "api"]);
        assert_eq!(c.len(), 3);
        assert_ne!(c["api"], c["worker"], "every service its own colour");
    }

    #[test]
    fn times_and_waits_at_the_edge_of_u64_render_without_overflow() {
        let mut a = test_span(
            1,
            None,
            "worker",
            "process weather",
            Some(Kind::Consumer),
            0,
            1,
        );
        a.timestamp = Some(u64::MAX - 5);
        a.duration = Some(u64::MAX);
        a.tags
            .insert("job.queue_wait_ms".into(), u64::MAX.to_string());
        let mut b = test_span(2, Some(1), "worker", "get", Some(Kind::Client), 0, 1);
        b.timestamp = Some(u64::MAX);
        b.duration = None;
        let html = render(&[a, b], None, ROWS, "/jobs/x").into_string();
        assert!(html.contains("process weather"), "{html}");
    }

    #[test]
    fn a_large_trace_draws_its_first_rows_and_sums_up_the_rest() {
        let mut spans = vec![span(
            1,
            None,
            "api",
            "POST /v1/jobs",
            Some(Kind::Server),
            0,
            10,
        )];
        for i in 2..=ROWS as u64 + 10 {
            spans.push(span(i, Some(1), "worker", "step", None, i, 1));
        }
        let html = render(&spans, None, ROWS, "/jobs/x").into_string();
        assert_eq!(
            html.matches("<li class=\"span\"").count(),
            ROWS,
            "rows drawn"
        );
        assert!(
            html.contains("10 more spans not drawn (worker 10)"),
            "{}",
            &html[html.len() - 600..]
        );
        assert!(html.contains(&format!("href=\"/jobs/x?spans={}\"", 2 * ROWS)));
        let all = render(&spans, None, 2 * ROWS, "/jobs/x").into_string();
        assert_eq!(all.matches("<li class=\"span\"").count(), ROWS + 10);
        assert!(!all.contains("not drawn"));
    }

    #[test]
    fn the_critical_path_follows_what_finished_last() {
        // 1 [0, 100]: 2 [0, 30], 3 [10, 90], 4 [20, 60] (under 3), 5 [60, 85]
        // (under 3), 6 [95, 99]. Path: 1, 6, 3, 5, then 4 (ends at 60,
        // when 5 starts). 2 ends after 3 starts: off the path.
        let spans = vec![
            span(1, None, "api", "root", Some(Kind::Server), 0, 100),
            span(2, Some(1), "api", "a", None, 0, 30),
            span(3, Some(1), "worker", "b", None, 10, 80),
            span(4, Some(3), "worker", "c", None, 20, 40),
            span(5, Some(3), "worker", "d", None, 60, 25),
            span(6, Some(1), "api", "e", None, 95, 4),
        ];
        let on = critical_path(&spans);
        let mut ids: Vec<&str> = on.into_iter().collect();
        ids.sort_unstable();
        let want: Vec<String> = [1u64, 3, 4, 5, 6]
            .iter()
            .map(|i| format!("{i:016x}"))
            .collect();
        assert_eq!(ids, want.iter().map(String::as_str).collect::<Vec<_>>());
        let html = render(&spans, None, ROWS, "/jobs/x").into_string();
        assert_eq!(html.matches("bar critical").count(), 5, "{html}");
        assert!(html.contains("data-copy"), "a span's tags can be copied");
        // A job: the PRODUCER span ends before its CONSUMER span runs, and
        // the trace still waited for the job.
        let job = vec![
            span(1, None, "api", "post", Some(Kind::Server), 0, 10),
            span(2, Some(1), "api", "send", Some(Kind::Producer), 2, 3),
            span(
                3,
                Some(2),
                "worker",
                "process",
                Some(Kind::Consumer),
                20,
                50,
            ),
            span(4, Some(3), "worker", "get", Some(Kind::Client), 25, 10),
        ];
        assert_eq!(critical_path(&job).len(), 4, "the job's whole chain");
        // A chain 5,000 deep: every span on it, no recursion.
        let mut chain = vec![span(1, None, "api", "root", None, 0, 10_000)];
        for i in 2..=5_000u64 {
            chain.push(span(i, Some(i - 1), "api", "step", None, i, 10_000 - 2 * i));
        }
        assert_eq!(critical_path(&chain).len(), 5_000);
    }
}
