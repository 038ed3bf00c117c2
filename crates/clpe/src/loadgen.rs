//! `clpe loadgen`: the decision API over the wire. Starts a real `clpe serve` (loaded with
//! the workload's documents) and a do-nothing server of the same `.proto`, each in its own
//! process, then drives both with the same gRPC load, back to back: the ratio of their
//! throughputs is the engine's cost over a bare gRPC call.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clpe_core::Event;
use clpe_core::event::Direction;
use clpe_server::grpc::DecisionsClient;
use clpe_server::grpc::proto;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::Exit;
use crate::test_daemon::DaemonProcess;

#[derive(clap::Args)]
pub struct Args {
    /// Documents for the daemon, applied as one batch.
    #[arg(long, required_unless_present = "bare_server")]
    policies: Option<String>,
    /// Events, one JSON object per line, sent round-robin.
    #[arg(long, required_unless_present = "bare_server")]
    events: Option<String>,
    /// The daemon's own peer.
    #[arg(long, default_value = "local")]
    local_peer: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests sent to each server.
    #[arg(long, default_value_t = 200_000)]
    requests: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// While the daemon is driven, get its `/metrics`, then wait this many milliseconds,
    /// over and over (a Prometheus scrape, much more often), to measure decisions during
    /// scrapes.
    #[arg(long, value_name = "MS")]
    scrape: Option<u64>,
    /// Run the do-nothing server (used by loadgen itself).
    #[arg(long, hide = true)]
    bare_server: bool,
}

#[derive(Serialize)]
struct Run {
    requests: usize,
    errors: usize,
    requests_per_second: f64,
    latency_us: Latency,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

#[derive(Serialize)]
struct Report {
    concurrency: usize,
    connections: usize,
    bare: Run,
    daemon: Run,
    /// Daemon throughput over bare-server throughput.
    ratio: f64,
    /// Metrics the daemon served while it was driven (with `--scrape`).
    #[serde(skip_serializing_if = "Option::is_none")]
    scrapes: Option<u64>,
}

pub fn run(args: Args) -> Result<Exit> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.bare_server {
        return runtime.block_on(bare::serve());
    }
    let (Some(policies), Some(events)) = (&args.policies, &args.events) else {
        bail!("--policies and --events are required");
    };
    let requests = load_requests(events)?;
    if requests.is_empty() {
        bail!("{events} holds no events");
    }
    let (daemon, token) = DaemonProcess::start(Some(&args.local_peer))?;
    let text = std::fs::read_to_string(policies).with_context(|| format!("reading {policies}"))?;
    let client = crate::client::Client::with_token(&daemon.http, Some(token.clone()));
    let reply = client.post("/v1/apply", "application/yaml", text.as_bytes(), true)?;
    if !reply.is_success() {
        bail!("the daemon refused the documents: {}", reply.error_line());
    }
    let bare = BareProcess::start()?;
    let bare_run = runtime.block_on(drive(&bare.addr, &requests, &args))?;
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = args.scrape.map(|ms| {
        let client = crate::client::Client::with_token(&daemon.http, Some(token));
        let stop = stop.clone();
        std::thread::spawn(move || {
            crate::bench::scrape_until(&stop, ms, || {
                client.get("/metrics").is_ok_and(|r| r.is_success())
            })
        })
    });
    let daemon_run = runtime.block_on(drive(&daemon.grpc, &requests, &args));
    stop.store(true, Ordering::Relaxed);
    let scrapes = match scraper {
        Some(s) => Some(
            s.join()
                .map_err(|_| anyhow!("the scraping thread failed"))?,
        ),
        None => None,
    };
    let daemon_run = daemon_run?;
    let ratio = daemon_run.requests_per_second / bare_run.requests_per_second.max(1e-9);
    let report = Report {
        concurrency: args.concurrency,
        connections: args.connections,
        bare: bare_run,
        daemon: daemon_run,
        ratio,
        scrapes,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for (name, r) in [
            ("bare gRPC server", &report.bare),
            ("clpe serve", &report.daemon),
        ] {
            println!(
                "{name:<17} {:>9.0} req/s  latency (µs) p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  errors {}",
                r.requests_per_second,
                r.latency_us.p50,
                r.latency_us.p90,
                r.latency_us.p99,
                r.latency_us.max,
                r.errors
            );
        }
        println!(
            "ratio             {:.2} (clpe serve / bare server throughput)",
            report.ratio
        );
        if let Some(n) = report.scrapes {
            println!("scrapes           {n} of the daemon's /metrics while it was driven");
        }
    }
    Ok(Exit::Ok)
}

fn load_requests(path: &str) -> Result<Vec<proto::DecideRequest>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let event = Event::from_json(line).map_err(|e| anyhow!("{path}:{}: {e}", i + 1))?;
            Ok(proto::DecideRequest {
                event: Some(to_proto(&event)),
                explain: false,
                dry_run: false,
            })
        })
        .collect()
}

