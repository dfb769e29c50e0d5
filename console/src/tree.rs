//! A trace as an indented tree for the terminal: service, span, kind,
//! duration and errors, children under their parent by start time.
//!
//! ```text
//! trace 4bf92f3577b34da6a3ce929d0e0e4736: 9 spans, 3 services, 14.2 ms
//! api  post /v1/jobs  SERVER  4.2 ms
//! └─ api  send weather  PRODUCER → redis  0.9 ms
//!    └─ worker  process weather  CONSUMER → redis  9.8 ms  (waited 2 ms)
//!       ├─ worker  get  CLIENT → redis  0.3 ms
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write;

use crate::store::model::{Kind, Span};

fn kind(k: Option<Kind>) -> &'static str {
    match k {
        Some(Kind::Server) => "SERVER",
        Some(Kind::Client) => "CLIENT",
        Some(Kind::Producer) => "PRODUCER",
        Some(Kind::Consumer) => "CONSUMER",
        None => "LOCAL",
    }
}

fn millis(us: u64) -> String {
    if us >= 100_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else {
        format!("{:.1} ms", us as f64 / 1000.0)
    }
}

/// One span's line, without the tree drawing.
fn line(s: &Span) -> String {
    let service = s
        .local_endpoint
        .as_ref()
        .and_then(|e| e.service_name.as_deref())
        .unwrap_or("?");
    let mut out = format!(
        "{service}  {}  {}",
        s.name.as_deref().unwrap_or("?"),
        kind(s.kind)
    );
    if let Some(remote) = s
        .remote_endpoint
        .as_ref()
        .and_then(|e| e.service_name.as_deref())
    {
        write!(out, " → {remote}").unwrap_or_default();
    }
    match s.duration {
        Some(d) => write!(out, "  {}", millis(d)).unwrap_or_default(),
        None => out.push_str("  (unfinished)"),
    }
    if let Some(wait) = s.tags.get("job.queue_wait_ms") {
        write!(out, "  (waited {wait} ms)").unwrap_or_default();
    }
    if let Some(attempt) = s.tags.get("job.attempt").filter(|a| *a != "1") {
        write!(out, "  attempt {attempt}").unwrap_or_default();
    }
    if let Some(error) = s.tags.get("error") {
        let what = s.tags.get("error.type").unwrap_or(error).replace('\n', " ");
        write!(out, "  ERROR {what}").unwrap_or_default();
    }
    out
}

/// The spans under each parent id (`None`: the roots, and spans whose
/// parent is not in the trace), each list by start time.
pub(crate) fn children(spans: &[Span]) -> HashMap<Option<&str>, Vec<&Span>> {
    let ids: HashSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    let mut children: HashMap<Option<&str>, Vec<&Span>> = HashMap::new();
    for s in spans {
        let parent = s
            .parent_id
            .as_deref()
            .filter(|p| ids.contains(p) && *p != s.id);
        children.entry(parent).or_default().push(s);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| (s.timestamp, s.id.clone()));
    }
    children
}

/// When a trace began and ended (epoch µs): its earliest start and latest
/// end, saturating (posted times are anyone's numbers).
pub(crate) fn bounds(spans: &[Span]) -> (u64, u64) {
    let start = spans.iter().filter_map(|s| s.timestamp).min().unwrap_or(0);
    let end = spans
        .iter()
        .filter_map(|s| Some(s.timestamp?.saturating_add(s.duration.unwrap_or(0))))
        .max()
        .unwrap_or(start);
    (start, end)
}

/// Renders `spans` (one trace) as a tree. Spans whose parent is not in the
/// trace start trees of their own.
pub fn render(spans: &[Span]) -> String {
    let mut out = String::new();
    let Some(first) = spans.first() else {
        return "no spans\n".into();
    };
    let services: BTreeSet<&str> = spans
        .iter()
        .filter_map(|s| s.local_endpoint.as_ref()?.service_name.as_deref())
        .collect();
    let (start, end) = bounds(spans);
    let _ = writeln!(
        out,
        "trace {}: {} spans, {} services, {}",
        first.trace_id,
        spans.len(),
        services.len(),
        millis(end.saturating_sub(start))
    );
    let children = children(spans);
    draw(&children, &mut out);
    out
}

/// Levels of indentation drawn; deeper spans are drawn at this depth with
/// their depth written out, so a deep chain's lines stay short.
const MAX_INDENT: usize = 32;

