//! Scopes → requirements, as the MCO renders the policies for one namespace (signature-policy
//! §2.2, §2.4), and the scope lookup containers/image does on the original reference (§3).
//!
//! Of `image.config`'s allowed/blocked registries (§2.3) only what can change a verdict here:
//! the scopes the MCO refuses to render. Their `insecureAcceptAnything`/`reject` entries are not
//! kept: the mirror table already refuses to pull blocked or not-allowed images, and an
//! `insecureAcceptAnything` beside a `sigstoreSigned` (an ImagePolicy scope equal to an allowed
//! registry) changes nothing under AND.

use std::collections::BTreeMap;
use std::fmt;

use super::requirement::{ConfigError, Requirement, logical};
use super::spec::ImagePolicySpec;
use crate::plan::mirrors::RegistrySources;
use crate::reference::Reference;

/// The object a requirement comes from, for messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyObject {
    ClusterImagePolicy { name: String },
    ImagePolicy { namespace: String, name: String },
}

impl fmt::Display for PolicyObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyObject::ClusterImagePolicy { name } => write!(f, "ClusterImagePolicy {name}"),
            PolicyObject::ImagePolicy { namespace, name } => {
                write!(f, "ImagePolicy {namespace}/{name}")
            }
        }
    }
}

/// A policy object as read from the cluster.
#[derive(Debug, Clone)]
pub struct PolicyResource {
    pub object: PolicyObject,
    pub spec: ImagePolicySpec,
}

/// One requirement under a scope; a policy that cannot be built stays here as its error, so the
/// images under its scope are rejected, never skipped.
#[derive(Debug)]
pub struct ScopedRequirement {
    pub object: PolicyObject,
    pub requirement: Result<Requirement, ConfigError>,
}

/// An ImagePolicy scope the MCO ignores because a ClusterImagePolicy scope covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedScope {
    pub object: PolicyObject,
    pub scope: String,
    pub covered_by: String,
}

/// The policy for one namespace: every requirement by scope (all must pass).
#[derive(Debug, Default)]
pub struct RenderedPolicy {
    namespace: String,
    scopes: BTreeMap<String, Vec<ScopedRequirement>>,
    pub dropped: Vec<DroppedScope>,
}

impl RenderedPolicy {
    /// Every ClusterImagePolicy, then the ImagePolicies of `namespace` (others are ignored),
    /// checked against `sources` as the MCO checks them.
    pub fn render(
        policies: &[PolicyResource],
        namespace: &str,
        sources: &RegistrySources,
    ) -> RenderedPolicy {
        let is_cluster_wide =
            |r: &&PolicyResource| matches!(r.object, PolicyObject::ClusterImagePolicy { .. });
        let mut rendered = RenderedPolicy {
            namespace: namespace.to_string(),
            ..RenderedPolicy::default()
        };
        let cluster_scopes: Vec<&str> = policies
            .iter()
            .filter(is_cluster_wide)
            .flat_map(|r| r.spec.scopes.iter().map(String::as_str))
            .collect();
        for resource in policies.iter().filter(is_cluster_wide) {
            rendered.add(resource, resource.spec.scopes.iter());
        }
        for resource in policies {
            let in_namespace = matches!(
                &resource.object,
                PolicyObject::ImagePolicy { namespace: ns, .. } if ns == namespace
            );
            if !in_namespace {
                continue;
            }
            let mut kept = Vec::new();
            for scope in &resource.spec.scopes {
                match cluster_scopes.iter().find(|c| nested_in(scope, c)) {
                    Some(covering) => rendered.dropped.push(DroppedScope {
                        object: resource.object.clone(),
                        scope: scope.clone(),
                        covered_by: covering.to_string(),
                    }),
                    None => kept.push(scope),
                }
            }
            rendered.add(resource, kept.into_iter());
        }
        rendered.refuse_unrenderable(sources);
        rendered
    }

    /// Where the MCO would refuse to render (a scope outside every allowedRegistries entry or
    /// inside a blockedRegistries one), the node keeps a policy we cannot know: every scope at
    /// or under such a scope gets a requirement that always fails, naming the objects.
    fn refuse_unrenderable(&mut self, sources: &RegistrySources) {
        let refused: BTreeMap<String, (PolicyObject, ConfigError)> = self
            .scopes
            .iter()
            .filter_map(|(scope, requirements)| {
                let reason = refusal(scope, sources)?;
                let objects: Vec<String> =
                    requirements.iter().map(|r| r.object.to_string()).collect();
                let error = ConfigError::RenderRefused {
                    scope: scope.clone(),
                    objects: objects.join(", "),
                    reason,
                };
                Some((scope.clone(), (requirements[0].object.clone(), error)))
            })
            .collect();
        for (scope, requirements) in &mut self.scopes {
            let cause = refused.get(scope).or_else(|| {
                refused
                    .iter()
                    .find(|(r, _)| nested_in(scope, r))
                    .map(|(_, c)| c)
            });
            if let Some((object, error)) = cause {
                requirements.push(ScopedRequirement {
                    object: object.clone(),
                    requirement: Err(error.clone()),
                });
            }
        }
    }

