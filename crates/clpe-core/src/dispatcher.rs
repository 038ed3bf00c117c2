//! The engine: the event manager, the policy dispatcher and the operator's entry points.
//!
//! Writers (apply, delete) are serialised; each builds a whole new [`Snapshot`] off the
//! hot path and swaps it in. Readers (decisions) load the current snapshot without
//! locking and run the event's chain against it.

use std::cell::RefCell;
use std::hint::cold_path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::agent::{Agent, AgentLoader, Held, Outcome, Verdict};
use crate::context::{Candidate, Context, Notes, Scope, source_attrs};
use crate::document::{DocKey, Document, FailureMode, parse_value};
use crate::error::{ApplyError, EventError};
use crate::event::{
    ConnectionClosed, Decision, Direction, Event, EventType, NewConnection, RateLimit, Response,
    TraceEntry, WouldDeny,
};
use crate::monitor::{Monitor, MonitorAgent};
use crate::names::{AgentName, PeerName, Time};
use crate::runtime::Runtime;
use crate::snapshot::{BuildEnv, BuildError, Docs, Snapshot, build};
use crate::text::Text;

/// A monotonic clock reading in nanoseconds, for latency metrics. The core never reads
/// a clock itself: the host passes one in (or none, and latencies are not measured).
pub type Ticker = Arc<dyn Fn() -> u64 + Send + Sync>;

#[derive(Clone)]
pub struct EngineConfig {
    /// The engine's own peer (`local_peer`): the source peer on egress, the destination
    /// peer on ingress.
    pub local_peer: PeerName,
    /// Seeds `random` and `weighted` balancing, so runs can be reproduced.
    pub seed: u64,
    /// The lease of connections held by no limit policy, seconds.
    pub default_lease_secs: u64,
    /// Decision-log entries kept (0: no log).
    pub decision_log: usize,
    pub ticker: Option<Ticker>,
    pub loader: Option<Arc<dyn AgentLoader>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            local_peer: PeerName::from("local"),
            seed: 0,
            default_lease_secs: 3600,
            decision_log: 1024,
            ticker: None,
            loader: None,
        }
    }
}

/// Per-call options of a decision.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecideOptions {
    /// Attach the trace.
    pub explain: bool,
    /// Decide without consuming limits or counting (`?dryRun=true`).
    pub dry_run: bool,
}

/// A change a batch makes, handed to the durable store before the swap.
#[derive(Clone, Debug)]
pub enum Change {
    Put(Arc<Document>),
    Delete(DocKey),
}

/// What a successful batch did, document by document.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub revision: u64,
    /// `(document, "created" | "configured" | "unchanged" | "deleted")`.
    pub results: Vec<(String, &'static str)>,
}

/// The default subscriptions of SPEC §2.
pub const DEFAULT_SUBSCRIPTIONS: [(EventType, &str, u32); 11] = [
    (EventType::NewConnection, "acl", 0),
    (EventType::NewConnection, "lb", 1),
    (EventType::NewConnection, "connection-limiter", 2),
    (EventType::NewConnection, "rate-limiter", 3),
    (EventType::NewConnection, "monitor", 4),
    (EventType::ExposeService, "acl", 0),
    (EventType::ExposeService, "monitor", 1),
    (EventType::ServiceListRequest, "acl", 0),
    (EventType::ServiceListRequest, "monitor", 1),
    (EventType::ConnectionClosed, "connection-limiter", 0),
    (EventType::ConnectionClosed, "monitor", 1),
];

pub fn default_subscriptions() -> Vec<Document> {
    DEFAULT_SUBSCRIPTIONS
        .iter()
        .enumerate()
        .filter_map(|(i, (event, agent, priority))| {
            let value = serde_json::json!({
                "kind": "Subscription",
                "metadata": {"name": format!("{}-{agent}", event.kebab())},
                "spec": {"event": event.as_str(), "agent": agent, "priority": priority},
            });
            parse_value(value, i + 1).ok()
        })
        .collect()
}

/// A deny: the reason, the policy that denied, the agent that denied (empty: none).
type Denial<'a> = (Held<'a>, Option<Held<'a>>, &'a Text);

/// Sentences shared by many responses, made once.
struct Texts {
    empty: Text,
    no_denial: Text,
    acknowledged: Text,
}

