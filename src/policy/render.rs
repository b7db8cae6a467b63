//! Scopes → requirements, as the MCO renders the policies for one namespace (signature-policy
//! §2.2, §2.4), and the scope lookup containers/image does on the original reference (§3).
//!
//! Not rendered yet: `image.config` allowed/blocked registries (§2.3).

use std::collections::BTreeMap;
use std::fmt;

use super::requirement::{ConfigError, Requirement, logical};
use super::spec::ImagePolicySpec;
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
    scopes: BTreeMap<String, Vec<ScopedRequirement>>,
    pub dropped: Vec<DroppedScope>,
}

impl RenderedPolicy {
    /// Every ClusterImagePolicy, then the ImagePolicies of `namespace` (others are ignored).
    pub fn render(
        cluster: &[PolicyResource],
        namespace: &str,
        namespaced: &[PolicyResource],
    ) -> RenderedPolicy {
        let mut rendered = RenderedPolicy::default();
        let cluster_scopes: Vec<&str> = cluster
            .iter()
            .flat_map(|r| r.spec.scopes.iter().map(String::as_str))
            .collect();
        for resource in cluster {
            rendered.add(resource, resource.spec.scopes.iter());
        }
        for resource in namespaced {
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
        rendered
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
            &[],
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
        let latest = RenderedPolicy::render(&[cip("l", &["r.example.com/z:latest"])], "ns", &[]);
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
            ],
            "mine",
            &[
                ip("mine", "equal", &["q.io/r"]),
                ip(
                    "mine",
                    "inside",
                    &["q.io/r/sub", "h.example.com:5000/x", "own.io/x"],
                ),
                ip("other", "theirs", &["their.io"]),
            ],
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
}
