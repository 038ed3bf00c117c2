//! From text (YAML 1.2 or JSON) to validated documents.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::spec::{SpecSource, check_name, parse_spec};
use super::{API_VERSION, Canonical, DocKey, Document, Kind};
use crate::error::{ApplyError, DocError};
use crate::selector::{check_key, check_value, clip};

/// The largest input accepted in one call: bigger is refused before it is parsed.
pub const MAX_INPUT_BYTES: usize = 256 << 20;
/// The deepest nesting accepted in a document.
const MAX_DEPTH: usize = 64;

/// Parses every document of `text`: YAML (one or many, `---`) or JSON (an object or an
/// array). All or nothing: any invalid document fails the whole call, naming each one.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, ApplyError> {
    parse_documents_with(text, |_| Ok(()))
}

/// Like [`parse_documents`], letting `prepare` rewrite each document tree first (the CLI
/// inlines `moduleFile` this way). JSON documents that need no preparation (no
/// `moduleFile`) take a fast path that builds no tree at all.
pub fn parse_documents_with(
    text: &str,
    prepare: impl FnMut(&mut Value) -> Result<(), String>,
) -> Result<Vec<Document>, ApplyError> {
    crate::selector::sharing(|| parse_all(text, prepare))
}

fn parse_all(
    text: &str,
    mut prepare: impl FnMut(&mut Value) -> Result<(), String>,
) -> Result<Vec<Document>, ApplyError> {
    let items = items(text)?;
    let mut docs = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let index = i + 1;
        let result = match item {
            Item::Json(body) if !body.contains("moduleFile") => match fast_document(body, index) {
                Some(doc) => Ok(doc),
                None => slow_json(body, index, &mut prepare),
            },
            Item::Json(body) => slow_json(body, index, &mut prepare),
            Item::Tree(mut value) => prepare(&mut value)
                .map_err(|m| DocError {
                    document: format!("document #{index}"),
                    field: String::new(),
                    message: m,
                })
                .and_then(|()| parse_value(value, index)),
        };
        match result {
            Ok(doc) => docs.push(doc),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(ApplyError::Invalid(errors))
    }
}

fn slow_json(
    body: &str,
    index: usize,
    prepare: &mut impl FnMut(&mut Value) -> Result<(), String>,
) -> Result<Document, DocError> {
    let anonymous = || format!("document #{index}");
    let mut value: Value = serde_json::from_str(body).map_err(|e| DocError {
        document: anonymous(),
        field: String::new(),
        message: format!("not valid JSON: {e}"),
    })?;
    if depth(&value) > MAX_DEPTH {
        return Err(DocError {
            document: anonymous(),
            field: String::new(),
            message: format!("nested deeper than {MAX_DEPTH} levels"),
        });
    }
    prepare(&mut value).map_err(|m| DocError {
        document: anonymous(),
        field: String::new(),
        message: m,
    })?;
    parse_value(value, index)
}

/// One document of the input, not yet parsed (JSON text) or parsed into a tree (YAML).
enum Item<'a> {
    Json(&'a str),
    Tree(Value),
}

/// Splits the text into document trees without looking at their contents.
pub fn parse_values(text: &str) -> Result<Vec<Value>, ApplyError> {
    items(text)?
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Item::Tree(v) => Ok(v),
            Item::Json(body) => match serde_json::from_str::<Value>(body) {
                Ok(v) if depth(&v) <= MAX_DEPTH => Ok(v),
                Ok(_) => Err(ApplyError::Malformed(format!(
                    "document #{}: nested deeper than {MAX_DEPTH} levels",
                    i + 1
                ))),
                Err(e) => Err(ApplyError::Malformed(format!(
                    "document #{}: not valid JSON: {e}",
                    i + 1
                ))),
            },
        })
        .collect()
}