/// Draws every tree, depth first, from an explicit stack: a trace of any
/// depth (a chain of a million spans) draws without deepening the call
/// stack. Posted ids may form a cycle: each span is drawn once.
fn draw(children: &HashMap<Option<&str>, Vec<&Span>>, out: &mut String) {
    let mut seen: HashSet<&str> = HashSet::new();
    // (span, its depth, the prefix of its line, the branch before it:
    // none for a root)
    let mut stack: Vec<(&Span, usize, String, Option<&str>)> = children
        .get(&None)
        .map(|roots| {
            roots
                .iter()
                .rev()
                .map(|r| (*r, 0, String::new(), None))
                .collect()
        })
        .unwrap_or_default();
    while let Some((span, depth, prefix, branch)) = stack.pop() {
        if !seen.insert(span.id.as_str()) {
            continue;
        }
        let deep = if depth > MAX_INDENT {
            format!("[depth {depth}] ")
        } else {
            String::new()
        };
        let _ = writeln!(out, "{prefix}{}{deep}{}", branch.unwrap_or(""), line(span));
        let Some(kids) = children.get(&Some(span.id.as_str())) else {
            continue;
        };
        // A root's children start at the margin; past MAX_INDENT levels
        // the prefix stops growing.
        let below = match branch {
            None => prefix,
            Some(_) if depth >= MAX_INDENT => prefix,
            Some("└─ ") => format!("{prefix}   "),
            Some(_) => format!("{prefix}│  "),
        };
        for (i, kid) in kids.iter().enumerate().rev() {
            let last = i + 1 == kids.len();
            let branch = if last { "└─ " } else { "├─ " };
            stack.push((*kid, depth + 1, below.clone(), Some(branch)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{Endpoint, test_span};

    fn span(id: u64, parent: Option<u64>, service: &str, name: &str, k: Option<Kind>) -> Span {
        test_span(id, parent, service, name, k, id * 1000, 2_500 - id * 100)
    }

    #[test]
    fn a_trace_draws_as_a_tree_with_kinds_durations_and_errors() {
        let mut consumer = span(
            3,
            Some(2),
            "worker",
            "process weather",
            Some(Kind::Consumer),
        );
        consumer.tags.insert("job.queue_wait_ms".into(), "2".into());
        consumer.tags.insert("job.attempt".into(), "2".into());
        consumer.tags.insert("error".into(), "true".into());
        consumer.tags.insert("error.type".into(), "503".into());
        consumer.remote_endpoint = Some(Endpoint {
            service_name: Some("redis".into()),
            ..Endpoint::default()
        });
        let spans = vec![
            span(5, Some(3), "worker", "set", Some(Kind::Client)),
            consumer,
            span(1, None, "api", "post /v1/jobs", Some(Kind::Server)),
            span(4, Some(3), "worker", "get", Some(Kind::Client)),
            span(2, Some(1), "api", "send weather", Some(Kind::Producer)),
            span(9, Some(77), "billing", "orphan", None),
        ];
        assert_eq!(
            render(&spans),
            "trace 4bf92f3577b34da6a3ce929d0e0e4736: 6 spans, 3 services, 9.6 ms\n\
             api  post /v1/jobs  SERVER  2.4 ms\n\
             └─ api  send weather  PRODUCER  2.3 ms\n\
             \x20  └─ worker  process weather  CONSUMER → redis  2.2 ms  (waited 2 ms)  attempt 2  ERROR 503\n\
             \x20     ├─ worker  get  CLIENT  2.1 ms\n\
             \x20     └─ worker  set  CLIENT  2.0 ms\n\
             billing  orphan  LOCAL  1.6 ms\n"
        );
    }

    #[test]
    fn a_chain_deeper_than_any_stack_draws_with_short_lines() {
        // 200,000 levels: a recursive walk would overflow the test thread's
        // 2 MiB stack, and full indentation would print gigabytes.
        const DEPTH: u64 = 200_000;
        let spans: Vec<Span> = (1..=DEPTH)
            .map(|id| {
                let parent = (id > 1).then(|| id - 1);
                test_span(id, parent, "api", "step", None, id, 1)
            })
            .collect();
        let out = render(&spans);
        assert_eq!(out.lines().count() as u64, DEPTH + 1);
        let longest = out.lines().map(str::len).max().unwrap_or(0);
        assert!(longest < 400, "a line of {longest} bytes");
        assert!(out.contains("[depth 199999]"), "the depth is written out");
    }

    #[test]
    fn times_at_the_edge_of_u64_do_not_overflow() {
        let mut a = span(1, None, "api", "a", None);
        a.timestamp = Some(u64::MAX - 5);
        a.duration = Some(u64::MAX);
        let mut b = span(2, Some(1), "api", "b", None);
        b.timestamp = Some(0);
        b.duration = Some(u64::MAX);
        let out = render(&[a, b]);
        assert!(out.starts_with("trace "), "{out}");
    }
}
