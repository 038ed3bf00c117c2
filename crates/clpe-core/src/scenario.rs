//! Policy tests (`clpe test`, SPEC §6): the test-file model and its runner.
//!
//! The runner drives any [`Target`]: the in-process engine on a virtual clock
//! ([`EngineTarget`]), or a daemon over its API (in the `clpe` crate). Responses are
//! compared as JSON, so every target is held to the same wire shape.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::dispatcher::{DecideOptions, Engine, EngineConfig};
use crate::document::{DocKey, Kind, parse_value};
use crate::event::Event;
use crate::names::{PeerName, Time, parse_duration};

/// One suite: a YAML document of a test file.
#[derive(Clone, Debug)]
pub struct Suite {
    pub name: String,
    pub local_peer: Option<String>,
    pub setup: Vec<Value>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug)]
pub enum Step {
    Apply(Vec<Value>),
    ApplyError(Vec<Value>),
    Delete(Vec<DocRef>),
    DeleteError(Vec<DocRef>),
    Advance(u64),
    Event(Box<EventStep>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocRef {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
}

#[derive(Clone, Debug)]
pub struct EventStep {
    pub event: Value,
    pub expect: Option<Map<String, Value>>,
    pub repeat: usize,
    pub sequence: Map<String, Value>,
    pub seen: Map<String, Value>,
    pub distinct: Map<String, Value>,
    pub share: Map<String, Value>,
}

/// Fields `expect` may name.
const EXPECT_FIELDS: [&str; 9] = [
    "decision",
    "target_peer",
    "target_peers",
    "services",
    "matched_by",
    "decided_by",
    "fallback_peers",
    "rate_limit",
    "reason_contains",
];

/// What the runner needs of an engine.
pub trait Target {
    /// Applies one batch; `Err` carries the refusal.
    fn apply(&mut self, docs: &[Value]) -> Result<(), String>;
    fn delete(&mut self, refs: &[DocRef]) -> Result<(), String>;
    fn advance(&mut self, nanos: u64) -> Result<(), String>;
    /// Decides an event; the response as JSON, or `Err` when the event is refused.
    fn decide(&mut self, event: &Value) -> Result<Value, String>;
}

/// Parses a test file: one suite per YAML document.
pub fn parse_suites(text: &str) -> Result<Vec<Suite>, String> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, crate::document::yaml_options())
            .map_err(|e| format!("not valid YAML: {e}"))?;
    docs.into_iter()
        .filter(|d| !d.is_null())
        .enumerate()
        .map(|(i, d)| parse_suite(d).map_err(|e| format!("suite #{}: {e}", i + 1)))
        .collect()
}

fn list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

fn parse_suite(doc: Value) -> Result<Suite, String> {
    let Value::Object(mut m) = doc else {
        return Err("a suite must be a map".into());
    };
    let name = match m.remove("name") {
        Some(Value::String(s)) => s,
        Some(_) => return Err("`name` must be a string".into()),
        None => return Err("`name` is missing".into()),
    };
    let local_peer = match m.remove("localPeer") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(format!("suite `{name}`: `localPeer` must be a string")),
    };
    let setup = list(m.remove("setup").unwrap_or(Value::Null));
    let steps = match m.remove("steps") {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(format!("suite `{name}`: `steps` must be a list")),
    };
    if let Some(k) = m.keys().next() {
        return Err(format!(
            "suite `{name}`: unknown field `{k}` (a suite has name, localPeer, setup, steps)"
        ));
    }
    let steps = steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| parse_step(s).map_err(|e| format!("suite `{name}`: step {}: {e}", i + 1)))
        .collect::<Result<_, _>>()?;
    Ok(Suite {
        name,
        local_peer,
        setup,
        steps,
    })
}

fn refs(v: Value) -> Result<Vec<DocRef>, String> {
    list(v)
        .into_iter()
        .map(|r| {
            let Value::Object(mut m) = r else {
                return Err("a document reference must be a map".to_owned());
            };
            let mut field = |f: &str| match m.remove(f) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(format!("`{f}` must be a string")),
            };
            let kind = field("kind")?.ok_or("a reference needs `kind`")?;
            let name = field("name")?.ok_or("a reference needs `name`")?;
            let namespace = field("namespace")?;
            if let Some(k) = m.keys().next() {
                return Err(format!(
                    "unknown field `{k}` in a reference (kind, name, namespace)"
                ));
            }
            Ok(DocRef {
                kind,
                name,
                namespace,
            })
        })
        .collect()
}

fn obj(v: Option<Value>, what: &str) -> Result<Map<String, Value>, String> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(format!("`{what}` must be a map")),
    }
}

