//! What a service takes from a caller it does not control: whether it
//! joins the caller's trace or starts its own linked to it, and which of
//! the caller's baggage it keeps.

use opentelemetry::Context;
use opentelemetry::baggage::{Baggage, BaggageExt};
use opentelemetry::trace::{SpanContext, TraceContextExt};

/// The edge policy: `TRUST_INBOUND_TRACE`, `BAGGAGE_ALLOW`,
/// `BAGGAGE_MAX_BYTES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgePolicy {
    /// Join the caller's trace (`true`), or start a new root trace that
    /// links to it (`false`: for callers on the open internet, who could
    /// otherwise force sampling or graft requests onto other traces).
    pub trust_trace: bool,
    /// The caller's baggage keys kept.
    pub baggage_allow: BaggageAllow,
    /// Most bytes of caller baggage kept (`key=value` pairs as encoded,
    /// kept in the order they came until the next would pass the bound).
    pub baggage_max_bytes: usize,
}

impl Default for EdgePolicy {
    /// Trusts the caller's trace; keeps no caller baggage.
    fn default() -> Self {
        Self {
            trust_trace: true,
            baggage_allow: BaggageAllow::Keys(Vec::new()),
            baggage_max_bytes: DEFAULT_BAGGAGE_MAX_BYTES,
        }
    }
}

/// The default of `BAGGAGE_MAX_BYTES`.
pub const DEFAULT_BAGGAGE_MAX_BYTES: usize = 1024;

/// Which caller baggage keys are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaggageAllow {
    /// Every key (`*`).
    All,
    /// Only these (none when empty).
    Keys(Vec<String>),
}

impl BaggageAllow {
    /// Parses `BAGGAGE_ALLOW`: `*`, or a comma-separated list of keys
    /// (empty: none).
    pub fn parse(value: &str) -> Self {
        if value.trim() == "*" {
            return Self::All;
        }
        Self::Keys(
            value
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    fn allows(&self, key: &str) -> bool {
        match self {
            Self::All => true,
            Self::Keys(keys) => keys.iter().any(|k| k == key),
        }
    }
}

/// Where a request's SERVER span goes: its parent context (trace and the
/// baggage kept) and, for an untrusted caller, the caller's span to link.
#[derive(Debug)]
pub struct Inbound {
    /// The parent context to set on the SERVER span.
    pub parent: Context,
    /// The caller's span, linked instead of adopted.
    pub link: Option<SpanContext>,
}

impl EdgePolicy {
    /// Applies the policy to what the propagators read from a request.
    pub fn apply(&self, caller: &Context) -> Inbound {
        let baggage = self.kept_baggage(caller.baggage());
        if self.trust_trace {
            return Inbound {
                parent: caller.with_baggage(baggage),
                link: None,
            };
        }
        let span = caller.span();
        let sc = span.span_context();
        Inbound {
            parent: Context::new().with_baggage(baggage),
            link: sc.is_valid().then(|| sc.clone()),
        }
    }

    fn kept_baggage(&self, caller: &Baggage) -> Baggage {
        let mut kept = Baggage::new();
        let mut bytes = 0;
        for (key, (value, metadata)) in caller {
            if !self.baggage_allow.allows(key.as_str()) {
                continue;
            }
            // `key=value`, and a comma between pairs.
            let size = key.as_str().len() + 1 + value.as_str().len() + usize::from(bytes > 0);
            if bytes + size > self.baggage_max_bytes {
                continue;
            }
            bytes += size;
            let _ = kept.insert_with_metadata(key.clone(), value.clone(), metadata.clone());
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry::{KeyValue, StringValue};

    fn caller() -> Context {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("id"),
            SpanId::from_hex("00f067aa0ba902b7").expect("id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(sc).with_baggage([
            KeyValue::new("tenant", "acme"),
            KeyValue::new("user.email", "someone@example.com"),
        ])
    }

    #[test]
    fn only_allowed_baggage_keys_are_kept_and_none_by_default() {
        let none = EdgePolicy::default().apply(&caller());
        assert_eq!(none.parent.baggage().len(), 0);
        let policy = EdgePolicy {
            baggage_allow: BaggageAllow::parse("tenant, region"),
            ..EdgePolicy::default()
        };
        let kept = policy.apply(&caller()).parent;
        assert_eq!(kept.baggage().len(), 1);
        assert_eq!(
            kept.baggage().get("tenant"),
            Some(&StringValue::from("acme"))
        );
        let all = EdgePolicy {
            baggage_allow: BaggageAllow::parse("*"),
            ..EdgePolicy::default()
        };
        assert_eq!(all.apply(&caller()).parent.baggage().len(), 2);
    }

    #[test]
    fn baggage_is_cut_to_the_size_bound() {
        let policy = EdgePolicy {
            baggage_allow: BaggageAllow::All,
            // "tenant=acme" is 11 bytes; the e-mail pair does not fit.
            baggage_max_bytes: 20,
            ..EdgePolicy::default()
        };
        let kept = policy.apply(&caller()).parent;
        assert_eq!(kept.baggage().len(), 1, "{:?}", kept.baggage());
        assert!(kept.baggage().get("tenant").is_some());
    }

    #[test]
    fn an_untrusted_caller_is_linked_not_adopted() {
        let trusted = EdgePolicy::default().apply(&caller());
        assert!(trusted.parent.has_active_span() && trusted.link.is_none());
        let policy = EdgePolicy {
            trust_trace: false,
            ..EdgePolicy::default()
        };
        let inbound = policy.apply(&caller());
        assert!(
            !inbound.parent.span().span_context().is_valid(),
            "a new root"
        );
        let link = inbound.link.expect("the caller's span is linked");
        assert_eq!(
            link.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(
            policy.apply(&Context::new()).link.is_none(),
            "no caller span, no link"
        );
    }
}
