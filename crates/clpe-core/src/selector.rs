//! Kubernetes label selectors, compiled once at apply time and matched per decision.

use serde::Deserialize;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashSet;
use smol_str::SmolStr;

use crate::attrs::Attrs;
use crate::error::FieldError;

/// A selector as documents spell it (`workloadSelector`, `workloadSelectors[i]`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<Expression>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expression {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Option<Vec<String>>,
}

/// A compiled selector: every label and every requirement must hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Selector {
    /// Values are short and kept inline; long keys are shared (see [`sharing`]).
    pub labels: Box<[(SmolStr, SmolStr)]>,
    pub requirements: Box<[Requirement]>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    pub key: Box<str>,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    In(Box<[Box<str>]>),
    /// True when the key is absent, as in Kubernetes.
    NotIn(Box<[Box<str>]>),
    Exists,
    DoesNotExist,
}

impl Selector {
    /// `{}`: matches everything, an empty map included.
    pub fn everything() -> Self {
        Selector {
            labels: Box::new([]),
            requirements: Box::new([]),
        }
    }

    pub fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.requirements.is_empty()
    }

    pub fn matches(&self, attrs: &Attrs<'_>) -> bool {
        self.labels.iter().all(|(k, v)| attrs.get(k) == Some(&**v))
            && self
                .requirements
                .iter()
                .all(|r| r.matches(attrs.get(&r.key)))
    }

    /// Compiles and validates; `path` is the selector's field path for errors.
    pub fn compile(raw: &LabelSelector, path: &str) -> Result<Selector, FieldError> {
        Selector::compile_at(raw, || path.to_owned())
    }

    /// Like [`Selector::compile`], with the path made only if there is an error.
    pub fn compile_at(
        raw: &LabelSelector,
        path: impl Fn() -> String,
    ) -> Result<Selector, FieldError> {
        let mut labels = Vec::with_capacity(raw.match_labels.len());
        for (k, v) in &raw.match_labels {
            let at = || format!("{}.matchLabels", path());
            check_key(k).map_err(|m| FieldError::new(&at(), m))?;
            check_value(v).map_err(|m| FieldError::new(&format!("{}.{k}", at()), m))?;
            labels.push((shared_key(k), SmolStr::new(v)));
        }
        let mut requirements = Vec::with_capacity(raw.match_expressions.len());
        for (i, e) in raw.match_expressions.iter().enumerate() {
            let at = format!("{}.matchExpressions[{i}]", path());
            check_key(&e.key).map_err(|m| FieldError::new(&format!("{at}.key"), m))?;
            let values = || -> Result<Box<[Box<str>]>, FieldError> {
                let values = e.values.as_deref().unwrap_or_default();
                if values.is_empty() {
                    return Err(FieldError::new(
                        &format!("{at}.values"),
                        format!("operator `{}` needs at least one value", e.operator),
                    ));
                }
                for (j, v) in values.iter().enumerate() {
                    check_value(v).map_err(|m| FieldError::new(&format!("{at}.values[{j}]"), m))?;
                }
                Ok(values.iter().map(|v| Box::from(v.as_str())).collect())
            };
            let no_values = |op: Op| -> Result<Op, FieldError> {
                if e.values.as_ref().is_some_and(|v| !v.is_empty()) {
                    return Err(FieldError::new(
                        &format!("{at}.values"),
                        format!("operator `{}` takes no values", e.operator),
                    ));
                }
                Ok(op)
            };
            let op = match e.operator.as_str() {
                "In" => Op::In(values()?),
                "NotIn" => Op::NotIn(values()?),
                "Exists" => no_values(Op::Exists)?,
                "DoesNotExist" => no_values(Op::DoesNotExist)?,
                other => {
                    return Err(FieldError::new(
                        &format!("{at}.operator"),
                        format!("operator `{other}` is not one of In, NotIn, Exists, DoesNotExist"),
                    ));
                }
            };
            requirements.push(Requirement {
                key: e.key.as_str().into(),
                op,
            });
        }
        Ok(Selector {
            labels: labels.into(),
            requirements: requirements.into(),
        })
    }
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::In(vs), Some(v)) => vs.iter().any(|x| &**x == v),
            (Op::In(_), None) => false,
            (Op::NotIn(vs), Some(v)) => !vs.iter().any(|x| &**x == v),
            (Op::NotIn(_), None) => true,
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
        }
    }
}

/// What a batch of documents compiled so far, to share: thousands of policies name the
/// same few keys and often the very same selector.
#[derive(Default)]
struct Shared {
    keys: FxHashSet<SmolStr>,
    selectors: FxHashSet<Arc<Selector>>,
}

thread_local! {
    static SHARED: RefCell<Option<Shared>> = const { RefCell::new(None) };
}

/// Runs `f` (parsing a batch) so that, on this thread, identical selectors it compiles
/// share one allocation, and label keys one string. Nothing is kept once `f` returns.
pub fn sharing<R>(f: impl FnOnce() -> R) -> R {
    let started = SHARED.with(|s| {
        let mut s = s.borrow_mut();
        let fresh = s.is_none();
        if fresh {
            *s = Some(Shared::default());
        }
        fresh
    });
    let result = f();
    if started {
        SHARED.with(|s| s.borrow_mut().take());
    }
    result
}

/// A label key, shared with the batch's other selectors when [`sharing`].
fn shared_key(key: &str) -> SmolStr {
    SHARED.with(|s| match s.borrow_mut().as_mut() {
        Some(shared) => match shared.keys.get(key) {
            Some(k) => k.clone(),
            None => {
                let k = SmolStr::new(key);
                shared.keys.insert(k.clone());
                k
            }
        },
        None => SmolStr::new(key),
    })
}

/// A compiled selector behind an `Arc`: the batch's copy when an identical one was
/// compiled before (when [`sharing`]).
pub fn shared(selector: Selector) -> Arc<Selector> {
    SHARED.with(|s| match s.borrow_mut().as_mut() {
        Some(shared) => match shared.selectors.get(&selector) {
            Some(a) => a.clone(),
            None => {
                let a = Arc::new(selector);
                shared.selectors.insert(a.clone());
                a
            }
        },
        None => Arc::new(selector),
    })
}

/// Kubernetes label-key syntax: an optional DNS-subdomain prefix and `/`, then a name of
/// at most 63 characters.
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns_subdomain(prefix)
    {
        return Err(format!(
            "label key `{}`: prefix `{}` is not a DNS subdomain (lowercase letters, digits, `-` and `.`, at most 253 characters)",
            clip(key),
            clip(prefix)
        ));
    }
    if name.is_empty() || name.len() > 63 || !is_label_name(name) {
        return Err(format!(
            "label key `{}`: name part must be 1 to 63 characters of letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit",
            clip(key)
        ));
    }
    Ok(())
}

/// Kubernetes label-value syntax: empty, or at most 63 characters like a key's name.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 || !is_label_name(value) {
        return Err(format!(
            "label value `{}` must be at most 63 characters of letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit",
            clip(value)
        ));
    }
    Ok(())
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    let edge_ok = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    edge_ok(b.first())
        && edge_ok(b.last())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            let edge =
                |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            edge(b.first())
                && edge(b.last())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Shortens user input quoted in messages, so a huge string does not make a huge error.
pub fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or_default())
}

#[cfg(test)]
#[path = "selector_tests.rs"]
mod tests;