fn parse_step(step: Value) -> Result<Step, String> {
    let Value::Object(mut m) = step else {
        return Err("a step must be a map".into());
    };
    let take = |m: &mut Map<String, Value>, k: &str| m.remove(k);
    let step = if let Some(v) = take(&mut m, "apply") {
        Step::Apply(list(v))
    } else if let Some(v) = take(&mut m, "applyError") {
        Step::ApplyError(list(v))
    } else if let Some(v) = take(&mut m, "delete") {
        Step::Delete(refs(v)?)
    } else if let Some(v) = take(&mut m, "deleteError") {
        Step::DeleteError(refs(v)?)
    } else if let Some(v) = take(&mut m, "advance") {
        let text = match v {
            Value::String(s) => s,
            Value::Number(n) => format!("{n}s"),
            _ => return Err("`advance` must be a duration like `1.5s`".into()),
        };
        Step::Advance(parse_duration(&text)?)
    } else if let Some(event) = take(&mut m, "event") {
        let expect = match take(&mut m, "expect") {
            None | Some(Value::Null) => None,
            Some(Value::Object(e)) => {
                if let Some(k) = e.keys().find(|k| !EXPECT_FIELDS.contains(&k.as_str())) {
                    return Err(format!(
                        "`expect` names unknown field `{k}` (known: {})",
                        EXPECT_FIELDS.join(", ")
                    ));
                }
                Some(e)
            }
            Some(_) => return Err("`expect` must be a map".into()),
        };
        let repeat = match take(&mut m, "repeat") {
            None => 1,
            Some(Value::Number(n)) => {
                n.as_u64()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or("`repeat` must be 1 to 1000000")? as usize
            }
            Some(_) => return Err("`repeat` must be a number".into()),
        };
        Step::Event(Box::new(EventStep {
            event,
            expect,
            repeat,
            sequence: obj(take(&mut m, "expectSequence"), "expectSequence")?,
            seen: obj(take(&mut m, "expectSeen"), "expectSeen")?,
            distinct: obj(take(&mut m, "expectDistinct"), "expectDistinct")?,
            share: obj(take(&mut m, "expectShare"), "expectShare")?,
        }))
    } else {
        return Err(
            "a step needs one of apply, applyError, delete, deleteError, advance, event".into(),
        );
    };
    if let Some(k) = m.keys().next() {
        return Err(format!("unknown field `{k}` in this step"));
    }
    Ok(step)
}

/// A failed step: where, what was expected, what happened.
#[derive(Clone, Debug)]
pub struct Failure {
    pub suite: String,
    /// 0 for the setup.
    pub step: usize,
    pub message: String,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failures: Vec<Failure>,
}

/// Runs one suite against a fresh target.
pub fn run_suite(suite: &Suite, target: &mut dyn Target, report: &mut Report) {
    if !suite.setup.is_empty()
        && let Err(e) = target.apply(&suite.setup)
    {
        report.failures.push(Failure {
            suite: suite.name.clone(),
            step: 0,
            message: format!("setup refused: {e}"),
        });
        return;
    }
    for (i, step) in suite.steps.iter().enumerate() {
        match run_step(step, target) {
            Ok(()) => report.passed += 1,
            Err(message) => report.failures.push(Failure {
                suite: suite.name.clone(),
                step: i + 1,
                message,
            }),
        }
    }
}

fn run_step(step: &Step, target: &mut dyn Target) -> Result<(), String> {
    match step {
        Step::Apply(docs) => target
            .apply(docs)
            .map_err(|e| format!("apply: expected success, got: {e}")),
        Step::ApplyError(docs) => match target.apply(docs) {
            Ok(()) => {
                Err("applyError: expected the batch to be refused, but it was applied".into())
            }
            Err(_) => Ok(()),
        },
        Step::Delete(refs) => target
            .delete(refs)
            .map_err(|e| format!("delete: expected success, got: {e}")),
        Step::DeleteError(refs) => match target.delete(refs) {
            Ok(()) => {
                Err("deleteError: expected the delete to be refused, but it succeeded".into())
            }
            Err(_) => Ok(()),
        },
        Step::Advance(n) => target.advance(*n),
        Step::Event(e) => run_event(e, target),
    }
}