pub struct Engine {
    texts: Texts,
    snapshot: ArcSwap<Snapshot>,
    /// This engine's number, unique in the process: names its snapshot in the threads'
    /// caches (see [`Engine::current`]).
    id: u64,
    /// How many snapshots have been stored: bumped after each store, before the change
    /// is acknowledged.
    published: AtomicU64,
    writer: Mutex<()>,
    runtime: Arc<Runtime>,
    monitor: Arc<Monitor>,
    builtins: Vec<(AgentName, Arc<dyn Agent>)>,
    config: EngineConfig,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("local_peer", &self.config.local_peer)
            .finish()
    }
}

impl Engine {
    /// A new engine holding the default subscriptions and nothing else.
    pub fn new(config: EngineConfig) -> Engine {
        let engine = Engine::empty(config);
        let defaults = default_subscriptions();
        // The defaults only name built-in agents: this cannot fail.
        let _ = engine.apply(defaults);
        engine
    }

    /// An engine rebuilt from stored documents (no defaults added).
    pub fn restore(
        config: EngineConfig,
        docs: Vec<Document>,
        revision: u64,
    ) -> Result<Engine, ApplyError> {
        let engine = Engine::empty(config);
        let mut all = Docs::new();
        for d in docs {
            all.insert(Arc::new(d));
        }
        let snapshot = engine.build(all, revision, &[], None).map_err(|(e, _)| e)?;
        engine.publish(snapshot);
        Ok(engine)
    }

