//! The api's edge: its own accept loop, so that a client that sends its
//! request too slowly is cut off (`API_REQUEST_TIMEOUT_SECS`, 15 s by
//! default) and holds no place in flight while it dawdles.
//!
//! - **Headers**: hyper closes a connection whose request head has not
//!   arrived in time (`header_read_timeout`: axum's own `serve` has no
//!   timer to give hyper, hence this loop).
//! - **Bodies**: [`read_body`] reads the whole body, within the time left,
//!   before the request asks for a place ([`crate::limit`]): a body that
//!   has not arrived in time gets `408`, and a slow body never holds one of
//!   the `API_MAX_IN_FLIGHT` places. The body is read up to the route's
//!   limit (a batch's, or the rest's), past which it is `413`.
//!
//! A graceful stop stops accepting, lets the requests in flight finish,
//! and closes idle connections.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::ApiError;

/// How long a request's head and body may take to arrive by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Serves `app` on `listener` until `shutdown` completes, cutting off
/// requests whose head arrives slower than `timeout`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather
                    // than spin (as axum's own loop does).
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What [`read_body`] needs: the deadline, and the largest bodies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// How long the body may take, from when the request's head arrived.
    pub(crate) timeout: Duration,
    /// The largest body of a batch (`POST /v1/jobs/batch`).
    pub(crate) batch: usize,
    /// The largest body of any other route.
    pub(crate) other: usize,
}

/// axum middleware: the request's whole body, read within the deadline,
/// before anything else (see the module docs).
pub(crate) async fn read_body(
    State(limits): State<BodyLimits>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let has_body = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) || request.headers().contains_key(header::CONTENT_LENGTH)
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return next.run(request).await;
    }
    let limit = if request.uri().path() == "/v1/jobs/batch" {
        limits.batch
    } else {
        limits.other
    };
    let (parts, body) = request.into_parts();
    let left = limits.timeout.saturating_sub(started.elapsed());
    // One byte past the limit, so that the route's own limit answers 413.
    let read = Limited::new(body, limit.saturating_add(1)).collect();
    match tokio::time::timeout(left, read).await {
        Ok(Ok(collected)) => {
            let body = Body::from(collected.to_bytes());
            next.run(Request::from_parts(parts, body)).await
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            ApiError::TooLarge(format!("the body is larger than {limit} bytes")).into_response()
        }
        Ok(Err(e)) => {
            ApiError::BadRequest(format!("the body could not be read: {e}")).into_response()
        }
        Err(_) => {
            let mut res = ApiError::RequestTimeout(format!(
                "the request's body did not arrive within {} s",
                limits.timeout.as_secs_f64()
            ))
            .into_response();
            // The rest of a body that never came is not waited for.
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            res
        }
    }
}
