//! `clpe-anchors`: the engines of `../shared/bench/anchors.tsv` (Cedar, Rego by regorus,
//! scanning and indexed, and the hash-index floor) and clpe itself, deciding the same
//! `acl-N` workload in one process, one after the other, so their ratios come from one
//! run on one machine. Every engine's decisions are checked against `expected.txt`.
//!
//! The rules are decoded once, by the floor's decoder (`crates/clpe/src/floor.rs`, the
//! anchors' shape: one namespace, `matchLabels` on the client's service, the peer's name
//! and the export's name), and translated for each engine:
//! - Cedar: one policy per rule (`permit` or `forbid`; forbid overrides permit, default
//!   deny, as in clpe), the peer and the export in the policy's scope, the service in
//!   its condition; and one `forbid` of any resource that is not an Export of the
//!   policies' namespace (Export entities are children of their `Namespace`).
//! - Rego (`rego`): one rule set scanned whole, in `data`; `rego-indexed`: the rules
//!   grouped by the export they name, as anchors.tsv's "rules grouped by destination".
//!
//! What the figures are:
//! - `ns_per_decision`: a mean over one timed loop (as anchors.tsv's), events in order,
//!   for about `--budget-ms` (at least one decision);
//! - `p50_ns`, for clpe and the floor: the median of decisions timed one by one, the
//!   clock's own cost taken off (as `clpe bench` reports clpe's), each event read just
//!   before it is decided.

#[path = "../../../crates/clpe/src/floor.rs"]
#[allow(dead_code)]
mod floor;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clpe_core::{DecideOptions, Decision, Engine, EngineConfig, Event, Time};
use floor::{AclWorkload, Floor, FloorEvent, Rule, median_timed, timer_overhead};

#[global_allocator]
static GLOBAL: clpe_alloc::MiMalloc = clpe_alloc::MiMalloc;

const USAGE: &str = "usage: clpe-anchors --policies FILE --events FILE [--expected FILE] \
[--engines floor,clpe,cedar,rego-indexed,rego,floor,clpe] [--budget-ms 2000] [--check 1000]";

struct Args {
    policies: String,
    events: String,
    expected: Option<String>,
    engines: Vec<String>,
    budget: Duration,
    check: usize,
}

fn args() -> Result<Args> {
    let mut args = Args {
        policies: String::new(),
        events: String::new(),
        expected: None,
        engines: [
            "floor",
            "clpe",
            "cedar",
            "rego-indexed",
            "rego",
            "floor",
            "clpe",
        ]
        .map(String::from)
        .to_vec(),
        budget: Duration::from_millis(2000),
        check: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--policies" => args.policies = value()?,
            "--events" => args.events = value()?,
            "--expected" => args.expected = Some(value()?),
            "--engines" => args.engines = value()?.split(',').map(String::from).collect(),
            "--budget-ms" => args.budget = Duration::from_millis(value()?.parse()?),
            "--check" => args.check = value()?.parse()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if args.policies.is_empty() || args.events.is_empty() {
        bail!("{USAGE}");
    }
    if let Some(e) = (args.engines.iter()).find(|e| !ENGINES.contains(&e.as_str())) {
        bail!("unknown engine {e}: one of {}", ENGINES.join(", "));
    }
    Ok(args)
}

const ENGINES: [&str; 5] = ["floor", "clpe", "cedar", "rego-indexed", "rego"];

/// What one engine's run measured.
struct Run {
    mean_ns: f64,
    timed: usize,
    p50_ns: Option<u64>,
    allows_first: usize,
}

/// Every decision an engine makes, compared with the expected file's line for its event
/// (timed or not, in any pass).
struct Checks<'a> {
    expected: Option<&'a [bool]>,
    checked: usize,
    mismatches: usize,
}

impl Checks<'_> {
    fn see(&mut self, i: usize, allowed: bool) {
        if let Some(exp) = self.expected {
            self.checked += 1;
            self.mismatches += usize::from(exp.get(i) != Some(&allowed));
        }
    }
}