    fn add<'a>(&mut self, resource: &PolicyResource, scopes: impl Iterator<Item = &'a String>) {
        for scope in scopes {
            self.scopes
                .entry(scope.clone())
                .or_default()
                .push(ScopedRequirement {
                    object: resource.object.clone(),
                    requirement: Requirement::from_spec(&resource.spec.policy),
                });
        }
    }

    /// The namespace whose ImagePolicies this policy holds (the pods' that CRI-O checks by it).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The first scope that names `image` (exact identity, repository, each parent namespace,
    /// host[:port], `*.` wildcards of the port-less host) and its requirements; `None` means
    /// the default, which accepts anything.
    pub fn lookup(&self, image: &Reference) -> Option<(&str, &[ScopedRequirement])> {
        candidate_scopes(image).into_iter().find_map(|candidate| {
            self.scopes
                .get_key_value(&candidate)
                .map(|(scope, reqs)| (scope.as_str(), reqs.as_slice()))
        })
    }
}

/// containers/image's `PolicyConfigurationNamespaces`, preceded by the identity itself.
fn candidate_scopes(image: &Reference) -> Vec<String> {
    let logical = logical(image);
    let mut out = vec![logical.to_string()];
    let mut name = logical.name();
    loop {
        out.push(name.clone());
        match name.rfind('/') {
            Some(slash) => name.truncate(slash),
            None => break,
        }
    }
    let host = host_without_port(&logical.registry);
    let mut rest = host;
    while let Some(dot) = rest.find('.') {
        rest = &rest[dot + 1..];
        out.push(format!("*.{rest}"));
    }
    out
}

fn host_without_port(registry: &str) -> &str {
    match registry.rfind(':') {
        Some(colon) if !registry[colon..].contains(']') => &registry[..colon],
        _ => registry,
    }
}

/// Why the MCO refuses to render a policy with `scope` (MCO
/// `validateImagePolicyWithAllowedBlockedRegistries`), naming the registrySources entry.
fn refusal(scope: &str, sources: &RegistrySources) -> Option<String> {
    if let Some(blocked) = sources.blocked.iter().find(|b| nested_in(scope, b)) {
        return Some(format!("nested in blockedRegistries entry {blocked}"));
    }
    let allowed = sources.allowed.is_empty() || sources.allowed.iter().any(|a| nested_in(scope, a));
    (!allowed).then(|| {
        format!(
            "not nested in any allowedRegistries entry ({})",
            sources.allowed.join(", ")
        )
    })
}