    fn empty(config: EngineConfig) -> Engine {
        let runtime = Arc::new(Runtime::new(
            config.seed,
            config.default_lease_secs.saturating_mul(1_000_000_000),
        ));
        let monitor = Arc::new(Monitor::new(config.decision_log));
        let builtins: Vec<(AgentName, Arc<dyn Agent>)> = vec![
            (AgentName::from("acl"), Arc::new(crate::acl::Acl)),
            (AgentName::from("lb"), Arc::new(crate::lb::LoadBalancer)),
            (
                AgentName::from("connection-limiter"),
                Arc::new(crate::connection_limiter::ConnectionLimiter),
            ),
            (
                AgentName::from("rate-limiter"),
                Arc::new(crate::rate_limiter::RateLimiter),
            ),
            (
                AgentName::from("monitor"),
                Arc::new(MonitorAgent(monitor.clone())),
            ),
        ];
        let empty = Snapshot::empty(&config.local_peer);
        Engine {
            texts: Texts {
                empty: Text::default(),
                no_denial: Text::new("allowed: no agent denied"),
                acknowledged: Text::new("acknowledged"),
            },
            snapshot: ArcSwap::from_pointee(empty),
            id: ENGINES.fetch_add(1, Ordering::Relaxed),
            published: AtomicU64::new(0),
            writer: Mutex::new(()),
            runtime,
            monitor,
            builtins,
            config,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// The monitor's metrics as Prometheus text.
    pub fn metrics(&self) -> String {
        self.monitor.render(&self.runtime)
    }

    /// `changed`: the keys put or deleted since the snapshot in force, when known.
    fn build(
        &self,
        docs: Docs,
        revision: u64,
        batch: &[DocKey],
        changed: Option<&[DocKey]>,
    ) -> Result<Snapshot, (ApplyError, ())> {
        let prev = self.snapshot.load();
        let env = BuildEnv {
            local_peer: &self.config.local_peer,
            builtins: &self.builtins,
            loader: self.config.loader.as_deref(),
            connections: &self.runtime.connections,
        };
        build(docs, revision, Some(&prev), changed, &env).map_err(|e| {
            let err = match e {
                BuildError::Conflict(d) => ApplyError::Conflict(d),
                // A document outside the batch broken by it: the batch conflicts.
                BuildError::Invalid(d)
                    if !batch.iter().any(|k| k.to_string() == d.document) && !batch.is_empty() =>
                {
                    ApplyError::Conflict(d)
                }
                BuildError::Invalid(d) => ApplyError::Invalid(vec![d]),
            };
            (err, ())
        })
    }

    /// Applies a batch, all or nothing.
    pub fn apply(&self, docs: Vec<Document>) -> Result<Applied, ApplyError> {
        self.apply_with(docs, |_| Ok(()))
    }

    /// Applies a batch; `commit` makes it durable before it takes effect (an `Err` from
    /// it changes nothing).
    pub fn apply_with(
        &self,
        docs: Vec<Document>,
        commit: impl FnOnce(&[Change]) -> Result<(), String>,
    ) -> Result<Applied, ApplyError> {
        let _writer = self.writer.lock();
        let current = self.snapshot.load_full();
        let mut next = current.docs.clone();
        // A later document of the batch with the same name wins.
        let mut batch: std::collections::BTreeMap<DocKey, Document> =
            std::collections::BTreeMap::new();
        for doc in docs {
            batch.insert(doc.key.clone(), doc);
        }
        let mut results = Vec::with_capacity(batch.len());
        let mut changes = Vec::with_capacity(batch.len());
        let keys: Vec<DocKey> = batch.keys().cloned().collect();
        for (key, doc) in batch {
            let status = match current.docs.get(&key) {
                None => "created",
                Some(old) if old.raw == doc.raw => "unchanged",
                Some(_) => "configured",
            };
            results.push((key.to_string(), status));
            if status != "unchanged" {
                let doc = Arc::new(doc);
                changes.push(Change::Put(doc.clone()));
                next.insert(doc);
            }
        }
        self.commit(current, next, &keys, changes, results, commit)
    }

    pub fn delete(&self, keys: &[DocKey]) -> Result<Applied, ApplyError> {
        self.delete_with(keys, |_| Ok(()))
    }

    /// Deletes documents, all or nothing; unknown ones are an error.
    pub fn delete_with(
        &self,
        keys: &[DocKey],
        commit: impl FnOnce(&[Change]) -> Result<(), String>,
    ) -> Result<Applied, ApplyError> {
        let _writer = self.writer.lock();
        let current = self.snapshot.load_full();
        let mut next = current.docs.clone();
        let mut results = Vec::new();
        let mut changes = Vec::new();
        for key in keys {
            if next.remove(key).is_none() {
                return Err(ApplyError::NotFound(crate::error::DocError {
                    document: key.to_string(),
                    field: String::new(),
                    message: "no such document".into(),
                }));
            }
            results.push((key.to_string(), "deleted"));
            changes.push(Change::Delete(key.clone()));
        }
        self.commit(current, next, &[], changes, results, commit)
    }

    fn commit(
        &self,
        current: Arc<Snapshot>,
        next: Docs,
        batch: &[DocKey],
        changes: Vec<Change>,
        results: Vec<(String, &'static str)>,
        commit: impl FnOnce(&[Change]) -> Result<(), String>,
    ) -> Result<Applied, ApplyError> {
        let revision = if changes.is_empty() {
            current.revision
        } else {
            current.revision + 1
        };
        let snapshot = if changes.is_empty() {
            None
        } else {
            let changed: Vec<DocKey> = (changes.iter())
                .map(|c| match c {
                    Change::Put(doc) => doc.key.clone(),
                    Change::Delete(key) => key.clone(),
                })
                .collect();
            Some(
                self.build(next, revision, batch, Some(&changed))
                    .map_err(|(e, _)| e)?,
            )
        };
        if let Some(snapshot) = snapshot {
            commit(&changes).map_err(ApplyError::Store)?;
            self.publish(snapshot);
        }
        Ok(Applied { revision, results })
    }

    /// Decides one event. An `Err` means the event itself is malformed; a deny is an `Ok`.
    pub fn decide(
        &self,
        event: &Event,
        now: Time,
        opts: DecideOptions,
    ) -> Result<Response, EventError> {
        // One value returned, from one place: the response is filled where the caller
        // takes it (a response is a few hundred bytes: each move would copy it).
        let mut result = event
            .check()
            .map(|()| Response::new(Decision::Deny, Text::default()));
        let Ok(response) = &mut result else {
            return result;
        };
        // A connection the event names is admitted at the chain's end, or closed at its
        // start, in a shard another thread may have used last: its line starts coming now.
        match event {
            Event::NewConnection(NewConnection {
                connection_id: Some(id),
                ..
            })
            | Event::ConnectionClosed(ConnectionClosed {
                connection_id: id, ..
            }) if !opts.dry_run => self.runtime.connections.prefetch(id.as_str()),
            _ => {}
        }
        // Latency is sampled: a thread's first decision and one in 256 after it are timed,
        // chain and agents. Timing every decision would cost more clock reads (about 30 ns
        // each on a VM) than some agents cost. An explained decision is not timed: it
        // builds a trace, and runs the agents with no work for its event (so that the
        // trace shows them), which other decisions skip.
        let start = self
            .config
            .ticker
            .as_deref()
            .filter(|_| !opts.explain && sample())
            .map(|t| t());
        let current = self.current();
        self.run(&current.snapshot, event, now, opts, start, response);
        result
    }

    /// Puts a new snapshot in force: every decision that starts after this returns sees
    /// it.
    fn publish(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
        self.published.fetch_add(1, Ordering::Release);
    }

    /// The snapshot in force. A thread keeps the snapshot it used last, per engine, and
    /// uses it again while `published` has not moved: one read of a counter that is only
    /// written when a batch is applied, and a count only this thread keeps, where
    /// loading from the `ArcSwap` takes and pays back a debt slot: two atomic
    /// read-modify-writes per decision. The price: a
    /// thread holds its last snapshot until its next decision on that engine (or until
    /// other engines took its place in the thread's cache).
    fn current(&self) -> Rc<Cached> {
        let published = self.published.load(Ordering::Acquire);
        let fresh = |c: &&Rc<Cached>| c.engine == self.id && c.published == published;
        let found = SNAPSHOTS.try_with(|cache| {
            let cache = cache.try_borrow().ok()?;
            cache.iter().flatten().find(fresh).cloned()
        });
        if let Ok(Some(cached)) = found {
            return cached;
        }
        let cached = Rc::new(Cached {
            engine: self.id,
            published,
            snapshot: self.snapshot.load_full(),
        });
        // Kept first; this engine's previous one, or else the least recent, goes.
        let _ = SNAPSHOTS.try_with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return;
            };
            let mine = |c: &Option<Rc<Cached>>| c.as_ref().is_some_and(|c| c.engine == self.id);
            let at = cache.iter().position(mine).unwrap_or(CACHED - 1);
            if let Some(recent) = cache.get_mut(..=at) {
                recent.rotate_right(1);
                if let Some(first) = recent.first_mut() {
                    *first = Some(cached.clone());
                }
            }
        });
        cached
    }