fn field_value(response: &Value, field: &str) -> Value {
    response.get(field).cloned().unwrap_or(Value::Null)
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "absent".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn check_expect(expect: &Map<String, Value>, response: &Value) -> Result<(), String> {
    for (field, want) in expect {
        if field == "reason_contains" {
            let reason = response.get("reason").and_then(Value::as_str).unwrap_or("");
            let want = want.as_str().unwrap_or("");
            if !reason.contains(want) {
                return Err(format!(
                    "reason: expected it to contain `{want}`, got `{reason}`"
                ));
            }
            continue;
        }
        let got = field_value(response, field);
        if got != *want {
            return Err(format!(
                "{field}: expected {}, got {}",
                show(want),
                show(&got)
            ));
        }
    }
    Ok(())
}

fn run_event(step: &EventStep, target: &mut dyn Target) -> Result<(), String> {
    let mut responses = Vec::with_capacity(step.repeat);
    for i in 0..step.repeat {
        let response = target
            .decide(&step.event)
            .map_err(|e| format!("event refused: {e}"))?;
        if let Some(expect) = &step.expect {
            check_expect(expect, &response).map_err(|e| {
                if step.repeat > 1 {
                    format!("repeat {}: {e}", i + 1)
                } else {
                    e
                }
            })?;
        }
        responses.push(response);
    }
    let values =
        |field: &str| -> Vec<Value> { responses.iter().map(|r| field_value(r, field)).collect() };
    for (field, want) in &step.sequence {
        let got = Value::Array(values(field));
        if got != *want {
            return Err(format!(
                "expectSequence {field}: expected {want}, got {got}"
            ));
        }
    }
    for (field, want) in &step.seen {
        let got: BTreeSet<String> = values(field).iter().map(show).collect();
        let want_set: BTreeSet<String> = list(want.clone()).iter().map(show).collect();
        if got != want_set {
            return Err(format!(
                "expectSeen {field}: expected {want_set:?}, got {got:?}"
            ));
        }
    }
    for (field, want) in &step.distinct {
        let got: BTreeSet<String> = values(field).iter().map(show).collect();
        if Some(got.len() as u64) != want.as_u64() {
            return Err(format!(
                "expectDistinct {field}: expected {want}, got {} ({got:?})",
                got.len()
            ));
        }
    }
    for (field, shares) in &step.share {
        let Value::Object(shares) = shares else {
            return Err(format!(
                "expectShare {field}: must map values to [min, max]"
            ));
        };
        let vals = values(field);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for v in &vals {
            *counts.entry(show(v)).or_default() += 1;
        }
        for (value, range) in shares {
            let bounds: Vec<f64> = range
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            let [min, max] = bounds.as_slice() else {
                return Err(format!("expectShare {field}.{value}: expected [min, max]"));
            };
            let share = counts.get(value).copied().unwrap_or(0) as f64 / vals.len().max(1) as f64;
            if share < *min || share > *max {
                return Err(format!(
                    "expectShare {field}.{value}: expected a share in [{min}, {max}], got {share:.3}"
                ));
            }
        }
    }
    Ok(())
}

/// The in-process engine on a virtual clock that only `advance` moves.
pub struct EngineTarget {
    pub engine: Engine,
    pub now: Time,
}

impl EngineTarget {
    pub fn new(local_peer: Option<&str>, mut config: EngineConfig) -> EngineTarget {
        if let Some(p) = local_peer {
            config.local_peer = PeerName::from(p);
        }
        EngineTarget {
            engine: Engine::new(config),
            now: Time::ZERO,
        }
    }
}

/// Turns document trees into documents, all errors listed.
pub fn documents(values: &[Value]) -> Result<Vec<crate::document::Document>, String> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match parse_value(v.clone(), i + 1) {
            Ok(d) => docs.push(d),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors.join("; "))
    }
}

/// Resolves a reference to a document key.
pub fn doc_key(r: &DocRef) -> Result<DocKey, String> {
    let kind = Kind::parse(&r.kind).ok_or_else(|| format!("unknown kind `{}`", r.kind))?;
    Ok(DocKey::new(kind, r.namespace.as_deref(), &r.name))
}

impl Target for EngineTarget {
    fn apply(&mut self, docs: &[Value]) -> Result<(), String> {
        let docs = documents(docs)?;
        self.engine
            .apply(docs)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn delete(&mut self, refs: &[DocRef]) -> Result<(), String> {
        let keys = refs.iter().map(doc_key).collect::<Result<Vec<_>, _>>()?;
        self.engine
            .delete(&keys)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn advance(&mut self, nanos: u64) -> Result<(), String> {
        self.now = self.now.plus_nanos(nanos);
        Ok(())
    }

    fn decide(&mut self, event: &Value) -> Result<Value, String> {
        let event: Event = serde_json::from_value(event.clone()).map_err(|e| e.to_string())?;
        let response = self
            .engine
            .decide(&event, self.now, DecideOptions::default())
            .map_err(|e| e.to_string())?;
        serde_json::to_value(&response).map_err(|e| e.to_string())
    }
}