fn items(text: &str) -> Result<Vec<Item<'_>>, ApplyError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(ApplyError::Malformed(format!(
            "input is {} bytes, more than the {MAX_INPUT_BYTES} accepted",
            text.len()
        )));
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(values)) => {
                if let Some(i) = values.iter().position(|v| depth(v) > MAX_DEPTH) {
                    return Err(ApplyError::Malformed(format!(
                        "document #{}: nested deeper than {MAX_DEPTH} levels",
                        i + 1
                    )));
                }
                Ok(values.into_iter().map(Item::Tree).collect())
            }
            Ok(_) => Err(ApplyError::Malformed(
                "expected a JSON array of documents".into(),
            )),
            Err(e) => Err(ApplyError::Malformed(format!("not valid JSON: {e}"))),
        };
    }
    let mut out = Vec::new();
    for (index, chunk) in split_yaml(text).into_iter().enumerate() {
        let body = strip_comments(chunk);
        if body.is_empty() {
            continue;
        }
        // JSON in a YAML stream (one document per `---`) parses much faster as JSON; a
        // chunk that is not valid JSON (YAML flow style, say) is read as YAML.
        if body.starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok() {
            out.push(Item::Json(body));
            continue;
        }
        let value: Value =
            serde_saphyr::from_str_with_options(chunk, yaml_options()).map_err(|e| {
                ApplyError::Malformed(format!(
                    "document #{}: not valid YAML: {}",
                    index + 1,
                    clip_lines(&e.to_string())
                ))
            })?;
        if depth(&value) > MAX_DEPTH {
            return Err(ApplyError::Malformed(format!(
                "document #{}: nested deeper than {MAX_DEPTH} levels",
                index + 1
            )));
        }
        if !value.is_null() {
            out.push(Item::Tree(value));
        }
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FastEnvelope<'a> {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    kind: String,
    metadata: FastMeta,
    #[serde(borrow, default)]
    spec: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FastMeta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "annotations")]
    _annotations: Option<BTreeMap<String, String>>,
}

/// The fast path for one JSON document: typed envelope, the spec converted straight from
/// its text. `None` when anything is off: the tree path then reports it precisely (and
/// decides exactly as it always would).
fn fast_document(body: &str, index: usize) -> Option<Document> {
    let env: FastEnvelope<'_> = serde_json::from_str(body).ok()?;
    let kind = Kind::ALL.into_iter().find(|k| k.as_str() == env.kind)?;
    if env.api_version.as_deref().is_some_and(|v| v != API_VERSION) {
        return None;
    }
    let meta = env.metadata;
    check_name(&meta.name, 253).ok()?;
    if let Some(ns) = &meta.namespace
        && (!kind.is_namespaced() || check_name(ns, 63).is_err())
    {
        return None;
    }
    let labels = meta.labels.unwrap_or_default();
    if labels
        .iter()
        .any(|(k, v)| check_key(k).is_err() || check_value(v).is_err())
    {
        return None;
    }
    let key = DocKey::new(kind, meta.namespace.as_deref(), &meta.name);
    let spec_text = env.spec.map(|r| r.get());
    let spec = parse_spec(kind, SpecSource::Json(spec_text)).ok()?;
    let _ = index;
    let raw = canonical_text(&key, &labels, spec_text.filter(|t| t.trim() != "null"));
    Some(Document {
        key,
        labels,
        spec,
        raw,
    })
}

/// The normalised `metadata`: name, the namespace of namespaced kinds, labels if any.
fn canonical_meta(key: &DocKey, labels: &BTreeMap<String, String>) -> Map<String, Value> {
    let mut meta = Map::new();
    meta.insert("name".into(), Value::String(key.name.to_string()));
    if key.kind.is_namespaced() {
        meta.insert("namespace".into(), Value::String(key.namespace.to_string()));
    }
    if !labels.is_empty() {
        let l = labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        meta.insert("labels".into(), Value::Object(l));
    }
    meta
}

