//! The mirror table and the ordered pull sources for a reference. Pure: no I/O.
//!
//! Built from the cluster's ImageDigestMirrorSets, ImageTagMirrorSets, ImageContentSourcePolicies
//! and `image.config.openshift.io/cluster` `registrySources`, it answers what the node's
//! container runtime would answer: for this reference, which physical references to try, in
//! which order, and which of them must not be contacted. The node gets there in three steps
//! (MCO validates and renders registries.conf with openshift/runtime-utils, then
//! containers/image picks an entry and rewrites); this module replays their effect directly:
//!
//! * rules are grouped by their exact source string; IDMS and ICSP rules form the table for
//!   digest references, ITMS rules the table for tag references;
//! * a rule with no mirror other than its source is dropped, policy and all;
//! * each group's mirror lists are merged as the node merges them ([`merge`]);
//! * a reference is matched against its table, most specific source first ([`scope`]);
//! * its pull sources are the group's mirrors, rewritten, then the reference itself; each is
//!   checked for blocking and insecurity on its own, as the node checks each attempt.
//!
//! Where the node errors or is shadowed by its quirks this module deliberately differs; each
//! difference is marked "(differs from the node)" where it is made.
//!
//! No I/O happens here: the caller reads the objects, this module only computes.

mod merge;
mod rules;
pub(crate) mod scope;
mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::reference::Reference;

pub use rules::{MirrorKind, MirrorObject, MirrorRule, RegistrySources, SourcePolicy};
pub(crate) use source::{
    Insecure, InvalidRewrite, MirrorError, PullSource, RewriteError, SourceOrigin, not_contacted,
};

/// One group's merged mirror.
#[derive(Debug, Clone)]
struct Mirror {
    location: String,
    objects: Vec<(MirrorKind, String)>,
}

/// All the rules of one table with the same exact source string, merged.
#[derive(Debug, Clone)]
struct Group {
    source: String,
    mirrors: Vec<Mirror>,
}

/// A source the node would write a registries.conf entry for, and why it is blocked.
#[derive(Debug, Clone)]
struct Entry {
    source: String,
    blocked: Option<String>,
}

/// The resolved mirror configuration of a cluster.
#[derive(Debug, Clone, Default)]
pub(crate) struct MirrorTable {
    /// IDMS + ICSP groups, most specific source first.
    digest: Vec<Group>,
    /// ITMS groups, most specific source first.
    tag: Vec<Group>,
    /// Every group source of either table (plus sources blocked only by a policy conflict),
    /// most specific first. Blocking is decided per physical reference against these, across
    /// both tables, because the node writes one registries.conf entry per source and checks
    /// every attempt against the entry it falls under: that is why an IDMS NeverContactSource
    /// also blocks tag pulls of the source (vector 21) and why a mirror pointing into a blocked
    /// source is not contacted either.
    entries: Vec<Entry>,
    scopes: RegistrySources,
    /// `--insecure-registry` entries: `host` (any port of it) or `host:port`.
    insecure_flags: Vec<String>,
    warnings: Vec<String>,
}

type ObjectRef<'a> = (MirrorKind, &'a str);