/// Times `decide` (event index → allowed) over the events in order, for about `budget` or
/// `cap` decisions (whichever comes first; the clock is read between chunks that double,
/// so a slow engine may run up to about twice the budget), after (with `warm`) an
/// untimed warm-up of at most one pass and at most a quarter of the budget. Then
/// decides, untimed, the first `check` events (at least 1,000) the timed loop did not
/// reach, to count the allows among the first 1,000.
fn measure(
    n: usize,
    budget: Duration,
    cap: usize,
    check: usize,
    warm: bool,
    checks: &mut Checks<'_>,
    mut decide: impl FnMut(usize) -> Result<bool>,
) -> Result<Run> {
    let warm_until = Instant::now() + budget / 4;
    for i in (0..n).take_while(|_| warm) {
        let allowed = decide(i)?;
        checks.see(i, allowed);
        if Instant::now() >= warm_until {
            break;
        }
    }
    let mut first_pass: Vec<bool> = Vec::with_capacity(n);
    let (mut done, mut chunk, mut at) = (0usize, 1usize, 0usize);
    let t0 = Instant::now();
    let elapsed = loop {
        for _ in 0..chunk {
            let allowed = decide(at)?;
            checks.see(at, allowed);
            if first_pass.len() < n {
                first_pass.push(allowed);
            }
            at += 1;
            if at == n {
                at = 0;
            }
        }
        done += chunk;
        let elapsed = t0.elapsed();
        if elapsed >= budget || done >= cap {
            break elapsed;
        }
        chunk = (chunk * 2).min(1 << 16).min(cap - done);
    };
    for i in first_pass.len()..check.max(1000).min(n) {
        let allowed = decide(i)?;
        checks.see(i, allowed);
        first_pass.push(allowed);
    }
    Ok(Run {
        mean_ns: elapsed.as_nanos() as f64 / done as f64,
        timed: done,
        p50_ns: None,
        allows_first: first_pass.iter().take(1000).filter(|a| **a).count(),
    })
}

/// A name as it may appear in Cedar's and Rego's text unescaped (and without the `/`
/// that joins a namespace and a name in an Export's id).
fn plain(name: &str) -> Result<&str> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
    match name.chars().all(ok) {
        true => Ok(name),
        false => bail!("the name {name:?} would need escaping in Cedar's text"),
    }
}

struct Cedar {
    policies: cedar_policy::PolicySet,
    entities: cedar_policy::Entities,
    authorizer: cedar_policy::Authorizer,
    /// One per event, made before timing (as Rego's inputs are).
    requests: Vec<cedar_policy::Request>,
}

/// `kind::"id"`, `id` made of plain names.
fn uid(kind: &str, id: &str) -> Result<cedar_policy::EntityUid> {
    let text = format!("{kind}::\"{id}\"");
    cedar_policy::EntityUid::from_str(&text).map_err(|e| anyhow::anyhow!("{text}: {e}"))
}

/// An Export's id: its namespace and its name.
fn export_uid(ns: &str, name: &str) -> Result<cedar_policy::EntityUid> {
    uid("Export", &format!("{}/{}", plain(ns)?, plain(name)?))
}