    /// Decides `event` on `snapshot` into `response`, and lets the chain observe it.
    fn run(
        &self,
        snapshot: &Snapshot,
        event: &Event,
        now: Time,
        opts: DecideOptions,
        start: Option<u64>,
        response: &mut Response,
    ) {
        if matches!(event, Event::NewConnection(_)) && !opts.dry_run {
            self.runtime.connections.expire(now);
        }
        let event_type = event.event_type();
        let plan = snapshot.plan(event_type);
        // The agents with work for this event; all of them when explaining, so that the
        // trace shows each one.
        let chain = match (opts.explain, event) {
            (true, _) => snapshot.chain(event_type),
            (false, Event::NewConnection(e)) => plan.runs(Some(e.direction)),
            (false, _) => plan.runs(None),
        };
        let mut tally = Tally::default();
        match resolve(snapshot, event) {
            Ok(scope) => self.run_chain(
                snapshot, chain, event, scope, now, opts, start, &mut tally, response,
            ),
            Err(reason) => {
                cold_path();
                *response = unresolved(event, reason)
            }
        }
        let outcome = Outcome {
            agent_nanos: &tally.timings,
            failures: &tally.failures,
            closed: tally.closed.as_ref(),
            ..Outcome::new(event, response, now)
        };
        self.observe(&plan.observers, outcome, opts, start);
    }