impl MirrorTable {
    /// Builds the table. Never fails: what the node's MCO would refuse to render is resolved on
    /// the safe side and reported in [`MirrorTable::warnings`].
    pub(crate) fn new(objects: &[MirrorObject], registry_sources: &RegistrySources) -> MirrorTable {
        let mut warnings = Warnings::default();

        // Policies are compared per exact source string across all kinds, as MCO does with one
        // shared map; ICSP and unset both count as AllowContactingSource.
        let mut never: BTreeMap<&str, BTreeSet<ObjectRef>> = BTreeMap::new();
        let mut allow: BTreeMap<&str, BTreeSet<ObjectRef>> = BTreeMap::new();
        // Rules with at least one real mirror, per table and exact source.
        let mut digest_sets: BTreeMap<&str, Vec<(ObjectRef, &MirrorRule)>> = BTreeMap::new();
        let mut tag_sets: BTreeMap<&str, Vec<(ObjectRef, &MirrorRule)>> = BTreeMap::new();
        // NeverContactSource among those kept rules, per exact source, both tables together.
        let mut never_kept: BTreeMap<&str, BTreeSet<ObjectRef>> = BTreeMap::new();

        for object in objects {
            let who: ObjectRef = (object.kind, &object.name);
            for rule in &object.rules {
                let source = rule.source.as_str();
                if let Some(why) = scope::unmatchable_source(source) {
                    warnings.push(format!(
                        "{}: source {source:?} never matches a reference: {why}",
                        ObjectName(who)
                    ));
                }
                let never_contact = object.kind != MirrorKind::ImageContentSourcePolicy
                    && rule.policy == Some(SourcePolicy::NeverContactSource);
                let policies = if never_contact {
                    &mut never
                } else {
                    &mut allow
                };
                policies.entry(source).or_default().insert(who);

                let has_real_mirror = rule.mirrors.iter().any(|m| *m != rule.source);
                if !has_real_mirror {
                    // The node drops such a rule before merging, so its policy never applies
                    // (vectors 29, 30). MCO would even refuse to render vector 29.
                    if never_contact {
                        warnings.push(format!(
                            "{}: NeverContactSource for {source} is ignored because the rule has \
                             no mirror other than the source (as on the node)",
                            ObjectName(who)
                        ));
                    }
                    continue;
                }
                if never_contact && rule.mirrors.contains(&rule.source) {
                    warnings.push(format!(
                        "{}: NeverContactSource for {source} lists the source among its mirrors; \
                         the node's MCO refuses to render this, here the source stays blocked",
                        ObjectName(who)
                    ));
                }
                if never_contact {
                    never_kept.entry(source).or_default().insert(who);
                }
                let sets = if object.kind.is_digest() {
                    &mut digest_sets
                } else {
                    &mut tag_sets
                };
                sets.entry(source).or_default().push((who, rule));
            }
        }

        // (differs from the node) MCO refuses to render conflicting policies and leaves the
        // node as it was; we cannot know what it was, so the source is never contacted.
        let mut conflicts = BTreeSet::new();
        for (source, never_objects) in &never {
            if let Some(allow_objects) = allow.get(source) {
                conflicts.insert(*source);
                warnings.push(format!(
                    "conflicting mirrorSourcePolicy for {source}: NeverContactSource in {}, \
                     AllowContactingSource (or unset, or an ImageContentSourcePolicy) in {}; the \
                     node's MCO refuses to render this, here {source} is never contacted",
                    ObjectSet(never_objects),
                    ObjectSet(allow_objects),
                ));
            }
        }

        let all_sources: BTreeSet<&str> = digest_sets
            .keys()
            .chain(tag_sets.keys())
            .chain(conflicts.iter())
            .copied()
            .collect();
        let mut entries: Vec<Entry> = all_sources
            .into_iter()
            .map(|source| {
                let blocked = if let Some(objects) = never_kept.get(source) {
                    Some(format!("NeverContactSource in {}", ObjectSet(objects)))
                } else if conflicts.contains(source) {
                    Some(format!(
                        "conflicting mirrorSourcePolicy for {source}, treated as NeverContactSource"
                    ))
                } else {
                    None
                };
                Entry {
                    source: source.to_string(),
                    blocked,
                }
            })
            .collect();
        sort_most_specific_first(&mut entries, |e| &e.source);

        MirrorTable {
            digest: build_groups(&digest_sets),
            tag: build_groups(&tag_sets),
            entries,
            scopes: registry_sources.clone(),
            insecure_flags: Vec::new(),
            warnings: warnings.list,
        }
    }

    /// Adds `--insecure-registry` entries: `host` makes every port of that host insecure,
    /// `host:port` that port only. Unlike the cluster's scopes they name whole registries.
    pub(crate) fn with_insecure_registries(mut self, entries: &[String]) -> MirrorTable {
        self.insecure_flags = entries.to_vec();
        self
    }

    /// What the table resolved on the safe side or will never use, for the operator to fix.
    pub(crate) fn warnings(&self) -> &[String] {
        &self.warnings
    }