impl Cedar {
    fn new(w: &AclWorkload, events: &[FloorEvent]) -> Result<Cedar> {
        let ns = w.namespace.as_deref().unwrap_or("default");
        let mut text = format!(
            "forbid (principal, action, resource) unless {{ resource in Namespace::\"{}\" }};\n",
            plain(ns)?
        );
        for Rule {
            allow,
            service,
            peer,
            export,
        } in &w.rules
        {
            let effect = if *allow { "permit" } else { "forbid" };
            let principal = match peer {
                Some(p) => format!("principal == Peer::\"{}\"", plain(p)?),
                None => "principal".into(),
            };
            let resource = match export {
                Some(x) => format!("resource == {}", export_uid(ns, x)?),
                None => "resource".into(),
            };
            let when = match service {
                Some(s) => format!(
                    " when {{ context has service && context.service == \"{}\" }}",
                    plain(s)?
                ),
                None => String::new(),
            };
            text += &format!("{effect} ({principal}, action, {resource}){when};\n");
        }
        let policies = cedar_policy::PolicySet::from_str(&text)
            .map_err(|e| anyhow::anyhow!("Cedar policies: {e}"))?;
        let parent = HashSet::from([uid("Namespace", plain(ns)?)?]);
        let exports = (w.exports.iter())
            .map(|x| {
                Ok(cedar_policy::Entity::new_no_attrs(
                    export_uid(ns, x)?,
                    parent.clone(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let entities = cedar_policy::Entities::from_entities(exports, None)
            .map_err(|e| anyhow::anyhow!("Cedar entities: {e}"))?;
        let action = uid("Action", "connect")?;
        let requests = (events.iter())
            .map(|e| {
                let ns = e.namespace.as_deref().unwrap_or("default");
                let principal = uid("Peer", plain(e.peer.as_deref().unwrap_or(""))?)?;
                let context = (e.service.as_deref()).map(|s| {
                    let value = cedar_policy::RestrictedExpression::new_string(s.to_owned());
                    ("service".to_owned(), value)
                });
                let context = cedar_policy::Context::from_pairs(context)
                    .map_err(|err| anyhow::anyhow!("Cedar context: {err}"))?;
                let resource = export_uid(ns, &e.export)?;
                cedar_policy::Request::new(principal, action.clone(), resource, context, None)
                    .map_err(|err| anyhow::anyhow!("Cedar request: {err}"))
            })
            .collect::<Result<_>>()?;
        Ok(Cedar {
            policies,
            entities,
            authorizer: cedar_policy::Authorizer::new(),
            requests,
        })
    }

    fn decide(&self, i: usize) -> Result<bool> {
        let request = self.requests.get(i).context("no such event")?;
        let response = (self.authorizer).is_authorized(request, &self.policies, &self.entities);
        Ok(response.decision() == cedar_policy::Decision::Allow)
    }
}

/// The scanning policy: every rule of each effect looked at. The rules are kept by the
/// parts they name (`s`ervice, `p`eer, e`x`port), so each is one comparison per part.
const REGO_SCAN: &str = r#"package acl

default allow := false

allow if {
	input.namespace == data.namespace
	data.exports[input.export]
	not denied
	allowed
}

denied if { some r in data.deny.spx; r.service == input.service; r.peer == input.peer; r.export == input.export }
denied if { some r in data.deny.sx; r.service == input.service; r.export == input.export }
denied if { some r in data.deny.px; r.peer == input.peer; r.export == input.export }
denied if { some r in data.deny.x; r.export == input.export }
denied if { some r in data.deny.sp; r.service == input.service; r.peer == input.peer }
denied if { some r in data.deny.s; r.service == input.service }
denied if { some r in data.deny.p; r.peer == input.peer }
denied if { some _ in data.deny.none }

allowed if { some r in data.allow.spx; r.service == input.service; r.peer == input.peer; r.export == input.export }
allowed if { some r in data.allow.sx; r.service == input.service; r.export == input.export }
allowed if { some r in data.allow.px; r.peer == input.peer; r.export == input.export }
allowed if { some r in data.allow.x; r.export == input.export }
allowed if { some r in data.allow.sp; r.service == input.service; r.peer == input.peer }
allowed if { some r in data.allow.s; r.service == input.service }
allowed if { some r in data.allow.p; r.peer == input.peer }
allowed if { some _ in data.allow.none }
"#;

/// The indexed policy: the rules that name the request's export, and those naming none.
const REGO_INDEXED: &str = r#"package acl

default allow := false

allow if {
	input.namespace == data.namespace
	data.exports[input.export]
	not denied
	allowed
}

denied if {
	some r in data.deny_by_export[input.export]
	matches(r)
}

denied if {
	some r in data.deny_any
	matches(r)
}

allowed if {
	some r in data.allow_by_export[input.export]
	matches(r)
}

allowed if {
	some r in data.allow_any
	matches(r)
}

matches(r) if {
	part(r, "service")
	part(r, "peer")
}

part(r, k) if not r[k]

part(r, k) if r[k] == input[k]
"#;

struct Rego {
    engine: regorus::Engine,
    inputs: Vec<regorus::Value>,
}

impl Rego {
    fn new(w: &AclWorkload, events: &[FloorEvent], indexed: bool) -> Result<Rego> {
        use serde_json::{Map, Value, json};
        // A rule as an object of the parts it names, filed under their letters.
        let file = |into: &mut Map<String, Value>, r: &Rule| {
            let mut o = Map::new();
            let mut shape = String::new();
            for (letter, k, v) in [
                ('s', "service", &r.service),
                ('p', "peer", &r.peer),
                ('x', "export", &r.export),
            ] {
                if let Some(v) = v {
                    o.insert(k.into(), Value::String(v.clone()));
                    shape.push(letter);
                }
            }
            if shape.is_empty() {
                shape = "none".into();
            }
            match into.entry(shape).or_insert(json!([])) {
                Value::Array(list) => list.push(Value::Object(o)),
                _ => bail!("shape lists are arrays"),
            }
            Ok(())
        };
        let exports: Map<String, Value> = (w.exports.iter())
            .map(|x| (x.clone(), Value::Bool(true)))
            .collect();
        let mut data = Map::new();
        let ns = w.namespace.as_deref().unwrap_or("default");
        data.insert("namespace".into(), ns.into());
        data.insert("exports".into(), Value::Object(exports));
        let effect = |allow: bool| w.rules.iter().filter(move |r| r.allow == allow);
        for (allow, name) in [(true, "allow"), (false, "deny")] {
            if !indexed {
                let mut shapes = Map::new();
                for r in effect(allow) {
                    file(&mut shapes, r)?;
                }
                data.insert(name.into(), Value::Object(shapes));
                continue;
            }
            let mut by_export = Map::new();
            let mut any = Vec::new();
            for r in effect(allow) {
                let mut o = Map::new();
                for (k, v) in [("service", &r.service), ("peer", &r.peer)] {
                    if let Some(v) = v {
                        o.insert(k.into(), Value::String(v.clone()));
                    }
                }
                match &r.export {
                    Some(x) => match by_export.entry(x.clone()).or_insert(json!([])) {
                        Value::Array(list) => list.push(Value::Object(o)),
                        _ => bail!("by-export lists are arrays"),
                    },
                    None => any.push(Value::Object(o)),
                }
            }
            data.insert(format!("{name}_by_export"), Value::Object(by_export));
            data.insert(format!("{name}_any"), Value::Array(any));
        }
        let mut engine = regorus::Engine::new();
        let policy = if indexed { REGO_INDEXED } else { REGO_SCAN };
        engine
            .add_policy("acl.rego".into(), policy.into())
            .map_err(|e| anyhow::anyhow!("Rego policy: {e}"))?;
        let data = regorus::Value::from_json_str(&Value::Object(data).to_string())
            .map_err(|e| anyhow::anyhow!("Rego data: {e}"))?;
        engine
            .add_data(data)
            .map_err(|e| anyhow::anyhow!("Rego data: {e}"))?;
        let inputs = (events.iter())
            .map(|e| {
                let mut o = Map::new();
                let ns = e.namespace.as_deref().unwrap_or("default");
                o.insert("namespace".into(), ns.into());
                o.insert("export".into(), (*e.export).into());
                if let Some(s) = &e.service {
                    o.insert("service".into(), (**s).into());
                }
                if let Some(p) = &e.peer {
                    o.insert("peer".into(), (**p).into());
                }
                regorus::Value::from_json_str(&Value::Object(o).to_string())
                    .map_err(|e| anyhow::anyhow!("Rego input: {e}"))
            })
            .collect::<Result<_>>()?;
        Ok(Rego { engine, inputs })
    }

    fn decide(&mut self, i: usize) -> Result<bool> {
        let input = self.inputs.get(i).context("no such event")?.clone();
        self.engine.set_input(input);
        let v = (self.engine)
            .eval_rule("data.acl.allow".into())
            .map_err(|e| anyhow::anyhow!("Rego: {e}"))?;
        Ok(v == regorus::Value::Bool(true))
    }
}

fn main() -> Result<()> {
    let args = args()?;
    let text = std::fs::read_to_string(&args.policies)
        .with_context(|| format!("reading {}", args.policies))?;
    let docs =
        clpe_core::parse_documents(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.policies))?;
    let workload = AclWorkload::new(&docs).map_err(|e| anyhow::anyhow!("{e}"))?;
    let events_text = std::fs::read_to_string(&args.events)
        .with_context(|| format!("reading {}", args.events))?;
    let events = (events_text.lines().enumerate())
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            Event::from_json(l).map_err(|e| anyhow::anyhow!("{}:{}: {e}", args.events, i + 1))
        })
        .collect::<Result<Vec<_>>>()?;
    let n = events.len();
    if n == 0 {
        bail!("{}: no events", args.events);
    }
    let expected: Option<Vec<bool>> = match &args.expected {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            let lines = (text.lines().enumerate())
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| match l.trim() {
                    "allow" => Ok(true),
                    "deny" => Ok(false),
                    other => bail!("{path}:{}: {other:?} is neither allow nor deny", i + 1),
                })
                .collect::<Result<Vec<_>>>()?;
            if lines.len() != n {
                bail!("{path}: {} decisions for {n} events", lines.len());
            }
            Some(lines)
        }
        None => None,
    };
    let floor = Floor::of(&workload);
    let anchor_events = floor.events(&events).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rules = workload.rules.len();
    let timer_ns = timer_overhead();
    let exp = expected.as_deref();

