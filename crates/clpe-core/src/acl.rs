//! The `acl` agent: ClusterLink's access-control semantics (SPEC §3.1).
//!
//! Privileged policies form one index, regular ones one index per namespace. Within an
//! index the rules are ordered deny (by name) then allow (by name), so the first matching
//! rule id is exactly what the tiers say: deny beats allow, and among the matches of the
//! deciding bucket the smallest name wins. Privileged is consulted before regular, then
//! default deny. Dry-run policies live only in a shadow copy of the tables, consulted
//! to report what they would have done.

use hashbrown::HashTable;
use std::hash::BuildHasher as _;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use smol_str::SmolStr;

use crate::agent::{Agent, Held, Verdict};
use crate::attrs::Attrs;
use crate::context::{Context, Notes, Scope};
use crate::document::{Action, Document, Kind, Spec, Workload};
use crate::error::{AgentError, DocError};
use crate::event::{Direction, EventType};
use crate::index::{Dests, MatchIndex, Rule};
use crate::selector::Selector;
use crate::snapshot::{Destinations, Docs, Snapshot};
use crate::text::Text;

pub const DEFAULT_DENY: &str = "<default deny>";

/// The default deny's name and sentence, made once for the process: every snapshot
/// shares them, so the name keeps its origin (what the monitor counts by) across applies.
static DEFAULT_TEXTS: std::sync::LazyLock<(Text, Text)> = std::sync::LazyLock::new(|| {
    (
        Text::named(DEFAULT_DENY),
        Text::new("denied: no access policy allows it (default deny)"),
    )
});

#[derive(Clone, Debug)]
pub struct AclRule {
    pub action: Action,
    /// `namespace/name`, or `/name` for privileged policies.
    pub matched_by: Text,
    pub privileged: bool,
}

impl AclRule {
    /// The sentence a response gives for this rule's decision, `allowed by AccessPolicy
    /// ns/name` or `denied by ...`: made when a response takes it, from the name the rule
    /// holds, rather than kept beside it (a second text per rule to read, and to keep).
    pub fn reason(&self) -> Held<'_> {
        let prefix = match (self.action, self.privileged) {
            (Action::Allow, false) => "allowed by AccessPolicy ",
            (Action::Allow, true) => "allowed by PrivilegedAccessPolicy ",
            (Action::Deny, false) => "denied by AccessPolicy ",
            (Action::Deny, true) => "denied by PrivilegedAccessPolicy ",
        };
        let name = self
            .matched_by
            .strip_prefix('/')
            .unwrap_or(&self.matched_by);
        Held::Joined(prefix, name)
    }
}

#[derive(Debug, Default)]
struct AclIndex {
    index: MatchIndex,
    rules: Vec<AclRule>,
    /// The numbers of the exports it was built over, and whether it has tables for
    /// egress decisions: a later snapshot keeps it only where both are the same.
    made_for: (std::ops::Range<u32>, bool),
}

impl AclIndex {
    fn first(&self, src: &Attrs<'_>, dst: &Dst<'_>) -> Option<&AclRule> {
        if self.rules.is_empty() {
            return None;
        }
        self.index
            .first_match_at(src, &dst.0, dst.1)
            .and_then(|id| self.rules.get(id as usize))
    }
}

/// A tier's and each namespace's index, shared with the snapshots before and after this
/// one while their documents do not change.
#[derive(Debug, Default)]
struct Tables {
    privileged: Arc<AclIndex>,
    by_namespace: ByNamespace,
}

/// The regular policies' tables by namespace, names compared without a call to `memcmp`.
/// A few namespaces (the usual case) are compared in turn, which costs less than hashing
/// the name; more are found by hash.
#[derive(Default)]
struct ByNamespace {
    few: Vec<(SmolStr, Arc<AclIndex>)>,
    many: HashTable<(SmolStr, Arc<AclIndex>)>,
}

/// Most namespaces compared in turn; past it, the tables are found by hash.
const FEW_NAMESPACES: usize = 4;

fn namespace_hash(namespace: &str) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(namespace)
}