/// Appends `s` as a JSON string, escaped as `serde_json` does.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                out.push_str("\\u00");
                for shift in [4, 0] {
                    out.push(char::from_digit((c as u32 >> shift) & 0xf, 16).unwrap_or('0'));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The canonical JSON of a document whose spec is already JSON text: the same text as
/// [`canonical`] gives (keys in order), written directly.
fn canonical_text(
    key: &DocKey,
    labels: &BTreeMap<String, String>,
    spec: Option<&str>,
) -> Canonical {
    let mut out = String::with_capacity(128 + spec.map_or(0, str::len));
    out.push_str("{\"apiVersion\":\"");
    out.push_str(API_VERSION);
    out.push_str("\",\"kind\":\"");
    out.push_str(key.kind.as_str());
    out.push_str("\",\"metadata\":{");
    if !labels.is_empty() {
        out.push_str("\"labels\":{");
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(&mut out, k);
            out.push(':');
            push_json_str(&mut out, v);
        }
        out.push_str("},");
    }
    out.push_str("\"name\":");
    push_json_str(&mut out, &key.name);
    if key.kind.is_namespaced() {
        out.push_str(",\"namespace\":");
        push_json_str(&mut out, &key.namespace);
    }
    out.push('}');
    if let Some(spec) = spec {
        out.push_str(",\"spec\":");
        out.push_str(spec.trim());
    }
    out.push('}');
    Canonical::new(&out)
}

/// YAML 1.2 as the SPEC says: only `true` and `false` (any case) are booleans.
pub fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! { strict_booleans: true }
}

/// Splits a YAML stream at its document markers. A line starting with `---` followed by
/// a space or the end of the line is always a marker in YAML, even inside scalars.
fn split_yaml(text: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        let is_marker = content == "---"
            || content.starts_with("--- ")
            || content.starts_with("---\t")
            || content == "...";
        if is_marker {
            chunks.push(text.get(start..offset).unwrap_or_default());
            // `--- {json}`: the rest of the line belongs to the next document.
            start = if content.len() > 3 && content != "..." {
                offset + 4
            } else {
                offset + line.len()
            };
        }
        offset += line.len();
    }
    chunks.push(text.get(start..).unwrap_or_default());
    chunks
}

/// The chunk without its leading comment and blank lines.
fn strip_comments(chunk: &str) -> &str {
    let mut rest = chunk;
    loop {
        let t = rest.trim_start();
        if let Some(after) = t.strip_prefix('#') {
            rest = after.split_once('\n').map(|(_, r)| r).unwrap_or("");
        } else {
            return t.trim_end();
        }
    }
}

fn clip_lines(message: &str) -> String {
    let mut lines: Vec<&str> = message.lines().take(6).collect();
    if message.lines().count() > 6 {
        lines.push("…");
    }
    clip_long(&lines.join(" "))
}

fn clip_long(s: &str) -> String {
    if s.len() <= 400 {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(400).collect::<String>())
    }
}

fn depth(v: &Value) -> usize {
    // Iterative, so a hostile document cannot overflow the stack here either.
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        if d > MAX_DEPTH {
            return d;
        }
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|x| (x, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    max
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Validates one document tree; `index` (from 1) names it while it has no name.
pub fn parse_value(value: Value, index: usize) -> Result<Document, DocError> {
    let anonymous = format!("document #{index}");
    let err = |doc: &str, field: &str, message: String| DocError {
        document: doc.to_owned(),
        field: field.to_owned(),
        message,
    };
    let Value::Object(mut top) = value else {
        return Err(err(
            &anonymous,
            "",
            format!("expected a map, found {}", type_name(&value)),
        ));
    };
    let kind_text = match top.remove("kind") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(err(
                &anonymous,
                "kind",
                format!("expected a string, found {}", type_name(&other)),
            ));
        }
        None => return Err(err(&anonymous, "kind", "is missing".into())),
    };
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == kind_text) else {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(err(
            &anonymous,
            "kind",
            format!(
                "unknown kind `{}` (known: {})",
                clip(&kind_text),
                known.join(", ")
            ),
        ));
    };
    let named = format!("{kind} ({anonymous})");
    let metadata = match top.remove("metadata") {
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(err(
                &named,
                "metadata",
                format!("expected a map, found {}", type_name(&other)),
            ));
        }
        None => return Err(err(&named, "metadata", "is missing".into())),
    };
    let (key, labels) = parse_metadata(kind, metadata, &named)?;
    let doc_name = key.to_string();
    match top.remove("apiVersion") {
        None => {}
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(other) => {
            return Err(err(
                &doc_name,
                "apiVersion",
                format!(
                    "`{}` is not accepted (use `{API_VERSION}` or leave it out)",
                    clip(&other.to_string())
                ),
            ));
        }
    }
    let spec = top.remove("spec").unwrap_or(Value::Null);
    if let Some(field) = top.keys().next() {
        return Err(err(
            &doc_name,
            &clip(field),
            "unknown field (a document has apiVersion, kind, metadata and spec)".into(),
        ));
    }
    let spec_json = spec.clone();
    let parsed = parse_spec(kind, SpecSource::Tree(spec))
        .map_err(|e| err(&doc_name, &e.field, e.message))?;
    let raw = canonical(&key, &labels, spec_json);
    Ok(Document {
        key,
        labels,
        spec: parsed,
        raw,
    })
}