    /// Runs the chain on a resolved event. The context lives in this call and is dropped
    /// in place (moving it would copy it): slots a denied chain reserved are given back
    /// before the monitor observes.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the pieces of one decision"
    )]
    fn run_chain(
        &self,
        snapshot: &Snapshot,
        chain: &[crate::snapshot::Link],
        event: &Event,
        scope: Scope<'_>,
        now: Time,
        opts: DecideOptions,
        start: Option<u64>,
        tally: &mut Tally,
        response: &mut Response,
    ) {
        let runtime: &Runtime = &self.runtime;
        let Tally {
            timings, failures, ..
        } = tally;
        let mut cx = Context {
            snapshot,
            runtime,
            event,
            scope,
            now,
            dry_run: opts.dry_run,
            src: source_attrs(snapshot, event),
            candidates: Default::default(),
            target: None,
            fallbacks: Default::default(),
            target_peers: Vec::new(),
            services: Vec::new(),
            decision: None,
            rate_limit: None,
            slots: Vec::new(),
            lease: None,
            annotations: None,
            connection_id: match event {
                Event::NewConnection(e) => e.connection_id.clone(),
                _ => None,
            },
            closed: None,
            allows: Default::default(),
            notes: Notes {
                current_agent: &self.texts.empty,
                matched: Vec::new(),
                would_deny: Vec::new(),
                explain: opts.explain,
            },
        };
        if let Scope::Egress { import } = scope {
            cx.candidates = candidates(snapshot, import);
        }
        let mut trace = opts.explain.then(Vec::new);
        let mut denial: Option<Denial> = None;
        let ticker = self.config.ticker.as_deref().filter(|_| start.is_some());
        for link in chain {
            cx.notes.current_agent = &link.agent_name;
            // Boxed: a word to carry through the step when there is no trace.
            let saw = trace.as_ref().map(|_| Box::new(cx.view()));
            let t0 = ticker.map(|t| t());
            let result = link.agent.decide(&mut cx);
            if let (Some(t), Some(t0)) = (ticker, t0) {
                cold_path();
                timings.push((link.agent_name.clone(), t().saturating_sub(t0)));
            }
            let (outcome, detail) = match result {
                Ok(Verdict::Continue) => ("continue", None),
                Ok(Verdict::Allow { matched_by }) => {
                    cx.decision = Some(Decision::Allow);
                    if let Some(m) = matched_by {
                        cx.allow(None, m);
                    }
                    ("allow", None)
                }
                Ok(Verdict::Deny { reason, matched_by }) => {
                    cx.decision = Some(Decision::Deny);
                    // The trace's copy only when there is a trace.
                    let detail = trace.as_ref().map(|_| reason.to_text());
                    denial = Some((reason, matched_by, &link.agent_name));
                    ("deny", detail)
                }
                Err(e) => {
                    cold_path();
                    failures.push(link.agent_name.clone());
                    let (outcome, reason) = failed(link, &e);
                    if link.failure_mode == FailureMode::Closed {
                        cx.decision = Some(Decision::Deny);
                        denial = Some((reason.clone().into(), None, &link.agent_name));
                    }
                    (outcome, Some(reason))
                }
            };
            if let (Some(trace), Some(saw)) = (trace.as_mut(), saw) {
                cold_path();
                trace_step(trace, &mut cx, link, outcome, *saw, detail);
            }
            if denial.is_some() {
                break;
            }
        }
        // Stitch: an allowed egress connection needs a target.
        if denial.is_none()
            && let Scope::Egress { import } = scope
            && !cx.ensure_target()
        {
            cold_path();
            let reason = format!(
                "no candidate peer left for Import {}",
                import.key.reference()
            );
            denial = Some((reason.into(), None, &self.texts.empty));
        }
        self.respond(&mut cx, denial, opts, response);
        response.trace = trace;
        tally.closed = cx.closed.take();
    }

    fn respond(
        &self,
        cx: &mut Context<'_>,
        denial: Option<Denial>,
        opts: DecideOptions,
        r: &mut Response,
    ) {
        let event_type = cx.event.event_type();
        // What decided, written where the response is.
        let denied = denial.is_some();
        let mut target = None;
        match denial {
            Some((reason, matched_by, agent)) => {
                // The slots reserved drop with the context: nothing leaks.
                r.decision = Decision::Deny;
                r.reason = reason.into_text();
                r.matched_by = matched_by.map(Held::into_text);
                r.decided_by = (!agent.is_empty()).then(|| agent.clone());
            }
            None => {
                r.decision = Decision::Allow;
                target = cx.target.map(|t| t.name().clone());
                let position = match &target {
                    Some(t) => cx
                        .allows
                        .iter()
                        .position(|m| m.peer == Some(t))
                        .or_else(|| cx.allows.iter().position(|m| m.peer.is_none())),
                    None => cx.allows.iter().position(|m| m.peer.is_none()),
                };
                let mark = position.map(|i| cx.allows.swap_remove(i));
                // A close is acknowledged, whoever allowed it.
                let closed = event_type == EventType::ConnectionClosed;
                match mark {
                    Some(m) => {
                        r.reason = match m.reason {
                            _ if closed => self.texts.acknowledged.clone(),
                            Some(reason) => reason.into_text(),
                            None => {
                                cold_path();
                                format!("allowed by {} ({})", m.matched_by, m.agent).into()
                            }
                        };
                        r.matched_by = Some(m.matched_by.into_text());
                        r.decided_by = Some(m.agent.clone());
                    }
                    None => {
                        r.reason = match closed {
                            true => self.texts.acknowledged.clone(),
                            false => self.texts.no_denial.clone(),
                        };
                    }
                }
            }
        }
        // Most decisions have neither: nothing made, nothing to drop.
        if !cx.notes.would_deny.is_empty() {
            cold_path();
            r.would_deny = (cx.notes.would_deny.iter())
                .map(|(a, p)| WouldDeny {
                    agent: a.clone(),
                    policy: p.clone(),
                })
                .collect();
        }
        if let Some(annotations) = cx.annotations.take() {
            cold_path();
            r.annotations = annotations;
        }
        match cx.event {
            Event::NewConnection(e) => {
                if e.direction == Direction::Egress {
                    r.fallback_peers = Some(match denied {
                        true => Vec::new(),
                        false => cx.fallbacks.iter().map(|c| c.name().clone()).collect(),
                    });
                    r.target_peer = target;
                }
                if denied {
                    return;
                }
                r.rate_limit = cx.rate_limit.map(|b| RateLimit { bits_per_second: b });
                if !opts.dry_run {
                    let peer = cx.target.map(|t| t.peer.open);
                    let slots = std::mem::take(&mut cx.slots);
                    let expires = cx.now.plus_nanos(self.runtime.default_lease);
                    let service = e.src_service.clone();
                    let id = cx.connection_id.clone();
                    let id = self.runtime.admit(id, peer, service, slots, expires);
                    r.connection_id = Some(id);
                } else {
                    cold_path();
                    r.connection_id = cx.connection_id.clone();
                }
            }
            // Control-plane events: rare beside connections.
            Event::ExposeService(_) => {
                cold_path();
                let mut peers = std::mem::take(&mut cx.target_peers);
                if !denied {
                    peers.sort();
                    peers.dedup();
                } else {
                    peers.clear();
                }
                r.target_peers = Some(peers);
            }
            Event::ServiceListRequest(_) => {
                cold_path();
                let mut services = std::mem::take(&mut cx.services);
                if !denied {
                    services.sort();
                    services.dedup();
                } else {
                    services.clear();
                }
                r.services = Some(services);
            }
            Event::ConnectionClosed(_) => {}
        }
    }

    /// Lets every agent of the chain observe the outcome (its chain time filled in).
    fn observe(
        &self,
        chain: &[crate::snapshot::Link],
        mut outcome: Outcome<'_>,
        opts: DecideOptions,
        start: Option<u64>,
    ) {
        if opts.dry_run {
            return;
        }
        outcome.chain_nanos = match (self.config.ticker.as_deref(), start) {
            (Some(t), Some(s)) => Some(t().saturating_sub(s)),
            _ => None,
        };
        for link in chain {
            link.agent.observe(&outcome);
        }
    }
}

