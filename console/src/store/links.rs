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

/// Links counted over traces: by symbol for the traces read under one
/// taking of the lock, then by name.
#[derive(Debug, Default)]
pub(crate) struct Links {
    counts: HashMap<(Sym, Sym), (u64, u64)>,
    named: HashMap<(String, String), (u64, u64)>,
}

impl Links {
    fn add(&mut self, parent: Sym, child: Sym, error: bool) {
        let (calls, errors) = self.counts.entry((parent, child)).or_default();
        *calls += 1;
        if error {
            *errors += 1;
        }
    }

    /// Moves the counts by symbol to the counts by name, while `strings`
    /// still names the symbols.
    pub(crate) fn flush(&mut self, strings: &Interner) {
        for ((parent, child), (calls, errors)) in self.counts.drain() {
            let (c, e) = self
                .named
                .entry((
                    strings.get(parent).to_owned(),
                    strings.get(child).to_owned(),
                ))
                .or_default();
            *c += calls;
            *e += errors;
        }
    }

    /// The links, sorted by parent then child ([`Self::flush`] first).
    pub(crate) fn into_list(self) -> Vec<DependencyLink> {
        let mut out: Vec<DependencyLink> = self
            .named
            .into_iter()
            .map(
                |((parent, child), (call_count, error_count))| DependencyLink {
                    parent,
                    child,
                    call_count,
                    error_count,
                },
            )
            .collect();
        out.sort_by(|a, b| (&a.parent, &a.child).cmp(&(&b.parent, &b.child)));
        out
    }

    /// Adds the links of one trace's spans. `error` is the symbol of the
    /// `error` tag key, if any span has it. Linear in the number of spans:
    /// each span's nearest remote ancestor is found once
    /// ([`rpc_ancestors`]).
    pub(crate) fn link_trace(&mut self, spans: &[SpanRec], error: Option<Sym>) {
        let ancestors = rpc_ancestors(spans);
        // Ids of client spans whose call a traced server span answered.
        let answered: HashSet<u64> = spans
            .iter()
            .filter(|s| s.kind == Some(Kind::Server))
            .map(|s| if s.shared { s.id } else { s.parent })
            .collect();
        for (i, s) in spans.iter().enumerate() {
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
                    self.add(parent, child, in_error);
                }
                continue;
            }
            if let Some(ancestor) = ancestors[i].map(|a| &spans[a])
                && !ancestor.local.service.is_none()
            {
                let caller = ancestor.local.service;
                if kind == Kind::Client && !local.is_none() && caller != local {
                    self.add(caller, local, false);
                }
                if kind == Kind::Server || parent.is_none() {
                    parent = caller;
                }
                // A call split between a client and a server span is
                // counted on the server's: take the client's error too.
                if !in_error && ancestor.kind == Some(Kind::Client) && s.parent == ancestor.id {
                    in_error = ancestor.has_error(error);
                }
            }
            if !parent.is_none() && !child.is_none() {
                self.add(parent, child, in_error);
            }
        }
    }
}

/// For each span, the index of its nearest ancestor that has a kind (a
/// remote span), if any. Each span's answer is found once: a walk up the
/// tree stops at the first span already answered, and gives its answer to
/// every span it passed (they have no kind, so they share it). Ids that
/// form a cycle in posted data end the walk with no ancestor.
fn rpc_ancestors(spans: &[SpanRec]) -> Vec<Option<usize>> {
    let mut by_id: HashMap<u64, Vec<usize>> = HashMap::with_capacity(spans.len());
    for (i, s) in spans.iter().enumerate() {
        by_id.entry(s.id).or_default().push(i);
    }
    // The tree parent: for the server half of a shared span, the client
    // half (same id); otherwise the span named by `parent`.
    let parent_of = |i: usize| -> Option<usize> {
        let s = &spans[i];
        if s.shared
            && s.kind == Some(Kind::Server)
            && let Some(client) = by_id
                .get(&s.id)
                .and_then(|same| same.iter().find(|&&c| spans[c].kind == Some(Kind::Client)))
        {
            return Some(*client);
        }
        if s.parent == 0 {
            return None;
        }
        let found = by_id.get(&s.parent)?;
        found
            .iter()
            .find(|&&p| !spans[p].shared)
            .or(found.first())
            .copied()
    };
    #[derive(Clone, Copy)]
    enum State {
        Unknown,
        Walking,
        Known(Option<usize>),
    }
    let mut state = vec![State::Unknown; spans.len()];
    let mut path = Vec::new();
    for start in 0..spans.len() {
        if matches!(state[start], State::Known(_)) {
            continue;
        }
        path.clear();
        path.push(start);
        state[start] = State::Walking;
        let mut current = parent_of(start);
        let answer = loop {
            let Some(p) = current else {
                break None;
            };
            if spans[p].kind.is_some() {
                break Some(p);
            }
            match state[p] {
                State::Known(a) => break a,
                // A cycle.
                State::Walking => break None,
                State::Unknown => {
                    state[p] = State::Walking;
                    path.push(p);
                    current = parent_of(p);
                }
            }
        };
        for &i in &path {
            state[i] = State::Known(answer);
        }
    }
    state
        .into_iter()
        .map(|s| match s {
            State::Known(a) => a,
            State::Unknown | State::Walking => None,
        })
        .collect()
}
