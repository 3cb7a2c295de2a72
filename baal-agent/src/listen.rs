//! The agent's accept loop: HTTP/1.1 over hyper, with the two limits that hold before any request
//! is authenticated, a cap on open connections and a deadline for each request's headers.
//!
//! Hand-written around hyper rather than poem's `Server`, because poem 3.1 builds its hyper
//! connection itself, with no timer, so hyper's `header_read_timeout` can never take effect there
//! (and its `idle_timeout` only notices silence, not a client dribbling one header byte at a
//! time). The routes stay poem's: each request is handed to the poem endpoint as poem's own
//! server does. HTTP/1.1 only: the agent's clients (the bot, the VM's Caddy) speak nothing else to
//! it, and hyper's header deadline exists for HTTP/1 alone.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, EndpointExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long requests under way at shutdown may still run.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The pause after a failed accept: when the process is out of descriptors, retrying at once
/// would spin a core without freeing any.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// At most one warning per this long while connections are being refused, so that a flood does
/// not become a flood of log lines too.
const REFUSAL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// What a connection may hold before it is authenticated.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; the next ones are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Time to send a request's headers, on a new connection and between kept-alive requests.
    pub header_read_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests under way finish for
/// up to [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    app: impl Endpoint + 'static,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = Arc::new(app.map_to_response());
    let local = LocalAddr(listener.local_addr()?.into());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut last_refusal_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // Closed at once rather than left in the kernel's queue: a client beyond the cap learns
        // it straight away, and the queue stays free for the moment idle connections time out.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            if last_refusal_warning.is_none_or(|at| at.elapsed() >= REFUSAL_WARNING_EVERY) {
                last_refusal_warning = Some(Instant::now());
                tracing::warn!(max = limits.max_connections, "connection limit reached; closing new connections");
            }
            continue;
        };
        // An SSE stream writes small events one by one; with Nagle's algorithm each one after the
        // first would wait for the client's delayed ACK (~40 ms).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = {
            let app = app.clone();
            let local = local.clone();
            let remote = RemoteAddr(remote.into());
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let app = app.clone();
                let request = poem::Request::from((request, local.clone(), remote.clone(), Scheme::HTTP));
                async move {
                    let response: hyper::Response<_> = app.get_response(request).await.into();
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection.await {
                // A client that timed out, went away or sent garbage: its own business.
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::info!("requests still running at shutdown were cut off");
    }
    Ok(())
}