/// What a chain run leaves for the monitor besides the response.
#[derive(Default)]
struct Tally {
    /// Sampled agent latencies (empty, and nothing to drop, when not sampled).
    timings: Vec<(Text, u64)>,
    /// Agents that failed.
    failures: Vec<Text>,
    /// `ConnectionClosed`: the record of the connection that was closed, if it was open.
    closed: Option<crate::limits::Connection>,
}

/// The candidate peers of an egress connection: the import's sources, less the local peer.
/// Out of line, like the helpers below: what most decisions do not run stays out of the
/// instruction cache lines they do.
#[inline(never)]
fn candidates<'s>(
    snapshot: &'s Snapshot,
    import: &'s crate::snapshot::ImportEntry,
) -> smallvec::SmallVec<[Candidate<'s>; 4]> {
    import
        .sources
        .iter()
        .enumerate()
        .filter_map(|(order, source)| {
            let peer = source.peer.as_deref()?;
            (peer.name != snapshot.local_peer).then_some(Candidate {
                source,
                peer,
                order,
            })
        })
        .collect()
}

/// An agent that failed: its outcome in the trace and the sentence saying so.
#[cold]
#[inline(never)]
fn failed(link: &crate::snapshot::Link, e: &crate::error::AgentError) -> (&'static str, Text) {
    match link.failure_mode {
        FailureMode::Closed => (
            "failed",
            format!(
                "agent {} failed: {e} (failure mode closed)",
                link.agent_name
            )
            .into(),
        ),
        FailureMode::Open => (
            "skipped",
            format!("agent {} failed: {e} (failure mode open)", link.agent_name).into(),
        ),
    }
}

/// One agent's step in an explained decision's trace.
#[cold]
#[inline(never)]
fn trace_step(
    trace: &mut Vec<TraceEntry>,
    cx: &mut Context<'_>,
    link: &crate::snapshot::Link,
    outcome: &str,
    saw: crate::event::StateView,
    detail: Option<Text>,
) {
    let would_deny = cx
        .notes
        .would_deny
        .iter()
        .filter(|(a, _)| *a == link.agent_name)
        .map(|(_, p)| p.clone())
        .collect();
    trace.push(TraceEntry {
        agent: link.agent_name.clone(),
        subscription: link.subscription.clone(),
        priority: link.priority,
        outcome: outcome.to_owned(),
        saw,
        left: cx.view(),
        matched: std::mem::take(&mut cx.notes.matched),
        would_deny,
        detail: detail.map(|d| d.to_string()).unwrap_or_default(),
    });
}

