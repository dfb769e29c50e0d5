//! Outbound HTTP with a CLIENT span per request and the trace context
//! injected into the request headers (with the workspace's propagators:
//! `reqwest-tracing` lags behind the opentelemetry version used here).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::attributes::{
    ERROR_TYPE, HTTP_REQUEST_METHOD, HTTP_REQUEST_RESEND_COUNT, HTTP_RESPONSE_STATUS_CODE,
    PEER_SERVICE, SERVER_ADDRESS, SERVER_PORT, URL_FULL,
};
use crate::metrics::{HttpClientLabels, Metrics};
use crate::propagation::Propagation;

/// Why a request failed, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server answered with an error status.
    #[error("{peer} answered {status}: {reason}")]
    Status {
        /// Who answered.
        peer: String,
        /// The status.
        status: reqwest::StatusCode,
        /// The reason the server gave, if any.
        reason: String,
        /// How long the server asked to wait (`Retry-After` in seconds).
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused, reset, or timed out.
    #[error("{peer} could not be reached: {source}")]
    Transport {
        /// Who was asked.
        peer: String,
        /// What happened.
        #[source]
        source: reqwest::Error,
    },
    /// The answer's body was larger than the client takes.
    #[error(
        "{peer} sent a body larger than {limit} bytes, which is more than any answer it should give"
    )]
    TooLarge {
        /// Who answered.
        peer: String,
        /// The most the client reads.
        limit: usize,
    },
    /// The answer was not the JSON expected.
    #[error("{peer} sent an unexpected answer: {reason}")]
    Decode {
        /// Who answered.
        peer: String,
        /// What did not fit.
        reason: String,
    },
}

impl HttpError {
    /// Server errors, rate limiting and transport failures may pass.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
            Self::Transport { .. } => true,
            Self::Decode { .. } | Self::TooLarge { .. } => false,
        }
    }

    /// How long the server asked to wait before trying again, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Low-cardinality `error.type`.
    pub fn error_type(&self) -> String {
        match self {
            Self::Status { status, .. } => status.as_u16().to_string(),
            Self::Transport { source, .. } if source.is_timeout() => "timeout".into(),
            Self::Transport { .. } => "transport".into(),
            Self::Decode { .. } => "decode".into(),
            Self::TooLarge { .. } => "body_too_large".into(),
        }
    }
}

/// The largest answer body a [`TracedClient`] reads by default.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// One shared HTTP client (connection pooling) that traces and propagates.
///
/// It trusts the services it calls no further than it must: it follows no
/// redirect (a `3xx` is an error naming where it pointed, so a job's
/// request never lands on a host nobody configured), and it reads at most
/// `max_body` bytes of an answer.
#[derive(Debug, Clone)]
pub struct TracedClient {
    client: reqwest::Client,
    propagation: Propagation,
    metrics: Option<Arc<Metrics>>,
    max_body: usize,
}

impl TracedClient {
    /// A client with a per-request `timeout`, recording request durations
    /// in `metrics` if given.
    pub fn new(
        propagation: Propagation,
        timeout: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            propagation,
            metrics,
            max_body: DEFAULT_MAX_BODY,
        })
    }

    /// The same client, reading at most `bytes` of an answer's body.
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes.max(1);
        self
    }

    /// `GET url` as JSON. `peer_service` names the remote service in the
    /// trace (`peer.service`).
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        url: Url,
        peer_service: &str,
    ) -> Result<T, HttpError> {
        self.resend_json(url, peer_service, 0).await
    }

    /// [`Self::get_json`] for the `resend`th time (from 1; 0 is the first
    /// send): a span of its own with `http.request.resend_count`, as the
    /// semantic conventions ask of a caller that sends a request again.
    pub async fn resend_json<T: DeserializeOwned>(
        &self,
        url: Url,
        peer_service: &str,
        resend: u32,
    ) -> Result<T, HttpError> {
        let span = tracing::info_span!(
            "http client",
            otel.name = "GET",
            otel.kind = "client",
            { HTTP_REQUEST_METHOD } = "GET",
            { URL_FULL } = %url,
            { SERVER_ADDRESS } = url.host_str().unwrap_or_default(),
            { SERVER_PORT } = url.port_or_known_default().unwrap_or_default(),
            { PEER_SERVICE } = peer_service,
            { HTTP_REQUEST_RESEND_COUNT } = Empty,
            { HTTP_RESPONSE_STATUS_CODE } = Empty,
            otel.status_code = Empty,
            { ERROR_TYPE } = Empty,
        );
        if resend > 0 {
            span.record(HTTP_REQUEST_RESEND_COUNT, resend);
        }
        let peer = peer_service.to_owned();
        async {
            let started = Instant::now();
            let span = tracing::Span::current();
            let mut headers = reqwest::header::HeaderMap::new();
            self.propagation.inject_http(&span.context(), &mut headers);
            let result = self.send(url, headers, &peer).await;
            let error_type = result.as_ref().err().map(HttpError::error_type);
            if let Some(error_type) = &error_type {
                span.record("otel.status_code", "ERROR");
                span.record(ERROR_TYPE, error_type);
            }
            if let Some(metrics) = &self.metrics {
                let labels = HttpClientLabels::new(&peer, error_type.as_deref());
                Metrics::observe(&metrics.http_client_duration, &labels, started.elapsed());
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        url: Url,
        headers: reqwest::header::HeaderMap,
        peer: &str,
    ) -> Result<T, HttpError> {
        let transport = |source| HttpError::Transport {
            peer: peer.to_owned(),
            source,
        };
        let mut response = self
            .client
            .get(url)
            .headers(headers)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        tracing::Span::current().record(HTTP_RESPONSE_STATUS_CODE, status.as_u16());
        // Delta-seconds only; an HTTP date is rare and left to the backoff.
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| l.chars().take(200).collect::<String>());
        let too_large = || HttpError::TooLarge {
            peer: peer.to_owned(),
            limit: self.max_body,
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            // Open-Meteo explains its errors as {"error": true, "reason": "..."}.
            let reason = match (status.is_redirection(), location) {
                (true, Some(to)) => format!("a redirect to {to}, not followed"),
                _ => serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
                    .unwrap_or_default(),
            };
            return Err(HttpError::Status {
                peer: peer.to_owned(),
                status,
                reason,
                retry_after,
            });
        }
        serde_json::from_slice(&body).map_err(|e| HttpError::Decode {
            peer: peer.to_owned(),
            reason: e.to_string(),
        })
    }
}
