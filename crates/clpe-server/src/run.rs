//! Running the daemon: open the data directory, rebuild the engine, bind both
//! listeners, serve until SIGTERM or SIGINT, then drain in-flight requests and close the
//! store.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use clpe_core::AgentLoader;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::daemon::{Daemon, OpenError, engine_config, error_chain};
use crate::grpc::Decisions;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot listen on {addr} (is another `clpe serve` running there?)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the {surface} server failed: {message}")]
    Serve {
        surface: &'static str,
        message: String,
    },
    #[error("the demo policy set was refused: {0}")]
    Demo(String),
    #[error("cannot wait for signals")]
    Signal(#[source] std::io::Error),
}

/// The addresses the daemon listens on (with the ports the system chose for port 0).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), RunError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| RunError::Listen { addr, source })?;
    Ok((listener, local))
}

/// Runs the daemon until SIGTERM or SIGINT. Prints `listening http=ADDR grpc=ADDR` on
/// standard output once both listeners are bound and the engine is ready (tests started
/// on port 0 read the real ports from it).
pub async fn run(
    config: ServerConfig,
    loader: Option<Arc<dyn AgentLoader>>,
) -> Result<(), RunError> {
    let data_dir = config.data_dir.clone();
    let engine = engine_config(&config, loader);
    let daemon = tokio::task::spawn_blocking(move || Daemon::open(&data_dir, engine))
        .await
        .map_err(|e| RunError::Serve {
            surface: "startup",
            message: e.to_string(),
        })??;
    let daemon = Arc::new(daemon);
    let snapshot = daemon.engine().snapshot();
    tracing::info!(
        data_dir = %config.data_dir.display(),
        store = daemon.backend(),
        documents = snapshot.docs.len(),
        revision = snapshot.revision,
        local_peer = %config.local_peer,
        "engine rebuilt from the store"
    );
    drop(snapshot);
    if config.demo {
        apply_demo(&daemon).await?;
    }
    let (http, http_addr) = bind(config.listen).await?;
    let (grpc, grpc_addr) = bind(config.grpc_listen).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(wait_for_signal(Signals::install()?, stop_tx));
    let bound = Bound {
        http: http_addr,
        grpc: grpc_addr,
    };
    announce(&config, bound, &daemon);
    let result = serve(daemon.clone(), http, grpc, &config, stopped(stop_rx)).await;
    signals.abort();
    daemon.set_draining();
    // Every acknowledged write is already on disk (each commit is synced); dropping the
    // last handle closes the store.
    drop(daemon);
    tracing::info!("stopped");
    result
}

fn announce(config: &ServerConfig, bound: Bound, daemon: &Daemon) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening http={} grpc={}", bound.http, bound.grpc);
    if config.demo {
        let _ = writeln!(
            out,
            "{}",
            crate::demo::welcome(bound.http, &config.token_path())
        );
    }
    let _ = out.flush();
    tracing::info!(http = %bound.http, grpc = %bound.grpc, revision = daemon.engine().snapshot().revision, "ready");
}

async fn apply_demo(daemon: &Arc<Daemon>) -> Result<(), RunError> {
    let only_defaults = daemon
        .engine()
        .snapshot()
        .docs
        .values()
        .all(|d| d.key.kind == clpe_core::Kind::Subscription);
    if !only_defaults {
        tracing::info!("the store holds documents: the demo policy set is not applied");
        return Ok(());
    }
    let d = daemon.clone();
    let applied = tokio::task::spawn_blocking(move || {
        let docs = clpe_core::parse_documents(crate::demo::DOCUMENTS).map_err(|e| e.to_string())?;
        d.apply(docs).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| RunError::Demo(e.to_string()))?
    .map_err(RunError::Demo)?;
    tracing::info!(
        revision = applied.revision,
        documents = applied.results.len(),
        "demo policy set applied"
    );
    Ok(())
}

/// Serves both surfaces until `stop` completes, then lets in-flight requests finish.
pub async fn serve(
    daemon: Arc<Daemon>,
    http: TcpListener,
    grpc: TcpListener,
    config: &ServerConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    let router = crate::http::router(daemon.clone(), config.request_timeout);
    let http_task = axum::serve(http, router).with_graceful_shutdown(stopped(rx.clone()));
    let grpc_task = tonic::transport::Server::builder()
        .timeout(config.request_timeout)
        .add_service(Decisions::server(daemon.clone()))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc),
            stopped(rx),
        );
    let drain = tokio::spawn({
        let (daemon, tx) = (daemon.clone(), tx.clone());
        async move {
            stop.await;
            daemon.set_draining();
            tracing::info!("shutting down: draining in-flight requests");
            let _ = tx.send(true);
        }
    });
    // A surface that fails stops the other one too.
    let stop_all = |failed: bool| {
        if failed {
            let _ = tx.send(true);
        }
    };
    let (http_result, grpc_result) = tokio::join!(
        async {
            let r = http_task.into_future().await;
            stop_all(r.is_err());
            r
        },
        async {
            let r = grpc_task.await;
            stop_all(r.is_err());
            r
        }
    );
    drain.abort();
    http_result.map_err(|e| RunError::Serve {
        surface: "HTTP",
        message: error_chain(&e),
    })?;
    grpc_result.map_err(|e| RunError::Serve {
        surface: "gRPC",
        message: error_chain(&e),
    })?;
    Ok(())
}

/// Completes once the flag turns true (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The signals that stop the daemon, installed before it reports ready.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, RunError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(RunError::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(RunError::Signal)?,
        })
    }
}

async fn wait_for_signal(mut signals: Signals, tx: watch::Sender<bool>) {
    let name = tokio::select! {
        _ = signals.term.recv() => "SIGTERM",
        _ = signals.int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "received");
    let _ = tx.send(true);
}