/// Engines made so far: each takes the next number.
static ENGINES: AtomicU64 = AtomicU64::new(0);

/// A snapshot a thread used last, for one engine.
struct Cached {
    engine: u64,
    /// The engine's `published` count when the snapshot was loaded.
    published: u64,
    snapshot: Arc<Snapshot>,
}

/// The last reference to a snapshot is let go of here, by a deciding thread (the writer
/// that replaced it let go of its own at once): freeing it there would free thousands of
/// allocations, most made on the writer's thread, between two decisions. It goes to
/// [`reclaim`] instead.
impl Drop for Cached {
    fn drop(&mut self) {
        if Arc::strong_count(&self.snapshot) == 1 {
            cold_path();
            reclaim(self.snapshot.clone());
        }
    }
}

/// Frees a snapshot on a thread of its own (one per process, made when first needed), or
/// here if there is none.
#[cold]
#[inline(never)]
fn reclaim(snapshot: Arc<Snapshot>) {
    type Reclaimer = Option<std::sync::mpsc::Sender<Arc<Snapshot>>>;
    static RECLAIMER: std::sync::LazyLock<Reclaimer> = std::sync::LazyLock::new(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Arc<Snapshot>>();
        let freeing = move || rx.into_iter().for_each(drop);
        let thread = std::thread::Builder::new().name("clpe-reclaim".into());
        thread.spawn(freeing).ok().map(|_| tx)
    });
    if let Some(tx) = RECLAIMER.as_ref() {
        // A send that fails gives the snapshot back, dropped here.
        let _ = tx.send(snapshot);
    }
}

/// Snapshots of engines this thread decides on, most recent first.
const CACHED: usize = 4;

thread_local! {
    static SNAPSHOTS: RefCell<[Option<Rc<Cached>>; CACHED]> = const { RefCell::new([None, None, None, None]) };
}

/// Latency is timed for one decision in this many (and a thread's first): 11 clock reads
/// at about 40 ns each on a VM would otherwise show in the slowest percent of decisions.
const SAMPLE_EVERY: u32 = 256;

