//! Checks a compiled module against ABI v1 before anything runs: no imports at all, and
//! the entry points exported with the right types.

use wasmtime::{ExternType, FuncType, Module, ValType};

use crate::error::LoadError;

/// `(name, params, results)` of the functions ABI v1 calls; `clpe_init` is optional.
const FUNCS: [(&str, &[Ty], &[Ty], bool); 4] = [
    ("clpe_abi_version", &[], &[Ty::I32], true),
    ("clpe_alloc", &[Ty::I32], &[Ty::I32], true),
    ("clpe_init", &[Ty::I32, Ty::I32], &[Ty::I64], false),
    ("clpe_decide", &[Ty::I32, Ty::I32], &[Ty::I64], true),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ty {
    I32,
    I64,
}

fn ty_of(v: &ValType) -> Option<Ty> {
    match v {
        ValType::I32 => Some(Ty::I32),
        ValType::I64 => Some(Ty::I64),
        _ => None,
    }
}

fn kind(ty: &ExternType) -> &'static str {
    match ty {
        ExternType::Func(_) => "a function",
        ExternType::Global(_) => "a global",
        ExternType::Table(_) => "a table",
        ExternType::Memory(_) => "a memory",
        ExternType::Tag(_) => "a tag",
    }
}

fn signature(f: &FuncType) -> String {
    let list = |it: &mut dyn Iterator<Item = ValType>| {
        it.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
    };
    format!(
        "func({}) -> ({})",
        list(&mut f.params()),
        list(&mut f.results())
    )
}

fn want(params: &[Ty], results: &[Ty]) -> &'static str {
    match (params.len(), results.first()) {
        (0, _) => "func() -> (i32)",
        (1, _) => "func(i32) -> (i32)",
        _ => "func(i32, i32) -> (i64)",
    }
}

/// Whether the module's entry points match ABI v1; returns whether it exports `clpe_init`.
pub(crate) fn check(module: &Module) -> Result<bool, LoadError> {
    if let Some(import) = module.imports().next() {
        return Err(LoadError::Import {
            module: import.module().to_owned(),
            name: import.name().to_owned(),
            kind: kind(&import.ty()),
        });
    }
    match module.get_export("memory") {
        Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {}
        Some(ExternType::Memory(_)) => {
            return Err(LoadError::WrongExport {
                name: "memory",
                found: "a 64-bit or shared memory".into(),
                want: "a 32-bit unshared memory",
            });
        }
        Some(other) => {
            return Err(LoadError::WrongExport {
                name: "memory",
                found: kind(&other).into(),
                want: "a memory",
            });
        }
        None => return Err(LoadError::MissingExport("memory")),
    }
    let mut has_init = false;
    for (name, params, results, required) in FUNCS {
        match module.get_export(name) {
            Some(ExternType::Func(f)) => {
                let ps: Vec<Option<Ty>> = f.params().map(|p| ty_of(&p)).collect();
                let rs: Vec<Option<Ty>> = f.results().map(|r| ty_of(&r)).collect();
                let ok = ps.iter().copied().eq(params.iter().map(|t| Some(*t)))
                    && rs.iter().copied().eq(results.iter().map(|t| Some(*t)));
                if !ok {
                    return Err(LoadError::WrongExport {
                        name,
                        found: signature(&f),
                        want: want(params, results),
                    });
                }
                has_init |= name == "clpe_init";
            }
            Some(other) => {
                return Err(LoadError::WrongExport {
                    name,
                    found: kind(&other).into(),
                    want: want(params, results),
                });
            }
            None if required => {
                return Err(LoadError::MissingExport(name));
            }
            None => {}
        }
    }
    Ok(has_init)
}