fn parse_metadata(
    kind: Kind,
    mut meta: Map<String, Value>,
    doc: &str,
) -> Result<(DocKey, BTreeMap<String, String>), DocError> {
    let err = |doc: &str, field: &str, message: String| DocError {
        document: doc.to_owned(),
        field: field.to_owned(),
        message,
    };
    let name = match meta.remove("name") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(err(
                doc,
                "metadata.name",
                format!("expected a string, found {}", type_name(&other)),
            ));
        }
        None => return Err(err(doc, "metadata.name", "is missing".into())),
    };
    let namespace = match meta.remove("namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(err(
                doc,
                "metadata.namespace",
                format!("expected a string, found {}", type_name(&other)),
            ));
        }
    };
    check_name(&name, 253).map_err(|m| err(doc, "metadata.name", m))?;
    if let Some(ns) = &namespace {
        if !kind.is_namespaced() {
            return Err(err(
                &format!("{kind} {name}"),
                "metadata.namespace",
                format!("a {kind} is cluster-wide and takes no namespace"),
            ));
        }
        check_name(ns, 63).map_err(|m| err(doc, "metadata.namespace", m))?;
    }
    let key = DocKey::new(kind, namespace.as_deref(), &name);
    let doc = key.to_string();
    let mut labels = BTreeMap::new();
    match meta.remove("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                check_key(&k).map_err(|m| err(&doc, "metadata.labels", m))?;
                let Value::String(v) = v else {
                    return Err(err(
                        &doc,
                        &format!("metadata.labels.{}", clip(&k)),
                        format!("expected a string, found {}", type_name(&v)),
                    ));
                };
                check_value(&v)
                    .map_err(|m| err(&doc, &format!("metadata.labels.{}", clip(&k)), m))?;
                labels.insert(k, v);
            }
        }
        Some(other) => {
            return Err(err(
                &doc,
                "metadata.labels",
                format!("expected a map, found {}", type_name(&other)),
            ));
        }
    }
    match meta.remove("annotations") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) if map.values().all(Value::is_string) => {}
        Some(_) => {
            return Err(err(
                &doc,
                "metadata.annotations",
                "expected a map of strings".into(),
            ));
        }
    }
    if let Some(field) = meta.keys().next() {
        return Err(err(
            &doc,
            &format!("metadata.{}", clip(field)),
            "unknown field (metadata has name, namespace, labels and annotations)".into(),
        ));
    }
    Ok((key, labels))
}

/// The normalised document as compact JSON: explicit apiVersion and namespace.
fn canonical(key: &DocKey, labels: &BTreeMap<String, String>, spec: Value) -> Canonical {
    let meta = canonical_meta(key, labels);
    let mut top = Map::new();
    top.insert("apiVersion".into(), Value::String(API_VERSION.into()));
    top.insert("kind".into(), Value::String(key.kind.as_str().into()));
    top.insert("metadata".into(), Value::Object(meta));
    if !spec.is_null() {
        top.insert("spec".into(), spec);
    }
    Canonical::new(&Value::Object(top).to_string())
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