fn sample() -> bool {
    thread_local! {
        static N: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    N.with(|n| {
        let v = n.get();
        n.set(v.wrapping_add(1));
        v % SAMPLE_EVERY == 0
    })
}

/// Resolves what the event is about against the inventory; `Err` names what is missing.
fn resolve<'s>(snapshot: &'s Snapshot, event: &'s Event) -> Result<Scope<'s>, String> {
    match event {
        Event::NewConnection(e) => {
            let ns = e.dst_namespace.as_ref().map_or("default", |n| n.as_str());
            match e.direction {
                Direction::Ingress => match snapshot.export(ns, e.dst_service.as_str()) {
                    Some(export) => Ok(Scope::Ingress {
                        export,
                        namespace: ns,
                    }),
                    None => Err(format!(
                        "service {ns}/{} is not exported here (no Export)",
                        e.dst_service
                    )),
                },
                Direction::Egress => match snapshot.import(ns, e.dst_service.as_str()) {
                    Some(import) => Ok(Scope::Egress { import }),
                    None => Err(format!(
                        "service {ns}/{} is not imported here (no Import)",
                        e.dst_service
                    )),
                },
            }
        }
        Event::ExposeService(e) => {
            let ns = e.namespace.as_ref().map_or("default", |n| n.as_str());
            match snapshot.export(ns, e.service.as_str()) {
                Some(export) => Ok(Scope::Expose {
                    export,
                    namespace: ns,
                }),
                None => Err(format!(
                    "service {ns}/{} is not exported here (no Export)",
                    e.service
                )),
            }
        }
        Event::ServiceListRequest(e) => Ok(Scope::List { peer: &e.src_peer }),
        Event::ConnectionClosed(_) => Ok(Scope::Closed),
    }
}

fn unresolved(event: &Event, reason: String) -> Response {
    let mut r = Response {
        matched_by: Some(crate::acl::DEFAULT_DENY.into()),
        ..Response::new(Decision::Deny, reason.into())
    };
    match event {
        Event::NewConnection(e) if e.direction == Direction::Egress => {
            r.fallback_peers = Some(Vec::new())
        }
        Event::ExposeService(_) => r.target_peers = Some(Vec::new()),
        _ => {}
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(links: &[crate::snapshot::Link]) -> Vec<&str> {
        links.iter().map(|l| l.agent_name.as_str()).collect()
    }

    /// A snapshot a deciding thread let go of last is freed (on the reclaiming thread):
    /// none is kept for good.
    #[test]
    fn replaced_snapshots_are_freed() {
        let engine = Engine::new(EngineConfig::default());
        let apply = |yaml: &str| engine.apply(crate::parse_documents(yaml).unwrap()).unwrap();
        apply("{kind: Peer, metadata: {name: p}}");
        let event: Event = serde_json::from_value(
            serde_json::json!({"type": "ServiceListRequest", "src_peer": "p"}),
        )
        .unwrap();
        // This thread caches the snapshot in force.
        engine
            .decide(&event, Time::ZERO, DecideOptions::default())
            .unwrap();
        let old = Arc::downgrade(&engine.snapshot());
        apply("{kind: Peer, metadata: {name: q}}");
        assert!(old.upgrade().is_some(), "this thread still holds it");
        // The next decision takes the new one; the old one goes.
        engine
            .decide(&event, Time::ZERO, DecideOptions::default())
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while old.upgrade().is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(
            old.upgrade().is_none(),
            "the replaced snapshot was not freed"
        );
    }

    #[test]
    fn a_decision_runs_the_agents_with_work_and_an_explained_one_runs_them_all() {
        let engine = Engine::new(EngineConfig::default());
        let apply = |yaml: &str| engine.apply(crate::parse_documents(yaml).unwrap()).unwrap();
        apply(
            "{kind: Peer, metadata: {name: p}}\n---\n{kind: Export, metadata: {name: db, namespace: default}}",
        );
        let plan = |event, direction| {
            let s = engine.snapshot();
            let p = s.plan(event);
            let runs = names(p.runs(direction)).join(",");
            (runs, names(&p.observers).join(","))
        };
        let (ingress, egress) = (Some(Direction::Ingress), Some(Direction::Egress));
        let new = EventType::NewConnection;
        assert_eq!(plan(new, ingress), ("acl".into(), "monitor".into()));
        assert_eq!(plan(new, egress), ("acl,lb".into(), "monitor".into()));
        let closed = EventType::ConnectionClosed;
        assert_eq!(
            plan(closed, None),
            ("connection-limiter".into(), "monitor".into())
        );
        assert_eq!(plan(EventType::ExposeService, None).0, "acl");
        // A limit policy gives its limiter work.
        apply(
            "kind: ConnectionLimitPolicy\nmetadata: {name: one}\nspec: {from: [{workloadSelector: {}}], to: [{workloadSelector: {}}], maxConnections: 1}",
        );
        assert_eq!(plan(new, ingress).0, "acl,connection-limiter");
        apply(
            "kind: RateLimitPolicy\nmetadata: {name: slow}\nspec: {from: [{workloadSelector: {}}], to: [{workloadSelector: {}}], connectionsPerSecond: 1}",
        );
        assert_eq!(
            plan(new, egress).0,
            "acl,lb,connection-limiter,rate-limiter"
        );
        // Explained, every subscribed agent is in the trace, and the answer is the same.
        apply(
            "kind: AccessPolicy\nmetadata: {name: all, namespace: default}\nspec: {action: allow, from: [{workloadSelector: {}}], to: [{workloadSelector: {}}]}",
        );
        let event = Event::from_json(
            r#"{"type":"NewConnection","direction":"ingress","src_peer":"p","dst_service":"db"}"#,
        )
        .unwrap();
        let explain = DecideOptions {
            explain: true,
            dry_run: true,
        };
        let explained = engine.decide(&event, Time(0), explain).unwrap();
        let agents: Vec<&str> = (explained.trace.iter().flatten())
            .map(|t| t.agent.as_str())
            .collect();
        let all = ["acl", "lb", "connection-limiter", "rate-limiter", "monitor"];
        assert_eq!(agents, all);
        let plain = DecideOptions {
            explain: false,
            ..explain
        };
        let plain = engine.decide(&event, Time(0), plain).unwrap();
        assert_eq!(plain.trace, None);
        assert_eq!(plain.decision, Decision::Allow);
        assert_eq!(
            (
                plain.decision,
                &plain.reason,
                &plain.matched_by,
                &plain.decided_by
            ),
            (
                explained.decision,
                &explained.reason,
                &explained.matched_by,
                &explained.decided_by
            )
        );
    }
}
