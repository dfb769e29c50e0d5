//! The service map: services in columns by how far they are from a
//! caller, calls as arrows with their counts (red when some failed), and
//! the same as a list for screen readers.

use std::collections::{HashMap, HashSet};

use maud::{Markup, html};

use super::UiState;
use super::waterfall::colours;
use crate::now_ms;
use crate::store::model::DependencyLink;

/// The service map: services in columns by how far they are from a
/// caller, edges with their call counts (and errors).
fn svg(links: &[DependencyLink]) -> Markup {
    if links.is_empty() {
        return html! { p { "No calls between services in the last hour yet." } };
    }
    let mut nodes: Vec<&str> = links
        .iter()
        .flat_map(|l| [l.parent.as_str(), l.child.as_str()])
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    let column = columns(&nodes, links);
    let mut rows: HashMap<usize, usize> = HashMap::new();
    let mut at: HashMap<&str, (f64, f64)> = HashMap::new();
    const COL: f64 = 260.0;
    const ROW: f64 = 130.0;
    for n in &nodes {
        let c = column[n];
        let r = rows.entry(c).or_insert(0);
        at.insert(n, (90.0 + c as f64 * COL, 50.0 + *r as f64 * ROW));
        *r += 1;
    }
    let colour = colours(&nodes);
    let width = 180.0 + (column.values().max().copied().unwrap_or(0) as f64) * COL;
    let height = 150.0 + (rows.values().max().copied().unwrap_or(1) as f64 - 1.0) * ROW;
    let label = |l: &DependencyLink| {
        let calls = if l.call_count == 1 { "call" } else { "calls" };
        match l.error_count {
            0 => format!("{} {calls}", l.call_count),
            e => format!("{} {calls}, {e} failed", l.call_count),
        }
    };
    let description: Vec<String> = links
        .iter()
        .map(|l| format!("{} calls {} ({})", l.parent, l.child, label(l)))
        .collect();
    html! {
        svg.map viewBox=(format!("0 0 {width} {height}")) role="img" aria-label=(format!("Service map: {}", description.join("; "))) {
            defs {
                marker #arrow viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse" {
                    path d="M 0 0 L 10 5 L 0 10 z" fill="#57606a" {}
                }
            }
            @for l in links {
                @let (x1, y1) = at[l.parent.as_str()];
                @let (x2, y2) = at[l.child.as_str()];
                // The stroke is the light theme's; the stylesheet sets each
                // theme's (`.edge`, `.edge.failing`).
                @let stroke = if l.error_count > 0 { "#cf222e" } else { "#57606a" };
                @let class = if l.error_count > 0 { "edge failing" } else { "edge" };
                @if x2 > x1 {
                    // Forward: from the caller's right side to the callee's left.
                    path class=(class) d=(format!("M {:.0} {:.0} L {:.0} {:.0}", x1 + 70.0, y1, x2 - 72.0, y2))
                        fill="none" stroke=(stroke) stroke-width="2" marker-end="url(#arrow)" {}
                    text.count x=(format!("{:.0}", (x1 + x2) / 2.0)) y=(format!("{:.0}", (y1 + y2) / 2.0 - 10.0)) text-anchor="middle" { (label(l)) }
                } @else {
                    // Back (a worker calling the broker it reads from): a
                    // curve below both boxes.
                    @let mx = (x1 + x2) / 2.0;
                    @let low = y1.max(y2) + 80.0;
                    path class=(class) d=(format!("M {:.0} {:.0} Q {mx:.0} {low:.0} {:.0} {:.0}", x1, y1 + 18.0, x2, y2 + 20.0))
                        fill="none" stroke=(stroke) stroke-width="2" marker-end="url(#arrow)" {}
                    text.count x=(format!("{mx:.0}")) y=(format!("{:.0}", low - 22.0)) text-anchor="middle" { (label(l)) }
                }
            }
            @for n in &nodes {
                @let (x, y) = at[n];
                g.node {
                    rect x=(format!("{:.0}", x - 70.0)) y=(format!("{:.0}", y - 18.0)) width="140" height="36" rx="6" fill=(colour[n]) {}
                    text x=(format!("{x:.0}")) y=(format!("{:.0}", y + 5.0)) text-anchor="middle" fill="#fff" { (n) }
                }
            }
        }
        ul.edges {
            @for d in &description { li { (d) } }
        }
    }
}

/// The column of each service: the longest chain of callers before it,
/// once the calls that close a cycle (a worker calling the broker it reads
/// from) are set aside, found by a depth-first walk from the services no
/// one calls.
fn columns<'a>(nodes: &[&'a str], links: &'a [DependencyLink]) -> HashMap<&'a str, usize> {
    let callees = |n: &str| -> Vec<&'a str> {
        links
            .iter()
            .filter(|l| l.parent == n && l.child != n)
            .map(|l| l.child.as_str())
            .collect()
    };
    let called: HashSet<&str> = links
        .iter()
        .filter(|l| l.parent != l.child)
        .map(|l| l.child.as_str())
        .collect();
    let starts = nodes
        .iter()
        .filter(|n| !called.contains(*n))
        .chain(nodes.iter());
    let mut back: HashSet<(&str, &str)> = HashSet::new();
    let mut done: HashSet<&str> = HashSet::new();
    for start in starts {
        if done.contains(start) {
            continue;
        }
        // (node, its callees still to visit); the stack is the DFS path.
        let mut path: Vec<(&str, Vec<&str>)> = vec![(start, callees(start))];
        done.insert(start);
        while let Some((node, next)) = path.last_mut() {
            let node = *node;
            match next.pop() {
                Some(child) if path.iter().any(|(p, _)| *p == child) => {
                    back.insert((node, child));
                }
                Some(child) if !done.contains(child) => {
                    done.insert(child);
                    path.push((child, callees(child)));
                }
                Some(_) => {}
                None => {
                    path.pop();
                }
            }
        }
    }
    let mut column: HashMap<&str, usize> = nodes.iter().map(|n| (*n, 0)).collect();
    for _ in 0..nodes.len() {
        for l in links {
            let (p, c) = (l.parent.as_str(), l.child.as_str());
            if p != c && !back.contains(&(p, c)) && column[c] < column[p] + 1 {
                column.insert(c, column[p] + 1);
            }
        }
    }
    column
}

pub(crate) async fn body(ui: &UiState) -> Markup {
    match ui.source.dependencies(&ui.http, now_ms(), 3_600_000).await {
        Ok(links) => svg(&links),
        Err(e) => html! { p.notice role="status" { (e) } },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(parent: &str, child: &str) -> DependencyLink {
        DependencyLink {
            parent: parent.into(),
            child: child.into(),
            call_count: 1,
            error_count: 0,
        }
    }

    #[test]
    fn the_pipeline_reads_left_to_right_with_the_cache_call_set_aside() {
        let links = vec![
            link("api", "redis"),
            link("browser", "api"),
            link("redis", "worker"),
            link("worker", "redis"),
            link("worker", "weather-stub"),
        ];
        let nodes = ["api", "browser", "redis", "weather-stub", "worker"];
        let c = columns(&nodes, &links);
        let order: Vec<usize> = ["browser", "api", "redis", "worker", "weather-stub"]
            .iter()
            .map(|n| c[n])
            .collect();
        assert_eq!(order, [0, 1, 2, 3, 4]);
        let page = svg(&links).into_string();
        assert!(page.contains("worker calls redis (1 call)"), "{page}");
    }
}