/// runtime-utils' `ScopeIsNestedInsideScope`: equal, a `/`-prefix, or under a `*.domain`.
fn nested_in(scope: &str, outer: &str) -> bool {
    if scope == outer {
        return true;
    }
    if let Some(domain) = outer.strip_prefix("*.") {
        let host = scope.split('/').next().unwrap_or(scope);
        let host = host.strip_prefix("*.").unwrap_or(host);
        return host_without_port(host).ends_with(&format!(".{domain}"));
    }
    scope
        .strip_prefix(outer)
        .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::spec::ImagePolicySpec;

    fn resource(object: PolicyObject, scopes: &[&str], policy_type: &str) -> PolicyResource {
        let spec: ImagePolicySpec = serde_json::from_value(serde_json::json!({
            "scopes": scopes,
            "policy": {"rootOfTrust": {"policyType": policy_type}},
        }))
        .unwrap();
        PolicyResource { object, spec }
    }

    fn cip(name: &str, scopes: &[&str]) -> PolicyResource {
        resource(
            PolicyObject::ClusterImagePolicy { name: name.into() },
            scopes,
            "X",
        )
    }

    fn ip(namespace: &str, name: &str, scopes: &[&str]) -> PolicyResource {
        let object = PolicyObject::ImagePolicy {
            namespace: namespace.into(),
            name: name.into(),
        };
        resource(object, scopes, "X")
    }

    fn found(policy: &RenderedPolicy, image: &str) -> Option<(String, Vec<String>)> {
        policy
            .lookup(&Reference::parse(image).unwrap())
            .map(|(scope, reqs)| {
                (
                    scope.to_string(),
                    reqs.iter().map(|r| r.object.to_string()).collect(),
                )
            })
    }

    /// signature-policy §3 scope lookup: exact → repository → namespaces → host → `*.` → default.
    #[test]
    fn lookup_order() {
        let policy = RenderedPolicy::render(
            &[
                cip("exact", &["q.io/a/b:1"]),
                cip("repo", &["q.io/a/b"]),
                cip("ns", &["q.io/a"]),
                cip("host", &["q.io:5000"]),
                cip("wild", &["*.io"]),
                cip("sub", &["*.x.example.com"]),
            ],
            "ns",
            &RegistrySources::default(),
        );
        let one = |image: &str| found(&policy, image).map(|(scope, _)| scope);
        assert_eq!(one("q.io/a/b:1").as_deref(), Some("q.io/a/b:1"));
        assert_eq!(one("q.io/a/b:2").as_deref(), Some("q.io/a/b"));
        assert_eq!(one("q.io/a/c/d").as_deref(), Some("q.io/a"));
        assert_eq!(one("q.io:5000/z").as_deref(), Some("q.io:5000"));
        assert_eq!(one("q.io/z").as_deref(), Some("*.io"));
        assert_eq!(
            one("a.b.x.example.com:443/z").as_deref(),
            Some("*.x.example.com")
        );
        assert_eq!(one("x.example.com/z"), None);
        // A bare name is `:latest`.
        let latest = RenderedPolicy::render(
            &[cip("l", &["r.example.com/z:latest"])],
            "ns",
            &RegistrySources::default(),
        );
        assert_eq!(
            found(&latest, "r.example.com/z").unwrap().0,
            "r.example.com/z:latest"
        );
    }

    /// signature-policy §2.2 (same-scope CIPs AND) and §2.4 (IP scopes equal to or inside a CIP
    /// scope dropped; other namespaces' IPs not applied).
    #[test]
    fn rendering_like_the_mco() {
        let policy = RenderedPolicy::render(
            &[
                cip("a", &["q.io/r"]),
                cip("b", &["q.io/r", "*.example.com"]),
                ip("mine", "equal", &["q.io/r"]),
                ip(
                    "mine",
                    "inside",
                    &["q.io/r/sub", "h.example.com:5000/x", "own.io/x"],
                ),
                ip("other", "theirs", &["their.io"]),
            ],
            "mine",
            &RegistrySources::default(),
        );
        assert_eq!(
            found(&policy, "q.io/r:1").unwrap().1,
            ["ClusterImagePolicy a", "ClusterImagePolicy b"]
        );
        assert_eq!(found(&policy, "q.io/r/sub:1").unwrap().0, "q.io/r");
        assert_eq!(
            found(&policy, "own.io/x:1").unwrap().1,
            ["ImagePolicy mine/inside"]
        );
        assert_eq!(found(&policy, "their.io/x:1"), None);
        let dropped: Vec<_> = policy.dropped.iter().map(|d| d.scope.as_str()).collect();
        assert_eq!(dropped, ["q.io/r", "q.io/r/sub", "h.example.com:5000/x"]);
    }

    fn sources(allowed: &[&str], blocked: &[&str]) -> RegistrySources {
        RegistrySources {
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            blocked: blocked.iter().map(|s| s.to_string()).collect(),
            insecure: Vec::new(),
        }
    }

    /// The scope found for `image`, and per requirement its object and, when the MCO refuses
    /// to render, that error's text.
    fn refusals(policy: &RenderedPolicy, image: &str) -> (String, Vec<(String, Option<String>)>) {
        let (scope, requirements) = policy.lookup(&Reference::parse(image).unwrap()).unwrap();
        let requirements = requirements
            .iter()
            .map(|r| {
                let refused = match &r.requirement {
                    Err(error @ ConfigError::RenderRefused { .. }) => Some(error.to_string()),
                    _ => None,
                };
                (r.object.to_string(), refused)
            })
            .collect();
        (scope.to_string(), requirements)
    }

    const STRICTER: &str = "stricter than the node: the node keeps its previous policy, which \
                            we cannot know";

    /// signature-policy §2.3: a scope not nested in any allowedRegistries entry makes the MCO
    /// refuse to render; every scope at or under it fails, naming the objects and the entries.
    /// A scope nested in an allowed entry (`/`-prefix or `*.` suffix) renders.
    #[test]
    fn scope_outside_allowed_registries_is_refused() {
        let policy = RenderedPolicy::render(
            &[
                cip("ok", &["quay.io/openshift", "a.example.com/x"]),
                cip("outside", &["docker.io"]),
                cip("inner", &["docker.io/library/busybox"]),
                ip("ns", "mine", &["mirror.local:5000/ocp/sub", "other.io/x"]),
            ],
            "ns",
            &sources(
                &[
                    "quay.io",
                    "*.example.com",
                    "mirror.local:5000/ocp",
                    "docker.io/library",
                ],
                &[],
            ),
        );
        let allowed_list = "quay.io, *.example.com, mirror.local:5000/ocp, docker.io/library";
        for image in ["quay.io/openshift/x:1", "a.example.com/x/y:1"] {
            assert_eq!(
                refusals(&policy, image).1,
                [("ClusterImagePolicy ok".to_string(), None)]
            );
        }
        assert_eq!(
            refusals(&policy, "mirror.local:5000/ocp/sub/y:1").1,
            [("ImagePolicy ns/mine".to_string(), None)]
        );
        let (scope, found) = refusals(&policy, "other.io/x:1");
        assert_eq!(scope, "other.io/x");
        assert_eq!(
            found[1],
            (
                "ImagePolicy ns/mine".to_string(),
                Some(format!(
                    "the MCO refuses to render scope other.io/x of ImagePolicy ns/mine: it is not \
                     nested in any allowedRegistries entry ({allowed_list}); {STRICTER}"
                ))
            )
        );
        // docker.io/library/busybox is allowed itself, but under docker.io, which is not: the
        // node keeps its old policy for both.
        let (scope, found) = refusals(&policy, "docker.io/library/busybox:1");
        assert_eq!(scope, "docker.io/library/busybox");
        assert_eq!(
            found[1],
            (
                "ClusterImagePolicy outside".to_string(),
                Some(format!(
                    "the MCO refuses to render scope docker.io of ClusterImagePolicy outside: it \
                     is not nested in any allowedRegistries entry ({allowed_list}); {STRICTER}"
                ))
            )
        );
        assert!(refusals(&policy, "docker.io/other:1").1[1].1.is_some());
    }

    /// signature-policy §2.3: a scope nested in a blockedRegistries entry (`/`-prefix or `*.`
    /// suffix) is refused; one that only contains a blocked entry renders.
    #[test]
    fn scope_inside_blocked_registries_is_refused() {
        let policy = RenderedPolicy::render(
            &[
                cip("wide", &["bad.io"]),
                cip("narrow", &["bad.io/private/x"]),
                ip("ns", "mine", &["a.evil.com/y"]),
            ],
            "ns",
            &sources(&[], &["bad.io/private", "*.evil.com"]),
        );
        assert_eq!(
            refusals(&policy, "bad.io/other:1").1,
            [("ClusterImagePolicy wide".to_string(), None)]
        );
        assert_eq!(
            refusals(&policy, "bad.io/private/x:1").1[1].1.as_deref(),
            Some(
                format!(
                    "the MCO refuses to render scope bad.io/private/x of ClusterImagePolicy \
                     narrow: it is nested in blockedRegistries entry bad.io/private; {STRICTER}"
                )
                .as_str()
            )
        );
        assert_eq!(
            refusals(&policy, "a.evil.com/y/z:1").1[1].1.as_deref(),
            Some(
                format!(
                    "the MCO refuses to render scope a.evil.com/y of ImagePolicy ns/mine: it is \
                     nested in blockedRegistries entry *.evil.com; {STRICTER}"
                )
                .as_str()
            )
        );
    }

    /// signature-policy §2.3/§2.4: an allowed registry that is also a ClusterImagePolicy scope
    /// keeps that requirement (no insecureAcceptAnything), and an ImagePolicy scope equal to an
    /// allowed registry requires the signature (`[insecureAcceptAnything, sigstoreSigned]`).
    #[test]
    fn allowed_registry_that_is_a_scope_requires_the_signature() {
        let policy = RenderedPolicy::render(
            &[cip("q", &["quay.io"]), ip("ns", "own", &["own.io"])],
            "ns",
            &sources(&["quay.io", "own.io"], &[]),
        );
        assert_eq!(
            refusals(&policy, "quay.io/x:1"),
            (
                "quay.io".to_string(),
                vec![("ClusterImagePolicy q".to_string(), None)]
            )
        );
        assert_eq!(
            refusals(&policy, "own.io/x:1"),
            (
                "own.io".to_string(),
                vec![("ImagePolicy ns/own".to_string(), None)]
            )
        );
    }

    /// signature-policy §2.3 + issue 16 item 2: without ClusterImagePolicies or ImagePolicies,
    /// allowed/blocked registries add no requirement (the mirror table already refuses those
    /// pulls): no new or different error.
    #[test]
    fn registry_sources_alone_add_nothing() {
        let policy =
            RenderedPolicy::render(&[], "ns", &sources(&["quay.io"], &["bad.io", "*.evil.com"]));
        for image in [
            "quay.io/x:1",
            "bad.io/x:1",
            "a.evil.com/x:1",
            "other.io/x:1",
        ] {
            assert!(
                policy.lookup(&Reference::parse(image).unwrap()).is_none(),
                "{image}"
            );
        }
        assert!(policy.scopes.is_empty());
    }
}