    #[cfg(test)]
    /// No mirrors and no scopes: every reference is its own only source.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.scopes.is_empty() && self.insecure_flags.is_empty()
    }

    /// The ordered pull sources for `reference`: the matched group's mirrors, rewritten, then
    /// the reference itself. Blocked sources are listed, marked, never dropped.
    ///
    /// A digest reference (also one with a tag as well) uses the IDMS + ICSP table, any other
    /// the ITMS table. Within the table the longest source wins (bytes, `*.` counted; a tie
    /// goes to the byte-smaller source, as containers/image's sorted scan does).
    ///
    /// (differs from the node) The table is chosen before matching: on the node a more
    /// specific source of the other table shadows this table's match (vector 37).
    pub(crate) fn pull_sources(
        &self,
        reference: &Reference,
    ) -> Result<Vec<PullSource>, MirrorError> {
        let table = if reference.digest.is_some() {
            &self.digest
        } else {
            &self.tag
        };
        let matched = table
            .iter()
            .find_map(|group| scope::covered_len(&group.source, reference).map(|len| (group, len)));

        let mut sources = Vec::new();
        if let Some((group, len)) = matched {
            let full = reference.to_string();
            // The matched part is a prefix of the name, so what follows it (the rest of the
            // path, the tag, the digest) carries over onto the mirror unchanged.
            let rest = &full[len..];
            for mirror in &group.mirrors {
                let rewritten = format!("{}{rest}", mirror.location);
                let physical = parse_canonical(&rewritten).map_err(|cause| {
                    // build_groups gives every mirror at least one object.
                    let (kind, name) = mirror.objects[0].clone();
                    MirrorError::InvalidRewrite(Box::new(InvalidRewrite {
                        kind,
                        name,
                        rule_source: group.source.clone(),
                        mirror: mirror.location.clone(),
                        reference: full.clone(),
                        rewritten: rewritten.clone(),
                        cause,
                    }))
                })?;
                sources.push(self.pull_source(
                    reference,
                    physical,
                    SourceOrigin::Mirror {
                        source: group.source.clone(),
                        objects: mirror.objects.clone(),
                    },
                ));
            }
        }
        sources.push(self.pull_source(
            reference,
            reference.clone(),
            SourceOrigin::Source {
                matched: matched.map(|(group, _)| group.source.clone()),
            },
        ));
        Ok(sources)
    }

    /// Where the node would treat `reference` otherwise than [`MirrorTable::pull_sources`] does,
    /// each with its vector, for `resolve` to say. Blocking is never among them: it is judged as on
    /// the node.
    pub(crate) fn departures(&self, reference: &Reference) -> Vec<String> {
        let table = if reference.digest.is_some() {
            &self.digest
        } else {
            &self.tag
        };
        let ours = table
            .iter()
            .find(|group| scope::covered_len(&group.source, reference).is_some());
        // The node's entry: the most specific source of either table under its own matching.
        let node = self.entries.iter().find(|entry| {
            scope::covered_len(&entry.source, reference).is_some()
                || scope::node_matches_on_another_port(&entry.source, reference)
        });
        let mut departures = Vec::new();
        if let Some(entry) = node
            && entry.blocked.is_none()
            && scope::covered_len(&entry.source, reference).is_none()
            && table
                .iter()
                .any(|group| group.source == entry.source && !group.mirrors.is_empty())
        {
            departures.push(format!(
                "the node matches the rule for {} on {} too (its ':' boundary) and fails this \
                 pull rewriting it onto that rule's mirrors (vectors 11, 13); here the rule does \
                 not apply across a port",
                entry.source, reference.registry
            ));
        }
        if let (Some(group), Some(entry)) = (ours, node)
            && entry.source != group.source
            && scope::covered_len(&entry.source, reference).is_some()
        {
            departures.push(format!(
                "the node picks the more specific rule for {}, which has no {} mirrors, and pulls \
                 from the source alone (vector 37); here the rule for {} applies",
                entry.source,
                if reference.digest.is_some() {
                    "digest"
                } else {
                    "tag"
                },
                group.source
            ));
        }
        if let Some(group) = ours
            && let Some(domain) = group.source.strip_prefix("*.")
            && !scope::node_wildcard_matches(domain, reference)
        {
            departures.push(format!(
                "the node's match for {} looks only at the first '.{domain}' in the name and \
                 misses this host, so it pulls from the source alone (vector 43); here the rule \
                 applies",
                group.source
            ));
        }
        departures
    }

    fn pull_source(
        &self,
        image: &Reference,
        reference: Reference,
        origin: SourceOrigin,
    ) -> PullSource {
        PullSource {
            blocked: self.blocked(&reference).or_else(|| self.not_allowed(image)),
            insecure: self.insecure(&reference),
            reference,
            origin,
        }
    }

    /// Why the physical `reference` may be reached insecurely: judged on its own location, as
    /// the node sets each attempt's TLS from the entry of the pull source itself (a mirror of an
    /// insecure source is not insecure because its source is; vector 36).
    fn insecure(&self, reference: &Reference) -> Option<Insecure> {
        if let Some(scope) = self
            .scopes
            .insecure
            .iter()
            .find(|scope| scope::covered_len(scope, reference).is_some())
        {
            return Some(Insecure::Scope(scope.clone()));
        }
        self.insecure_flags
            .iter()
            .find(|entry| scope::names_registry(entry, &reference.registry))
            .map(|entry| Insecure::Flag(entry.clone()))
    }

    /// Why the physical `reference` must not be contacted, judged on its own as the node
    /// judges every attempt: mirrors included (vector 39).
    fn blocked(&self, reference: &Reference) -> Option<String> {
        // The most specific entry decides, as on the node: a more specific source without
        // NeverContactSource un-blocks its part of a blocked parent. A blocked `host` or
        // `*.domain` source also covers that host on other ports: the node matches those through
        // its `:` boundary and then fails the pull (vectors 11, 13), so it never contacts them.
        // Across a port an entry only ever blocks: an unblocked `host` source makes the node fail
        // there too, so it cannot un-block a less specific blocked one.
        let entry = self.entries.iter().find(|entry| {
            scope::covered_len(&entry.source, reference).is_some()
                || (entry.blocked.is_some() && scope::covers_any_port(&entry.source, reference))
        });
        if let Some(entry) = entry
            && let Some(why) = &entry.blocked
        {
            if scope::covered_len(&entry.source, reference).is_none() {
                return Some(format!(
                    "{why} (its source {} covers every port of that host on the node)",
                    entry.source
                ));
            }
            return Some(why.clone());
        }
        if let Some(scope) = self
            .scopes
            .blocked
            .iter()
            .find(|scope| scope::covers_any_port(scope, reference))
        {
            return Some(format!("blockedRegistries scope {scope}"));
        }
        None
    }

    /// `allowedRegistries` is judged on the image's name as written, not on the mirror pulled from: the
    /// node enforces it through policy.json, which sees the original reference. So an allowed image may
    /// come from any mirror, and an image outside the list is refused from every source.
    fn not_allowed(&self, image: &Reference) -> Option<String> {
        let allowed = self.scopes.allowed.is_empty()
            || self
                .scopes
                .allowed
                .iter()
                .any(|scope| scope::covered_len(scope, image).is_some());
        (!allowed).then(|| format!("{} is not in allowedRegistries", image.name()))
    }
}