impl ByNamespace {
    fn get(&self, namespace: &str) -> Option<&Arc<AclIndex>> {
        let eq = |(n, _): &(SmolStr, Arc<AclIndex>)| crate::names::same(n, namespace);
        match self.many.is_empty() {
            true => self.few.iter().find(|e| eq(e)),
            false => self.many.find(namespace_hash(namespace), eq),
        }
        .map(|(_, t)| t)
    }

    fn iter(&self) -> impl Iterator<Item = &(SmolStr, Arc<AclIndex>)> {
        self.few.iter().chain(self.many.iter())
    }
}

impl FromIterator<(SmolStr, Arc<AclIndex>)> for ByNamespace {
    fn from_iter<I: IntoIterator<Item = (SmolStr, Arc<AclIndex>)>>(tables: I) -> Self {
        let mut by = HashTable::new();
        for (namespace, t) in tables {
            let hash = namespace_hash(&namespace);
            match by.find_mut(hash, |(n, _): &(SmolStr, Arc<AclIndex>)| *n == namespace) {
                Some(slot) => slot.1 = t,
                None => {
                    by.insert_unique(hash, (namespace, t), |(n, _)| namespace_hash(n));
                }
            }
        }
        match by.len() <= FEW_NAMESPACES {
            true => ByNamespace {
                few: by.into_iter().collect(),
                many: HashTable::new(),
            },
            false => ByNamespace {
                few: Vec::new(),
                many: by,
            },
        }
    }
}

impl std::fmt::Debug for ByNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(n, t)| (n, t)))
            .finish()
    }
}

impl Tables {
    fn evaluate(&self, namespace: &str, src: &Attrs<'_>, dst: &Dst<'_>) -> Option<&AclRule> {
        self.privileged.first(src, dst).or_else(|| {
            self.by_namespace
                .get(namespace)
                .and_then(|t| t.first(src, dst))
        })
    }
}

/// The compiled access policies of a snapshot.
#[derive(Debug, Default)]
pub struct AclTables {
    enforced: Tables,
    /// Every policy, dry-run ones included; only built when there are dry-run policies.
    shadow: Option<Tables>,
    default_deny: Text,
    default_reason: Text,
}

/// A policy being filed: its action, rule, payload and whether it is dry-run.
type Entry = (Action, Rule, AclRule, bool);

/// What a build may keep of the snapshot before it: its tables, and which tiers and
/// namespaces have the very same policies and exports (`None`: the privileged tier; the
/// caller has checked that everything else their indexes read is the same too).
pub struct Earlier<'a> {
    pub tables: &'a AclTables,
    pub unchanged: &'a dyn Fn(Option<&str>) -> bool,
}

type Resolve = fn(
    &[Workload],
    &FxHashMap<&str, &[Arc<Selector>]>,
    &Document,
    &str,
) -> Result<Box<[Arc<Selector>]>, DocError>;

/// A destination side: its attributes, and for an export its number among the
/// snapshot's [`Destinations`] (rules that match few exports are found through it).
pub struct Dst<'a>(pub Attrs<'a>, pub Option<u32>);

/// An access decision: the rule that decided, or `None` for the default deny.
#[derive(Clone, Copy, Debug)]
pub struct AccessDecision<'a> {
    pub rule: Option<&'a AclRule>,
}

impl AccessDecision<'_> {
    pub fn allowed(&self) -> bool {
        self.rule.is_some_and(|r| r.action == Action::Allow)
    }
}

