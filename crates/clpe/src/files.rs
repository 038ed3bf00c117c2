//! Reading documents from files, directories and standard input.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use serde_json::Value;

/// The text of `FILE`, or every `.yaml`/`.yml`/`.json` file of a directory (sorted), or
/// standard input for `-`; each with the directory `moduleFile` paths are relative to.
pub fn read_inputs(path: &str) -> Result<Vec<(PathBuf, String)>> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(vec![(PathBuf::from("-"), text)]);
    }
    let p = Path::new(path);
    if p.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("reading directory {path}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| {
                matches!(
                    f.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            })
            .collect();
        files.sort();
        return files
            .into_iter()
            .map(|f| {
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?;
                Ok((f, text))
            })
            .collect();
    }
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {path}"))?;
    Ok(vec![(p.to_path_buf(), text)])
}

/// The directory relative paths in `file` are resolved against.
pub fn base_dir(file: &Path) -> PathBuf {
    if file == Path::new("-") {
        return PathBuf::from(".");
    }
    file.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Inlines `spec.moduleFile` of WasmAgent documents as `spec.module` (base64), reading
/// the file relative to `base`. Walks any tree (test files nest documents in steps).
pub fn resolve_module_files(value: &mut Value, base: &Path) -> Result<()> {
    match value {
        Value::Object(map) => {
            if map.get("kind").and_then(Value::as_str) == Some("WasmAgent")
                && let Some(Value::Object(spec)) = map.get_mut("spec")
                && let Some(Value::String(file)) = spec.get("moduleFile").cloned()
            {
                let path = base.join(&file);
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("reading moduleFile {}", path.display()))?;
                spec.remove("moduleFile");
                spec.insert(
                    "module".into(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
                );
            }
            for v in map.values_mut() {
                resolve_module_files(v, base)?;
            }
        }
        Value::Array(items) => {
            for v in items {
                resolve_module_files(v, base)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Document trees of one input, with module files inlined.
pub fn values(file: &Path, text: &str) -> Result<Vec<Value>, String> {
    let mut values = clpe_core::document::parse_values(text).map_err(|e| e.to_string())?;
    let base = base_dir(file);
    for v in &mut values {
        resolve_module_files(v, &base).map_err(|e| format!("{e:#}"))?;
    }
    Ok(values)
}

/// Reads and validates documents from a path (`-`, a file or a directory).
pub fn load_documents(path: &str) -> Result<Result<Vec<clpe_core::Document>, String>> {
    Ok(parse_inputs(&read_inputs(path)?))
}

/// Validates the documents of texts already read (see [`read_inputs`]).
pub fn parse_inputs(inputs: &[(PathBuf, String)]) -> Result<Vec<clpe_core::Document>, String> {
    let mut docs = Vec::new();
    for (file, text) in inputs {
        let base = base_dir(file);
        let parsed = clpe_core::document::parse_documents_with(text, |v| {
            resolve_module_files(v, &base).map_err(|e| format!("{e:#}"))
        });
        match parsed {
            Ok(d) => docs.extend(d),
            Err(e) => return Err(format!("{}: {e}", file.display())),
        }
    }
    Ok(docs)
}