/// Merges each source's lists and records, for every resulting mirror, who listed it.
fn build_groups(sets: &BTreeMap<&str, Vec<(ObjectRef, &MirrorRule)>>) -> Vec<Group> {
    let mut groups: Vec<Group> = sets
        .iter()
        .map(|(source, rules)| {
            let lists: Vec<&[String]> = rules.iter().map(|(_, r)| r.mirrors.as_slice()).collect();
            let mirrors = merge::merge(source, &lists)
                .into_iter()
                .map(|location| {
                    let mut objects: BTreeSet<ObjectRef> = rules
                        .iter()
                        .filter(|(_, rule)| rule.mirrors.contains(&location))
                        .map(|(who, _)| *who)
                        .collect();
                    // Only the source can come out of the merge unlisted, put among the mirrors
                    // by a broken cycle (vector 18): the disagreeing rules together did that.
                    if objects.is_empty() {
                        objects = rules.iter().map(|(who, _)| *who).collect();
                    }
                    Mirror {
                        location,
                        objects: objects
                            .into_iter()
                            .map(|(kind, name)| (kind, name.to_string()))
                            .collect(),
                    }
                })
                .collect();
            Group {
                source: source.to_string(),
                mirrors,
            }
        })
        .collect();
    sort_most_specific_first(&mut groups, |g| &g.source);
    groups
}

/// Longest source first; equal lengths in byte order. containers/image scans prefix-sorted
/// entries and keeps the first strictly longer match, so of two equally long matches the
/// byte-smaller wins, and `*` sorts before letters: `*.example.com` beats `a.example.com`
/// (vector 14).
fn sort_most_specific_first<T>(items: &mut [T], source: impl Fn(&T) -> &str) {
    items.sort_by(|a, b| {
        let (a, b) = (source(a), source(b));
        b.len().cmp(&a.len()).then_with(|| a.cmp(b))
    });
}

/// Parses a rewritten reference and insists it reads back unchanged, as the node's `ParseNamed`
/// does: a rewrite that only parses by being normalised into another name (a Docker Hub
/// image, `index.docker.io`) would pull something the rule never named.
fn parse_canonical(s: &str) -> Result<Reference, RewriteError> {
    let parsed = Reference::parse(s).map_err(|e| RewriteError::Invalid(e.kind))?;
    if parsed.to_string() != s {
        return Err(RewriteError::NotCanonical(parsed.to_string()));
    }
    Ok(parsed)
}

/// Warnings in first-seen order, each once (several objects can repeat a rule).
#[derive(Default)]
struct Warnings {
    list: Vec<String>,
    seen: BTreeSet<String>,
}

impl Warnings {
    fn push(&mut self, warning: String) {
        if self.seen.insert(warning.clone()) {
            self.list.push(warning);
        }
    }
}

/// `Kind/name`.
struct ObjectName<'a>(ObjectRef<'a>);

impl fmt::Display for ObjectName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.0, self.0.1)
    }
}

/// `Kind/a, Kind/b`.
struct ObjectSet<'a, 'b>(&'b BTreeSet<ObjectRef<'a>>);

impl fmt::Display for ObjectSet<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, who) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", ObjectName(*who))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