impl AclTables {
    pub fn build(
        docs: &Docs,
        sets: &FxHashMap<&str, &[Arc<Selector>]>,
        resolve: Resolve,
        symbols: &crate::attrs::Symbols,
        dests: &Destinations<'_>,
        earlier: Option<Earlier<'_>>,
    ) -> Result<AclTables, DocError> {
        // The privileged tier's policies, and each namespace's regular ones.
        let mut privileged: Vec<&Document> = Vec::new();
        // By name, so that of two broken policies the first in document order is named.
        let mut regular: std::collections::BTreeMap<&str, Vec<&Document>> = Default::default();
        let mut any_dry_run = false;
        let access = crate::snapshot::list(docs, Kind::AccessPolicy);
        for doc in access.chain(crate::snapshot::list(docs, Kind::PrivilegedAccessPolicy)) {
            let Spec::Access(spec) = &doc.spec else {
                continue;
            };
            any_dry_run |= spec.dry_run;
            match doc.key.kind == Kind::PrivilegedAccessPolicy {
                true => privileged.push(doc),
                false => regular.entry(&doc.key.namespace).or_default().push(doc),
            }
        }
        // Ingress decisions name their export: a namespace's policies index its exports,
        // privileged ones every export. Where there are Import sources (egress
        // decisions, which name none), every rule is in the pair tables too.
        let all = (
            Dests {
                first: 0,
                attrs: &dests.exports,
            },
            !dests.egress.is_empty(),
        );
        let of = |namespace: &str| {
            let range = dests.ranges.get(namespace).cloned().unwrap_or(0..0);
            let attrs = (dests.exports)
                .get(range.start as usize..range.end as usize)
                .unwrap_or_default();
            let first = range.start;
            (Dests { first, attrs }, dests.egress.contains(namespace))
        };
        // One tier's or namespace's (`None`: the privileged tier) enforced index, and its
        // shadow one when some policy is dry-run: the earlier snapshot's where they can be
        // kept, else built.
        let group = |namespace: Option<&str>,
                     members: &[&Document],
                     (dests, egress): (Dests<'_>, bool)|
         -> Result<(Arc<AclIndex>, Option<Arc<AclIndex>>), DocError> {
            let made_for = (dests.first..dests.first + dests.attrs.len() as u32, egress);
            let keep = earlier.as_ref().filter(|e| (e.unchanged)(namespace));
            let kept = |tables: Option<&Tables>| {
                let t = match namespace {
                    None => &tables?.privileged,
                    Some(n) => tables?.by_namespace.get(n)?,
                };
                (t.made_for == made_for).then(|| t.clone())
            };
            let enforced = keep.and_then(|e| kept(Some(&e.tables.enforced)));
            let shadow =
                (keep.filter(|_| any_dry_run)).and_then(|e| kept(e.tables.shadow.as_ref()));
            if let Some(enforced) = &enforced
                && (shadow.is_some() || !any_dry_run)
            {
                return Ok((enforced.clone(), shadow));
            }
            let mut entries: Vec<Entry> = Vec::with_capacity(members.len());
            for doc in members {
                let Spec::Access(spec) = &doc.spec else {
                    continue;
                };
                let rule = Rule {
                    from: resolve(&spec.from, sets, doc, "spec.from")?,
                    to: resolve(&spec.to, sets, doc, "spec.to")?,
                };
                let acl = AclRule {
                    action: spec.action,
                    matched_by: Text::named(&doc.key.reference()),
                    privileged: doc.key.kind == Kind::PrivilegedAccessPolicy,
                };
                entries.push((spec.action, rule, acl, spec.dry_run));
            }
            // (bucket order, rule): deny before allow; docs come in name order.
            let make = |with_dry_run: bool| {
                let mut chosen: Vec<&Entry> =
                    entries.iter().filter(|e| with_dry_run || !e.3).collect();
                // Stable: name order is kept within each action.
                chosen.sort_by_key(|e| e.0 == Action::Allow);
                let rules = chosen.iter().map(|e| e.1.clone()).collect();
                let acl = chosen.iter().map(|e| e.2.clone()).collect();
                Arc::new(AclIndex {
                    index: MatchIndex::build_for(rules, symbols, Some((dests, egress))),
                    rules: acl,
                    made_for: made_for.clone(),
                })
            };
            let enforced = enforced.unwrap_or_else(|| make(false));
            let shadow = any_dry_run.then(|| shadow.unwrap_or_else(|| make(true)));
            Ok((enforced, shadow))
        };
        // Regular ones first: their kind comes first in document order.
        let mut by_namespace = Vec::with_capacity(regular.len());
        let mut shadow_by_namespace = Vec::new();
        for (namespace, members) in &regular {
            let (enforced, shadow) = group(Some(namespace), members, of(namespace))?;
            let namespace = SmolStr::new(namespace);
            if let Some(shadow) = shadow {
                shadow_by_namespace.push((namespace.clone(), shadow));
            }
            by_namespace.push((namespace, enforced));
        }
        let (privileged, privileged_shadow) = group(None, &privileged, all)?;
        Ok(AclTables {
            enforced: Tables {
                privileged,
                by_namespace: by_namespace.into_iter().collect(),
            },
            // Only when some policy is dry-run (then every group has a shadow index).
            shadow: privileged_shadow
                .filter(|_| any_dry_run)
                .map(|privileged| Tables {
                    privileged,
                    by_namespace: shadow_by_namespace.into_iter().collect(),
                }),
            default_deny: DEFAULT_TEXTS.0.clone(),
            default_reason: DEFAULT_TEXTS.1.clone(),
        })
    }

    /// Decides one source against one destination in `namespace` (regular policies'
    /// scope), reporting a dry-run deny to the context.
    pub fn check<'a>(
        &'a self,
        notes: &mut Notes,
        namespace: &str,
        src: &Attrs<'_>,
        dst: &Dst<'_>,
    ) -> AccessDecision<'a> {
        let rule = self.enforced.evaluate(namespace, src, dst);
        let decision = AccessDecision { rule };
        if let Some(shadow) = &self.shadow {
            let would = AccessDecision {
                rule: shadow.evaluate(namespace, src, dst),
            };
            if decision.allowed() && !would.allowed() {
                let policy = would.rule.map_or(&self.default_deny, |r| &r.matched_by);
                notes.would_deny(policy);
            }
        }
        if let Some(r) = rule {
            notes.matched(&r.matched_by);
        }
        decision
    }

    pub fn default_deny(&self) -> &Text {
        &self.default_deny
    }

    /// Whether both hold the very same enforced index of a namespace (`None`: the
    /// privileged tier).
    #[cfg(test)]
    pub(crate) fn shares_with(&self, other: &AclTables, namespace: Option<&str>) -> bool {
        let of = |t: &'_ AclTables| match namespace {
            None => Some(Arc::as_ptr(&t.enforced.privileged)),
            Some(n) => t.enforced.by_namespace.get(n).map(Arc::as_ptr),
        };
        of(self).is_some() && of(self) == of(other)
    }
}