/// The client side's conversion (the server converts the other way, with validation).
fn to_proto(event: &Event) -> proto::Event {
    use proto::event::Kind;
    let kind = match event {
        Event::NewConnection(e) => Kind::NewConnection(proto::NewConnection {
            direction: match e.direction {
                Direction::Egress => proto::Direction::Egress as i32,
                Direction::Ingress => proto::Direction::Ingress as i32,
            },
            dst_service: e.dst_service.to_string(),
            dst_namespace: e.dst_namespace.as_ref().map(|n| n.to_string()),
            src_service: e.src_service.as_ref().map(|s| s.to_string()),
            src_peer: e.src_peer.as_ref().map(|p| p.to_string()),
            src_attributes: e
                .src_attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            connection_id: e.connection_id.as_ref().map(|c| c.to_string()),
        }),
        Event::ExposeService(e) => Kind::ExposeService(proto::ExposeService {
            service: e.service.to_string(),
            namespace: e.namespace.as_ref().map(|n| n.to_string()),
        }),
        Event::ServiceListRequest(e) => Kind::ServiceListRequest(proto::ServiceListRequest {
            src_peer: e.src_peer.to_string(),
        }),
        Event::ConnectionClosed(e) => Kind::ConnectionClosed(proto::ConnectionClosed {
            connection_id: e.connection_id.to_string(),
            bytes_sent: e.bytes_sent,
            bytes_received: e.bytes_received,
        }),
    };
    proto::Event { kind: Some(kind) }
}

/// Sends `args.requests` requests with `args.concurrency` in flight over
/// `args.connections` HTTP/2 connections; measures each request's round trip.
async fn drive(addr: &str, requests: &[proto::DecideRequest], args: &Args) -> Result<Run> {
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel: Channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        clients.push(DecisionsClient::new(channel));
    }
    let requests = Arc::new(requests.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let total = args.requests;
    // A short warm-up, not measured.
    let warm = DecisionsClient::clone(clients.first().ok_or_else(|| anyhow!("no connection"))?);
    warm_up(warm, &requests).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..args.concurrency.max(1) {
        let mut client = clients
            .get(t % clients.len())
            .cloned()
            .ok_or_else(|| anyhow!("no connection"))?;
        let (requests, next) = (requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let Some(request) = requests.get(i % requests.len()).cloned() else {
                    break;
                };
                let t0 = Instant::now();
                if client.decide(request).await.is_err() {
                    errors += 1;
                }
                latencies.push(t0.elapsed());
            }
            (latencies, errors)
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(total);
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    let wall = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Ok(Run {
        requests: latencies.len(),
        errors,
        requests_per_second: latencies.len() as f64 / wall.max(1e-9),
        latency_us: Latency {
            p50: pct(0.5),
            p90: pct(0.9),
            p99: pct(0.99),
            max: pct(1.0),
        },
    })
}

async fn warm_up(mut client: DecisionsClient<Channel>, requests: &[proto::DecideRequest]) {
    for r in requests.iter().take(2_000) {
        let _ = client.decide(r.clone()).await;
    }
}

/// The do-nothing server in a process of its own, like the daemon.
struct BareProcess {
    child: std::process::Child,
    addr: String,
}

impl BareProcess {
    fn start() -> Result<BareProcess> {
        use std::io::BufRead as _;
        let exe = std::env::current_exe().context("finding the clpe executable")?;
        let mut child = std::process::Command::new(exe)
            .args(["loadgen", "--bare-server"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting the bare server")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no standard output"))?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening grpc=")
            .map(str::to_owned);
        match addr {
            Some(addr) => Ok(BareProcess { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the bare server said {line:?}")
            }
        }
    }
}

impl Drop for BareProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod bare {
    use super::*;
    use proto::decisions_server::{Decisions, DecisionsServer};
    use tonic::{Request, Response, Status, Streaming};

    /// Decodes every request, answers allow. What any gRPC decision service must cost.
    struct Bare;

    type Results =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::DecideResult, Status>> + Send>>;

    #[tonic::async_trait]
    impl Decisions for Bare {
        async fn decide(
            &self,
            request: Request<proto::DecideRequest>,
        ) -> Result<Response<proto::Response>, Status> {
            let _ = request.into_inner();
            Ok(Response::new(proto::Response {
                decision: proto::Decision::Allow as i32,
                reason: "allowed".into(),
                ..Default::default()
            }))
        }

        type DecideStreamStream = Results;

        async fn decide_stream(
            &self,
            _request: Request<Streaming<proto::DecideRequest>>,
        ) -> Result<Response<Results>, Status> {
            Err(Status::unimplemented("the bare server answers Decide only"))
        }
    }

    pub async fn serve() -> Result<Exit> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        println!("listening grpc={addr}");
        std::io::stdout().flush()?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tonic::transport::Server::builder()
            .add_service(DecisionsServer::new(Bare))
            .serve_with_incoming(incoming)
            .await?;
        Ok(Exit::Ok)
    }
}
