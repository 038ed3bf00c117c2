//! The `spec` of every kind: its serde form (as documents spell it) and its domain form.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::Kind;
use crate::error::FieldError;
use crate::event::EventType;
use crate::names::{AgentName, Namespace, PeerName, Priority, ServiceName};
use crate::selector::{LabelSelector, Selector, check_key};

/// A document's `spec`, validated.
#[derive(Clone, Debug)]
pub enum Spec {
    Access(Arc<AccessSpec>),
    WorkloadSet(Arc<WorkloadSetSpec>),
    Peer(PeerSpec),
    Export,
    Import(Arc<ImportSpec>),
    LoadBalancing(Arc<LbSpec>),
    Subscription(SubscriptionSpec),
    ConnectionLimit(Arc<ConnectionLimitSpec>),
    RateLimit(Arc<RateLimitSpec>),
    WasmAgent(Arc<WasmAgentSpec>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

/// One `from` / `to` item: a selector, or references to cluster-wide `WorkloadSet`s.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    Selector(Arc<Selector>),
    Sets(Box<[Arc<str>]>),
}

#[derive(Clone, Debug)]
pub struct AccessSpec {
    pub action: Action,
    pub from: Box<[Workload]>,
    pub to: Box<[Workload]>,
    pub dry_run: bool,
}

#[derive(Clone, Debug)]
pub struct WorkloadSetSpec {
    pub selectors: Box<[Arc<Selector>]>,
}

#[derive(Clone, Copy, Debug)]
pub struct PeerSpec {
    pub reachable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportSource {
    pub peer: PeerName,
    pub export_name: ServiceName,
    pub export_namespace: Namespace,
}

#[derive(Clone, Debug)]
pub struct ImportSpec {
    pub sources: Vec<ImportSource>,
    pub lb_scheme: Scheme,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    RoundRobin,
    Random,
    Static,
    Weighted,
    LeastConnections,
    ConsistentHash,
    Locality,
}

#[derive(Clone, Debug)]
pub struct LbSpec {
    pub import: ServiceName,
    pub from: Box<[Workload]>,
    pub scheme: Scheme,
    pub weights: BTreeMap<PeerName, u32>,
    pub order: Vec<PeerName>,
    pub hash_key: Option<Box<str>>,
    pub locality_label: Option<Box<str>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    #[default]
    Closed,
    Open,
}

#[derive(Clone, Debug)]
pub struct SubscriptionSpec {
    pub event: EventType,
    pub agent: AgentName,
    pub priority: Priority,
    pub failure_mode: FailureMode,
}

#[derive(Clone, Debug)]
pub struct ConnectionLimitSpec {
    pub from: Box<[Workload]>,
    pub to: Box<[Workload]>,
    pub max_connections: u64,
    pub key: Box<[Box<str>]>,
    pub target_key: Box<[Box<str>]>,
    pub lease_nanos: Option<u64>,
    pub dry_run: bool,
}

#[derive(Clone, Debug)]
pub struct RateLimitSpec {
    pub from: Box<[Workload]>,
    pub to: Box<[Workload]>,
    pub connections_per_second: f64,
    pub burst: u64,
    pub bandwidth: Option<u64>,
    pub key: Box<[Box<str>]>,
    pub target_key: Box<[Box<str>]>,
    pub dry_run: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WasmLimits {
    pub fuel: u64,
    pub memory_bytes: u64,
    pub timeout_ms: u64,
}

impl Default for WasmLimits {
    fn default() -> Self {
        WasmLimits {
            fuel: 10_000_000,
            memory_bytes: 16 << 20,
            timeout_ms: 50,
        }
    }
}

#[derive(Clone, Debug)]
pub struct WasmAgentSpec {
    pub module: Arc<[u8]>,
    pub config: Value,
    pub limits: WasmLimits,
}

// ---- serde forms ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawWorkload {
    workload_selector: Option<LabelSelector>,
    workload_sets: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAccess {
    action: Action,
    from: Vec<RawWorkload>,
    to: Vec<RawWorkload>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawWorkloadSet {
    workload_selectors: Vec<LabelSelector>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPeer {
    reachable: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawExport {
    #[serde(rename = "host")]
    _host: Option<String>,
    #[serde(rename = "port")]
    _port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSource {
    peer: String,
    export_name: String,
    export_namespace: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawImport {
    sources: Vec<RawSource>,
    lb_scheme: Option<Scheme>,
    #[serde(rename = "port")]
    _port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLb {
    import: String,
    from: Option<Vec<RawWorkload>>,
    scheme: Scheme,
    weights: Option<BTreeMap<String, u32>>,
    order: Option<Vec<String>>,
    hash_key: Option<String>,
    locality_label: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSubscription {
    event: EventType,
    agent: String,
    priority: Priority,
    #[serde(default)]
    failure_mode: FailureMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConnectionLimit {
    from: Vec<RawWorkload>,
    to: Vec<RawWorkload>,
    max_connections: u64,
    #[serde(default)]
    key: Vec<String>,
    #[serde(default)]
    target_key: Vec<String>,
    lease_seconds: Option<f64>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRateLimit {
    from: Vec<RawWorkload>,
    to: Vec<RawWorkload>,
    connections_per_second: f64,
    burst: Option<u64>,
    bandwidth: Option<String>,
    #[serde(default)]
    key: Vec<String>,
    #[serde(default)]
    target_key: Vec<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawWasmLimits {
    fuel: Option<u64>,
    memory_bytes: Option<u64>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawWasmAgent {
    module: Option<String>,
    module_file: Option<String>,
    #[serde(default)]
    config: Value,
    #[serde(default)]
    limits: RawWasmLimits,
}

/// Deserialises `spec` into `T`, reporting the field path of a type or shape error.
fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> FieldError {
    let path = e.path().to_string();
    let field = if path == "." {
        "spec".to_owned()
    } else {
        format!("spec.{path}")
    };
    FieldError::new(&field, e.into_inner().to_string())
}

/// A `spec` to convert: a parsed tree (YAML, or JSON that took the slow path), or the
/// raw JSON text of a document that took the fast path (no tree built at all).
pub(super) enum SpecSource<'a> {
    Tree(Value),
    Json(Option<&'a str>),
}

impl SpecSource<'_> {
    fn is_null(&self) -> bool {
        match self {
            SpecSource::Tree(v) => v.is_null(),
            SpecSource::Json(text) => text.is_none_or(|t| t.trim() == "null"),
        }
    }

    /// Deserialises into `T`, reporting the field path of a type or shape error; an
    /// absent spec reads as `{}`.
    fn de<T: serde::de::DeserializeOwned>(self) -> Result<T, FieldError> {
        match self {
            SpecSource::Tree(Value::Null) => SpecSource::Json(None).de(),
            SpecSource::Tree(v) => serde_path_to_error::deserialize(v).map_err(path_error),
            SpecSource::Json(text) => {
                let text = text.filter(|t| t.trim() != "null").unwrap_or("{}");
                let mut de = serde_json::Deserializer::from_str(text);
                serde_path_to_error::deserialize(&mut de).map_err(path_error)
            }
        }
    }
}

/// Converts a kind's `spec` (absent is `null`) into its domain form.
pub(super) fn parse_spec(kind: Kind, spec: SpecSource<'_>) -> Result<Spec, FieldError> {
    if spec.is_null() && !matches!(kind, Kind::Peer | Kind::Export) {
        return Err(FieldError::new("spec", format!("a {kind} needs a `spec`")));
    }
    Ok(match kind {
        Kind::AccessPolicy | Kind::PrivilegedAccessPolicy => {
            let raw: RawAccess = spec.de()?;
            Spec::Access(Arc::new(AccessSpec {
                action: raw.action,
                from: workloads(&raw.from, "spec.from")?,
                to: workloads(&raw.to, "spec.to")?,
                dry_run: raw.dry_run,
            }))
        }
        Kind::WorkloadSet => {
            let raw: RawWorkloadSet = spec.de()?;
            if raw.workload_selectors.is_empty() {
                return Err(FieldError::new(
                    "spec.workloadSelectors",
                    "must list at least one selector",
                ));
            }
            let selectors = raw
                .workload_selectors
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    Selector::compile(s, &format!("spec.workloadSelectors[{i}]"))
                        .map(crate::selector::shared)
                })
                .collect::<Result<_, _>>()?;
            Spec::WorkloadSet(Arc::new(WorkloadSetSpec { selectors }))
        }
        Kind::Peer => {
            let raw: RawPeer = spec.de()?;
            Spec::Peer(PeerSpec {
                reachable: raw.reachable.unwrap_or(true),
            })
        }
        Kind::Export => {
            let _: RawExport = spec.de()?;
            Spec::Export
        }
        Kind::Import => {
            let raw: RawImport = spec.de()?;
            let mut sources = Vec::with_capacity(raw.sources.len());
            for (i, s) in raw.sources.iter().enumerate() {
                let at = format!("spec.sources[{i}]");
                check_name(&s.peer, 253).map_err(|m| FieldError::new(&format!("{at}.peer"), m))?;
                check_name(&s.export_name, 253)
                    .map_err(|m| FieldError::new(&format!("{at}.exportName"), m))?;
                check_name(&s.export_namespace, 63)
                    .map_err(|m| FieldError::new(&format!("{at}.exportNamespace"), m))?;
                if sources
                    .iter()
                    .any(|x: &ImportSource| x.peer.as_str() == s.peer)
                {
                    return Err(FieldError::new(
                        &format!("{at}.peer"),
                        format!("peer `{}` is listed twice", s.peer),
                    ));
                }
                sources.push(ImportSource {
                    peer: s.peer.as_str().into(),
                    export_name: s.export_name.as_str().into(),
                    export_namespace: s.export_namespace.as_str().into(),
                });
            }
            Spec::Import(Arc::new(ImportSpec {
                sources,
                lb_scheme: raw.lb_scheme.unwrap_or(Scheme::RoundRobin),
            }))
        }
        Kind::LoadBalancingPolicy => Spec::LoadBalancing(Arc::new(lb_spec(spec.de()?)?)),
        Kind::Subscription => {
            let raw: RawSubscription = spec.de()?;
            check_name(&raw.agent, 253).map_err(|m| FieldError::new("spec.agent", m))?;
            Spec::Subscription(SubscriptionSpec {
                event: raw.event,
                agent: raw.agent.as_str().into(),
                priority: raw.priority,
                failure_mode: raw.failure_mode,
            })
        }
        Kind::ConnectionLimitPolicy => {
            let raw: RawConnectionLimit = spec.de()?;
            let lease_nanos = match raw.lease_seconds {
                None => None,
                Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Some((s * 1e9) as u64),
                Some(s) => {
                    return Err(FieldError::new(
                        "spec.leaseSeconds",
                        format!("{s} is not a number of seconds greater than 0 (and below 1e9)"),
                    ));
                }
            };
            Spec::ConnectionLimit(Arc::new(ConnectionLimitSpec {
                from: workloads(&raw.from, "spec.from")?,
                to: workloads(&raw.to, "spec.to")?,
                max_connections: raw.max_connections,
                key: attr_keys(&raw.key, "spec.key")?,
                target_key: attr_keys(&raw.target_key, "spec.targetKey")?,
                lease_nanos,
                dry_run: raw.dry_run,
            }))
        }
        Kind::RateLimitPolicy => {
            let raw: RawRateLimit = spec.de()?;
            let rate = raw.connections_per_second;
            if !(rate.is_finite() && rate > 0.0 && rate <= 1e12) {
                return Err(FieldError::new(
                    "spec.connectionsPerSecond",
                    format!("{rate} is not a rate greater than 0 (and at most 1e12)"),
                ));
            }
            let burst = raw.burst.unwrap_or(1);
            if burst == 0 {
                return Err(FieldError::new("spec.burst", "must be at least 1"));
            }
            let bandwidth = match &raw.bandwidth {
                None => None,
                Some(b) => {
                    Some(parse_bandwidth(b).map_err(|m| FieldError::new("spec.bandwidth", m))?)
                }
            };
            Spec::RateLimit(Arc::new(RateLimitSpec {
                from: workloads(&raw.from, "spec.from")?,
                to: workloads(&raw.to, "spec.to")?,
                connections_per_second: rate,
                burst,
                bandwidth,
                key: attr_keys(&raw.key, "spec.key")?,
                target_key: attr_keys(&raw.target_key, "spec.targetKey")?,
                dry_run: raw.dry_run,
            }))
        }
        Kind::WasmAgent => {
            let raw: RawWasmAgent = spec.de()?;
            let module = match (raw.module, raw.module_file) {
                (Some(b64), None) => base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| {
                        FieldError::new("spec.module", format!("not valid base64: {e}"))
                    })?,
                (None, Some(file)) => {
                    return Err(FieldError::new(
                        "spec.moduleFile",
                        format!(
                            "`{file}` was not resolved: `moduleFile` is read by the client that loads the document from a file (clpe apply -f, clpe test); send `module` (base64) otherwise"
                        ),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(FieldError::new(
                        "spec",
                        "give exactly one of `module` and `moduleFile`, not both",
                    ));
                }
                (None, None) => {
                    return Err(FieldError::new(
                        "spec",
                        "give exactly one of `module` and `moduleFile`",
                    ));
                }
            };
            if module.is_empty() {
                return Err(FieldError::new("spec.module", "the module is empty"));
            }
            let d = WasmLimits::default();
            let limits = WasmLimits {
                fuel: raw.limits.fuel.unwrap_or(d.fuel),
                memory_bytes: raw.limits.memory_bytes.unwrap_or(d.memory_bytes),
                timeout_ms: raw.limits.timeout_ms.unwrap_or(d.timeout_ms),
            };
            if limits.fuel == 0 || limits.memory_bytes < 65536 || limits.timeout_ms == 0 {
                return Err(FieldError::new(
                    "spec.limits",
                    "fuel and timeoutMs must be at least 1, memoryBytes at least 65536 (one page)",
                ));
            }
            Spec::WasmAgent(Arc::new(WasmAgentSpec {
                module: module.into(),
                config: raw.config,
                limits,
            }))
        }
    })
}

fn lb_spec(raw: RawLb) -> Result<LbSpec, FieldError> {
    check_name(&raw.import, 253).map_err(|m| FieldError::new("spec.import", m))?;
    let from = match &raw.from {
        Some(items) => workloads(items, "spec.from")?,
        None => Box::new([Workload::Selector(crate::selector::shared(
            Selector::everything(),
        ))]),
    };
    let only = |present: bool, field: &str, scheme: Scheme| -> Result<(), FieldError> {
        if present && raw.scheme != scheme {
            let name = serde_json::to_value(scheme)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            return Err(FieldError::new(
                &format!("spec.{field}"),
                format!("only applies to scheme `{}`", name.unwrap_or_default()),
            ));
        }
        Ok(())
    };
    only(raw.weights.is_some(), "weights", Scheme::Weighted)?;
    only(raw.order.is_some(), "order", Scheme::Static)?;
    only(raw.hash_key.is_some(), "hashKey", Scheme::ConsistentHash)?;
    only(
        raw.locality_label.is_some(),
        "localityLabel",
        Scheme::Locality,
    )?;
    if raw.scheme == Scheme::ConsistentHash && raw.hash_key.is_none() {
        return Err(FieldError::new(
            "spec.hashKey",
            "scheme `consistent-hash` needs a `hashKey`",
        ));
    }
    if raw.scheme == Scheme::Locality && raw.locality_label.is_none() {
        return Err(FieldError::new(
            "spec.localityLabel",
            "scheme `locality` needs a `localityLabel`",
        ));
    }
    if let Some(k) = &raw.hash_key {
        check_key(k).map_err(|m| FieldError::new("spec.hashKey", m))?;
    }
    if let Some(k) = &raw.locality_label {
        check_key(k).map_err(|m| FieldError::new("spec.localityLabel", m))?;
    }
    let mut weights = BTreeMap::new();
    for (peer, w) in raw.weights.unwrap_or_default() {
        check_name(&peer, 253).map_err(|m| FieldError::new(&format!("spec.weights.{peer}"), m))?;
        weights.insert(PeerName::from(peer.as_str()), w);
    }
    let mut order: Vec<PeerName> = Vec::new();
    for (i, peer) in raw.order.unwrap_or_default().iter().enumerate() {
        check_name(peer, 253).map_err(|m| FieldError::new(&format!("spec.order[{i}]"), m))?;
        if order.iter().any(|p| p.as_str() == peer) {
            return Err(FieldError::new(
                &format!("spec.order[{i}]"),
                format!("peer `{peer}` is listed twice"),
            ));
        }
        order.push(peer.as_str().into());
    }
    Ok(LbSpec {
        import: raw.import.as_str().into(),
        from,
        scheme: raw.scheme,
        weights,
        order,
        hash_key: raw.hash_key.map(Into::into),
        locality_label: raw.locality_label.map(Into::into),
    })
}

fn workloads(items: &[RawWorkload], path: &str) -> Result<Box<[Workload]>, FieldError> {
    if items.is_empty() {
        return Err(FieldError::new(path, "must list at least one item"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = || format!("{path}[{i}]");
            match (&item.workload_selector, &item.workload_sets) {
                (Some(sel), None) => Ok(Workload::Selector(crate::selector::shared(
                    Selector::compile_at(sel, || format!("{}.workloadSelector", at()))?,
                ))),
                (None, Some(sets)) => {
                    if sets.is_empty() {
                        return Err(FieldError::new(
                            &format!("{}.workloadSets", at()),
                            "must name at least one WorkloadSet",
                        ));
                    }
                    for (j, s) in sets.iter().enumerate() {
                        check_name(s, 253).map_err(|m| {
                            FieldError::new(&format!("{}.workloadSets[{j}]", at()), m)
                        })?;
                    }
                    Ok(Workload::Sets(
                        sets.iter().map(|s| Arc::from(s.as_str())).collect(),
                    ))
                }
                (Some(_), Some(_)) => Err(FieldError::new(
                    &at(),
                    "has both `workloadSelector` and `workloadSets`; give exactly one",
                )),
                (None, None) => Err(FieldError::new(
                    &at(),
                    "has neither `workloadSelector` nor `workloadSets`; give exactly one",
                )),
            }
        })
        .collect()
}

fn attr_keys(keys: &[String], path: &str) -> Result<Box<[Box<str>]>, FieldError> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            check_key(k).map_err(|m| FieldError::new(&format!("{path}[{i}]"), m))?;
            Ok(Box::from(k.as_str()))
        })
        .collect()
}

/// A document or reference name: 1 to `max` characters of letters, digits, `-`, `_`, `.`,
/// starting and ending with a letter or digit.
pub fn check_name(name: &str, max: usize) -> Result<(), String> {
    let b = name.as_bytes();
    let edge = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if b.is_empty() || b.len() > max {
        return Err(format!(
            "`{}` must be 1 to {max} characters long",
            crate::selector::clip(name)
        ));
    }
    if !(edge(b.first())
        && edge(b.last())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
    {
        return Err(format!(
            "`{}` may hold only letters, digits, `-`, `_` and `.`, and must start and end with a letter or digit",
            crate::selector::clip(name)
        ));
    }
    Ok(())
}

/// Parses `10Mbps`-style bandwidths (decimal units) into bits per second.
pub fn parse_bandwidth(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("`{t}` has no unit (use bps, Kbps, Mbps or Gbps)"))?;
    let (number, unit) = t.split_at(split);
    let scale: f64 = match unit {
        "bps" => 1.0,
        "Kbps" => 1e3,
        "Mbps" => 1e6,
        "Gbps" => 1e9,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{t}` (use bps, Kbps, Mbps or Gbps)"
            ));
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{t}` does not start with a number"))?;
    let bits = value * scale;
    if !bits.is_finite() || !(1.0..=1e18).contains(&bits) {
        return Err(format!("`{t}` is out of range (at least 1bps)"));
    }
    Ok(bits.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_is_decimal() {
        assert_eq!(parse_bandwidth("10Mbps"), Ok(10_000_000));
        assert_eq!(parse_bandwidth("500Kbps"), Ok(500_000));
        assert_eq!(parse_bandwidth("1Gbps"), Ok(1_000_000_000));
        assert_eq!(parse_bandwidth("1.5Kbps"), Ok(1_500));
        assert_eq!(parse_bandwidth("64bps"), Ok(64));
        assert!(parse_bandwidth("10MBps").is_err());
        assert!(parse_bandwidth("10").is_err());
        assert!(parse_bandwidth("fastbps").is_err());
        assert!(parse_bandwidth("0bps").is_err());
    }
}