pub struct Acl;

impl Acl {
    /// A denial (or `None` when allowed) for one decision.
    fn denial<'a>(acl: &'a AclTables, d: AccessDecision<'a>) -> Option<Verdict<'a>> {
        match d.rule {
            Some(r) if r.action == Action::Allow => None,
            Some(r) => Some(Verdict::Deny {
                reason: r.reason(),
                matched_by: Some((&r.matched_by).into()),
            }),
            None => Some(Verdict::Deny {
                reason: (&acl.default_reason).into(),
                matched_by: Some((&acl.default_deny).into()),
            }),
        }
    }
}

impl Agent for Acl {
    /// A closed connection has nothing to allow or deny.
    fn idle(&self, _: &Snapshot, event: EventType, _: Option<Direction>) -> bool {
        event == EventType::ConnectionClosed
    }

    fn observes(&self) -> bool {
        false
    }

    fn decide<'s>(&self, cx: &mut Context<'s>) -> Result<Verdict<'s>, AgentError> {
        let snapshot = cx.snapshot;
        let acl = &snapshot.acl;
        match cx.scope {
            Scope::Ingress { export, namespace } => {
                let dst = cx.dst_export(export);
                let d = acl.check(&mut cx.notes, namespace, &cx.src, &dst);
                if let Some(deny) = Self::denial(acl, d) {
                    return Ok(deny);
                }
                if let Some(r) = d.rule {
                    cx.allow_because(None, &r.matched_by, r.reason());
                }
                Ok(Verdict::Allow { matched_by: None })
            }
            Scope::Egress { import } => {
                let namespace: &str = &import.namespace;
                if let Some(target) = cx.target {
                    let dst = cx.dst_source(&target);
                    let d = acl.check(&mut cx.notes, namespace, &cx.src, &dst);
                    if let Some(deny) = Self::denial(acl, d) {
                        return Ok(deny);
                    }
                    if let Some(r) = d.rule {
                        cx.allow_because(Some(target.name()), &r.matched_by, r.reason());
                    }
                    let fallbacks = cx.fallbacks.clone();
                    for f in fallbacks {
                        let dst = cx.dst_source(&f);
                        if !acl.check(&mut cx.notes, namespace, &cx.src, &dst).allowed() {
                            cx.remove_peer(f.name());
                        }
                    }
                    return Ok(Verdict::Continue);
                }
                let mut first_denial = None;
                let candidates = cx.candidates.clone();
                for c in candidates {
                    let dst = cx.dst_source(&c);
                    let d = acl.check(&mut cx.notes, namespace, &cx.src, &dst);
                    match d.rule.filter(|_| d.allowed()) {
                        Some(r) => cx.allow_because(Some(c.name()), &r.matched_by, r.reason()),
                        None => {
                            first_denial.get_or_insert((c.name().clone(), d));
                            cx.remove_peer(c.name());
                        }
                    }
                }
                if !cx.candidates.is_empty() {
                    return Ok(Verdict::Continue);
                }
                let import_ref = import.key.reference();
                Ok(match first_denial {
                    Some((peer, d)) => Verdict::Deny {
                        reason: format!(
                            "no source of Import {import_ref} is allowed (peer {peer}: {})",
                            d.rule.map_or((&acl.default_reason).into(), AclRule::reason)
                        )
                        .into(),
                        matched_by: Some(
                            d.rule.map_or(&acl.default_deny, |r| &r.matched_by).into(),
                        ),
                    },
                    None => Verdict::Deny {
                        reason: format!("Import {import_ref} has no source peer in the inventory")
                            .into(),
                        matched_by: Some((&acl.default_deny).into()),
                    },
                })
            }
            Scope::Expose { export, namespace } => {
                let dst = cx.dst_export(export);
                let mut first = None;
                for peer in &snapshot.peer_order {
                    if peer.name == snapshot.local_peer {
                        continue;
                    }
                    let src = Attrs::over(&peer.attrs);
                    let d = acl.check(&mut cx.notes, namespace, &src, &dst);
                    if d.allowed() {
                        first.get_or_insert(d);
                        cx.target_peers.push(peer.name.clone());
                    }
                }
                Ok(match first.and_then(|d| d.rule) {
                    Some(r) => {
                        cx.allow_because(None, &r.matched_by, r.reason());
                        Verdict::Allow { matched_by: None }
                    }
                    None => Verdict::Deny {
                        reason: format!(
                            "no peer may connect to {} (default deny)",
                            export.reference
                        )
                        .into(),
                        matched_by: Some((&acl.default_deny).into()),
                    },
                })
            }
            Scope::List { peer } => {
                let mut services = Vec::new();
                for export in snapshot.exports.iter() {
                    let dst = cx.dst_export(export);
                    let d = acl.check(&mut cx.notes, export.namespace(), &cx.src, &dst);
                    if d.allowed() {
                        services.push((export.reference.to_string(), d));
                    }
                }
                services.sort_by(|a, b| a.0.cmp(&b.0));
                let first = services.first().and_then(|(_, d)| d.rule);
                cx.services = services.into_iter().map(|(s, _)| s).collect();
                Ok(match first {
                    Some(r) => {
                        cx.allow_because(None, &r.matched_by, r.reason());
                        Verdict::Allow { matched_by: None }
                    }
                    None => Verdict::Deny {
                        reason: format!("peer {peer} may see no service (default deny)").into(),
                        matched_by: Some((&acl.default_deny).into()),
                    },
                })
            }
            Scope::Closed => Ok(Verdict::Continue),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_rules_sentence_names_its_kind_and_policy_short_or_long() {
        let long = format!("ns/{}", "n".repeat(2 * crate::text::INLINE));
        for name in [
            "default/web",
            "/guard",
            long.as_str(),
            long.trim_start_matches("ns"),
        ] {
            for (action, verb) in [(Action::Allow, "allowed"), (Action::Deny, "denied")] {
                let privileged = name.starts_with('/');
                let rule = AclRule {
                    action,
                    matched_by: Text::named(name),
                    privileged,
                };
                let kind = match privileged {
                    true => "PrivilegedAccessPolicy",
                    false => "AccessPolicy",
                };
                let want = format!("{verb} by {kind} {}", name.trim_start_matches('/'));
                assert_eq!(rule.reason().into_text().as_str(), want);
                assert_eq!(rule.reason().to_string(), want);
                assert_eq!(rule.reason().into_text().origin(), None);
            }
        }
    }

    #[test]
    fn the_default_deny_texts_outlive_applies() {
        let engine = crate::Engine::new(crate::EngineConfig::default());
        let apply = |name: &str| {
            let docs = crate::parse_documents(&format!(
                "{{kind: Peer, metadata: {{name: p}}}}\n---\n{{kind: Export, metadata: {{name: {name}, namespace: default}}}}"
            ))
            .unwrap();
            engine.apply(docs).unwrap();
        };
        let event = crate::Event::from_json(
            r#"{"type":"NewConnection","direction":"ingress","src_peer":"p","dst_service":"db"}"#,
        )
        .unwrap();
        let deny = || {
            let r = engine
                .decide(&event, crate::Time(1), Default::default())
                .unwrap();
            assert_eq!(r.decision, crate::Decision::Deny);
            r.matched_by.unwrap()
        };
        apply("db");
        let first = deny();
        apply("web");
        apply("db");
        // The same text, of the same origin, after two more snapshots.
        assert!(first.origin().is_some());
        assert_eq!(first.origin(), deny().origin());
        assert_eq!(&*first, DEFAULT_DENY);
    }

    #[test]
    fn namespaces_find_their_own_tables_and_the_last_of_a_name_wins() {
        let table = |n: usize| {
            Arc::new(AclIndex {
                rules: (0..n)
                    .map(|i| AclRule {
                        action: Action::Allow,
                        matched_by: format!("r{i}").into(),
                        privileged: false,
                    })
                    .collect(),
                ..AclIndex::default()
            })
        };
        let names = [
            "default",
            "ns-1",
            "a-much-longer-namespace-name-than-32-bytes",
            "",
            "ns-2",
        ];
        let by: ByNamespace = (names.iter().enumerate())
            .map(|(i, n)| (SmolStr::new(n), table(i + 1)))
            .chain([(SmolStr::new("ns-2"), table(9))])
            .collect();
        for (i, n) in names.iter().enumerate().take(4) {
            assert_eq!(by.get(n).unwrap().rules.len(), i + 1, "{n}");
        }
        assert_eq!(by.get("ns-2").unwrap().rules.len(), 9);
        for absent in ["ns-3", "default ", "Default", "ns-", "ns-22"] {
            assert!(by.get(absent).is_none(), "{absent}");
        }
        assert!(by.few.is_empty(), "five namespaces are found by hash");
        // A few namespaces, compared in turn: the same answers.
        let few: ByNamespace = (names.iter().enumerate().skip(2))
            .map(|(i, n)| (SmolStr::new(n), table(i + 1)))
            .chain([(SmolStr::new("ns-2"), table(9))])
            .collect();
        assert_eq!(few.few.len(), 3);
        assert_eq!(few.get(names[2]).unwrap().rules.len(), 3);
        assert_eq!(few.get("").unwrap().rules.len(), 4);
        assert_eq!(few.get("ns-2").unwrap().rules.len(), 9);
        for absent in ["default", "ns-1", "ns-3", "ns-", "ns-22", " "] {
            assert!(few.get(absent).is_none(), "{absent}");
        }
    }
}