    let floor_decide = |i: usize| -> Result<bool> {
        let e = anchor_events.get(i).context("no such event")?;
        Ok(floor.decide(std::hint::black_box(e)) == Decision::Allow)
    };
    let mut cedar = None;
    // The scanning program and the indexed one, each made when first run.
    let mut regos: [Option<Rego>; 2] = [None, None];

    println!("# clpe-anchors, {}", args.policies);
    println!("# the clock's own cost: {timer_ns} ns (taken off p50_ns)");
    println!(
        "rules\tengine\tns_per_decision\tp50_ns\tdecisions_timed\tallows_in_first_1000\tchecked\tmismatches"
    );
    let mut floors = Vec::new();
    let mut clpes = Vec::new();
    for name in &args.engines {
        let mut checks = Checks {
            expected: exp,
            checked: 0,
            mismatches: 0,
        };
        let run = match name.as_str() {
            "floor" => {
                // Timed by the loop `clpe bench --floor` times it with, as many passes as
                // fill the budget; checked on one pass of its own (it keeps no state).
                let mut allows_first = 0;
                for i in 0..n {
                    let allowed = floor_decide(i)?;
                    checks.see(i, allowed);
                    allows_first += usize::from(allowed && i < 1000);
                }
                let pass_ns = floor.time(&anchor_events, 1) * n as f64;
                let rounds = ((args.budget.as_nanos() as f64 / pass_ns.max(1.0)) as usize).max(1);
                let mean_ns = floor.time(&anchor_events, rounds);
                let touch = |i| {
                    std::hint::black_box(anchor_events.get(i).map(FloorEvent::touch));
                };
                let see = |i, allowed| checks.see(i, allowed);
                let p50 = median_timed(n, 5, timer_ns, touch, floor_decide, see)?;
                floors.push((mean_ns, p50));
                Run {
                    mean_ns,
                    timed: rounds * n,
                    p50_ns: Some(p50),
                    allows_first,
                }
            }
            "clpe" => {
                // A fresh engine each time, decided as `clpe bench --repeat 10` decides:
                // one untimed pass, then ten timed one by one (the p50); then at most
                // ten more timed as one loop (the mean). Connections stay open for their
                // lease (an hour), so an engine that decided longer would hold more.
                let engine = Engine::new(EngineConfig {
                    ticker: Some(Arc::new({
                        let origin = Instant::now();
                        move || origin.elapsed().as_nanos() as u64
                    })),
                    ..EngineConfig::default()
                });
                engine
                    .apply(docs.clone())
                    .map_err(|e| anyhow::anyhow!("clpe: {e}"))?;
                let mut clock = 0u64;
                let mut clpe = |i: usize| -> Result<bool> {
                    clock += 1_000;
                    let event = events.get(i).context("no such event")?;
                    let r = (engine.decide(event, Time(clock), DecideOptions::default()))
                        .map_err(|e| anyhow::anyhow!("clpe: {e}"))?;
                    Ok(r.decision == Decision::Allow)
                };
                for i in 0..n {
                    let allowed = clpe(i)?;
                    checks.see(i, allowed);
                }
                let touch = |i| {
                    std::hint::black_box(events.get(i).map(Event::check));
                };
                let see = |i, allowed| checks.see(i, allowed);
                let p50 = median_timed(n, 10, timer_ns, touch, &mut clpe, see)?;
                let (budget, cap, check) = (args.budget, 10 * n, args.check);
                let mut run = measure(n, budget, cap, check, false, &mut checks, &mut clpe)?;
                run.p50_ns = Some(p50);
                clpes.push((run.mean_ns, p50));
                run
            }
            "cedar" => {
                let c = match &cedar {
                    Some(c) => c,
                    None => cedar.insert(Cedar::new(&workload, &anchor_events)?),
                };
                let (budget, check) = (args.budget, args.check);
                measure(n, budget, usize::MAX, check, true, &mut checks, |i| {
                    c.decide(i)
                })?
            }
            "rego" | "rego-indexed" => {
                let indexed = name == "rego-indexed";
                let slot = regos
                    .get_mut(usize::from(indexed))
                    .context("two Rego programs")?;
                if slot.is_none() {
                    *slot = Some(Rego::new(&workload, &anchor_events, indexed)?);
                }
                let Some(r) = slot.as_mut() else {
                    bail!("{name} was just made");
                };
                let (budget, check) = (args.budget, args.check);
                measure(n, budget, usize::MAX, check, true, &mut checks, |i| {
                    r.decide(i)
                })?
            }
            other => bail!("unknown engine {other}"),
        };
        println!(
            "{rules}\t{name}\t{:.0}\t{}\t{}\t{}\t{}\t{}",
            run.mean_ns,
            run.p50_ns.map_or("-".into(), |p| p.to_string()),
            run.timed,
            run.allows_first,
            checks.checked,
            checks.mismatches
        );
        if checks.mismatches > 0 {
            bail!(
                "{name} decided {} of {} decisions otherwise than expected",
                checks.mismatches,
                checks.checked
            );
        }
    }
    let mean = |v: &mut dyn Iterator<Item = f64>| {
        let (sum, count) = v.fold((0.0, 0usize), |(s, c), x| (s + x, c + 1));
        sum / count.max(1) as f64
    };
    if !floors.is_empty() && !clpes.is_empty() {
        let floor_mean = mean(&mut floors.iter().map(|f| f.0));
        let floor_p50 = mean(&mut floors.iter().map(|f| f.1 as f64));
        let clpe_mean = mean(&mut clpes.iter().map(|c| c.0));
        let clpe_p50 = mean(&mut clpes.iter().map(|c| c.1 as f64));
        let ratio = |a: f64, b: f64| a / b.max(1e-9);
        println!(
            "# medians: clpe {clpe_p50:.0} ns over the floor's {floor_p50:.0} ns = {:.2}x",
            ratio(clpe_p50, floor_p50)
        );
        println!(
            "# means: clpe {clpe_mean:.0} ns over the floor's {floor_mean:.1} ns = {:.2}x",
            ratio(clpe_mean, floor_mean)
        );
        println!(
            "# clpe's median over the floor's mean (clpe bench's floor_ratio): {:.2}x",
            ratio(clpe_p50, floor_mean)
        );
    }
    Ok(())
}
