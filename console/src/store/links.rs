//! The service graph of a trace, by Zipkin's linking rules
//! (`zipkin2.internal.DependencyLinker`):
//!
//! - SERVER and CONSUMER spans link their remote service (the client, the
//!   broker) to their own; a server span without a remote service name
//!   takes its caller from the nearest ancestor span that has a kind;
//! - CLIENT and PRODUCER spans link their own service to the remote one (the
//!   server, the broker); a client span whose call reached a traced server
//!   is left to the server's span, so each call counts once;
//! - messaging spans without a broker name are skipped, and a root server
//!   span without a known caller links nothing;
//! - a link is in error when its span has the `error` tag (for a server
//!   span, or its client's).

use std::collections::{HashMap, HashSet};

use super::SpanRec;
use super::intern::{Interner, Sym};
use super::model::{DependencyLink, Kind};

/// Links counted over traces.
#[derive(Debug, Default)]
pub(crate) struct Links {
    counts: HashMap<(Sym, Sym), (u64, u64)>,
}

impl Links {
    fn add(&mut self, parent: Sym, child: Sym, error: bool) {
        let (calls, errors) = self.counts.entry((parent, child)).or_default();
        *calls += 1;
        if error {
            *errors += 1;
        }
    }

    /// The links, sorted by parent then child.
    pub(crate) fn into_list(self, strings: &Interner) -> Vec<DependencyLink> {
        let mut out: Vec<DependencyLink> = self
            .counts
            .into_iter()
            .map(
                |((parent, child), (call_count, error_count))| DependencyLink {
                    parent: strings.get(parent).to_owned(),
                    child: strings.get(child).to_owned(),
                    call_count,
                    error_count,
                },
            )
            .collect();
        out.sort_by(|a, b| (&a.parent, &a.child).cmp(&(&b.parent, &b.child)));
        out
    }
}

/// Adds the links of one trace's spans to `links`. `error` is the symbol
/// of the `error` tag key, if any span has it.
pub(crate) fn link_trace(spans: &[SpanRec], error: Option<Sym>, links: &mut Links) {
    let mut by_id: HashMap<u64, Vec<&SpanRec>> = HashMap::with_capacity(spans.len());
    for s in spans {
        by_id.entry(s.id).or_default().push(s);
    }
    // Ids of client spans whose call a traced server span answered.
    let answered: HashSet<u64> = spans
        .iter()
        .filter(|s| s.kind == Some(Kind::Server))
        .map(|s| if s.shared { s.id } else { s.parent })
        .collect();
    for s in spans {
        let (local, remote) = (s.local.service, s.remote.service);
        let kind = match s.kind {
            Some(Kind::Client) if answered.contains(&s.id) => continue,
            Some(kind) => kind,
            // A local span naming both sides is read as a client.
            None if !local.is_none() && !remote.is_none() => Kind::Client,
            None => continue,
        };
        let (mut parent, child) = match kind {
            Kind::Server | Kind::Consumer => (remote, local),
            Kind::Client | Kind::Producer => (local, remote),
        };
        let mut in_error = s.has_error(error);
        if matches!(kind, Kind::Producer | Kind::Consumer) {
            if !parent.is_none() && !child.is_none() {
                links.add(parent, child, in_error);
            }
            continue;
        }
        if let Some(ancestor) = rpc_ancestor(s, &by_id)
            && !ancestor.local.service.is_none()
        {
            let caller = ancestor.local.service;
            if kind == Kind::Client && !local.is_none() && caller != local {
                links.add(caller, local, false);
            }
            if kind == Kind::Server || parent.is_none() {
                parent = caller;
            }
            // A call split between a client and a server span is counted
            // on the server's: take the client's error too.
            if !in_error && ancestor.kind == Some(Kind::Client) && s.parent == ancestor.id {
                in_error = ancestor.has_error(error);
            }
        }
        if !parent.is_none() && !child.is_none() {
            links.add(parent, child, in_error);
        }
    }
}

/// The nearest ancestor of `span` that has a kind (a remote span).
fn rpc_ancestor<'a>(span: &SpanRec, by_id: &HashMap<u64, Vec<&'a SpanRec>>) -> Option<&'a SpanRec> {
    // The tree parent: for the server half of a shared span, the client
    // half (same id); otherwise the span named by `parent`.
    let parent_of = |s: &SpanRec| -> Option<&'a SpanRec> {
        if s.shared && s.kind == Some(Kind::Server) {
            let client = by_id
                .get(&s.id)?
                .iter()
                .find(|c| c.kind == Some(Kind::Client))
                .copied();
            if client.is_some() {
                return client;
            }
        }
        (s.parent != 0)
            .then(|| by_id.get(&s.parent))
            .flatten()
            .and_then(|found| found.iter().find(|p| !p.shared).or(found.first()).copied())
    };
    let mut current = parent_of(span);
    // Bounded: ids may form a cycle in posted data.
    for _ in 0..by_id.len() {
        let p = current?;
        if p.kind.is_some() {
            return Some(p);
        }
        current = parent_of(p);
    }
    None
}
