//! Which references a mirror-rule source or a `registrySources` scope covers.
//!
//! Both are written in the same forms (`host[:port]`, `host[:port]/path…`, `*.domain`) and are
//! matched against the *normalised* name of a reference (`docker.io/library/busybox`, host case
//! kept), because that is what the node matches on. Matching is by whole components: the host
//! and port must be identical and the pattern's path must be a component prefix of the
//! reference's path. This deliberately does not reproduce containers/image's `:` boundary,
//! under which `example.com` also covers `example.com:5000/…` and then fails the rewrite
//! (vector 11), nor the wildcard's first-occurrence search (vector 43).

use crate::reference::Reference;

/// How many leading bytes of `reference`'s name `pattern` covers, or `None` when it does not
/// cover it. The name is a prefix of the reference's full string form, so the count also says
/// where to cut that string when rewriting it onto a mirror.
pub(crate) fn covered_len(pattern: &str, reference: &Reference) -> Option<usize> {
    if let Some(domain) = pattern.strip_prefix("*.") {
        // A wildcard names hosts only. A registry with a port ends with the port, never with
        // the (port-free) domain, so `registry.redhat.io:8443` is not covered (the node would
        // match it, then fail to rewrite it; vector 13).
        let host = &reference.registry;
        return (is_wildcard_domain(domain) && is_subdomain(host, domain)).then_some(host.len());
    }
    if pattern.is_empty() {
        return None;
    }
    let name = reference.name();
    // The registry never contains '/', so requiring the pattern to end at the end of the name
    // or just before a '/' makes the host[:port] identical and the path a component prefix.
    let covers = name == pattern
        || (name.starts_with(pattern) && name.as_bytes().get(pattern.len()) == Some(&b'/'));
    covers.then_some(pattern.len())
}

/// Like [`covered_len`], but a scope naming a host without a port (or a `*.domain`) covers that
/// host on every port too. Only used for blocking (`blockedRegistries`, NeverContactSource): the
/// node blocks `bad.local:5000/…` under a `bad.local` scope (its `:` boundary), or fails the pull
/// there (vectors 11, 13), so for blocking the wider reading is the faithful one. Never used to
/// allow, mirror or trust: `allowedRegistries` `host` does not allow `host:5000`.
pub(crate) fn covers_any_port(scope: &str, reference: &Reference) -> bool {
    let host = host_without_port(&reference.registry);
    if let Some(domain) = scope.strip_prefix("*.") {
        return is_wildcard_domain(domain) && is_subdomain(host, domain);
    }
    let host_only = !scope.contains('/') && host_without_port(scope) == scope;
    (host_only && host == scope) || covered_len(scope, reference).is_some()
}

/// Whether the node's `:` boundary makes a `host` or `*.domain` pattern match `reference` on a
/// port that [`covered_len`] does not cover (vectors 11, 13). Only used to say where we differ.
pub(super) fn node_matches_on_another_port(pattern: &str, reference: &Reference) -> bool {
    covered_len(pattern, reference).is_none()
        && host_without_port(&reference.registry) != reference.registry
        && covers_any_port(pattern, reference)
}

/// containers/image's wildcard match: the *first* `.domain` in the name, with no `/` before it and
/// the end, `:`, `/` or `@` after it. `a.example.com.example.com` is not under `*.example.com`
/// there (vector 43). Only used to say where we differ.
pub(super) fn node_wildcard_matches(domain: &str, reference: &Reference) -> bool {
    let name = reference.name();
    let dotted = format!(".{domain}");
    name.find(&dotted).is_some_and(|at| {
        !name[..at].contains('/')
            && matches!(
                name.as_bytes().get(at + dotted.len()),
                None | Some(b':' | b'/' | b'@')
            )
    })
}

/// Whether an `--insecure-registry` entry names `registry` (`host[:port]`): `host` names every
/// port of that host, `host:port` that port only. Host names compare without case, as DNS does.
pub(super) fn names_registry(entry: &str, registry: &str) -> bool {
    let host_only = host_without_port(entry) == entry;
    let compared = if host_only {
        host_without_port(registry)
    } else {
        registry
    };
    !entry.is_empty() && compared.eq_ignore_ascii_case(entry)
}

/// `host` is strictly below `domain`: `a.example.com` and `a.b.example.com` are below
/// `example.com`, `example.com` itself and `a.example.community` are not.
fn is_subdomain(host: &str, domain: &str) -> bool {
    host.len() > domain.len() + 1
        && host.ends_with(domain)
        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
}

/// The part of a `*.domain` pattern after `*.`: DNS labels only, as the API pattern demands.
/// Anything else (a port, a path, another `*`) could never name a host, so it covers nothing.
pub(super) fn is_wildcard_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// `host` of `host[:port]`, keeping an IPv6 literal's brackets (its colons are not a port).
fn host_without_port(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.find(']').map_or(registry, |end| &registry[..=end]);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// Why `source` can never cover a normalised reference, if it cannot. Only used to warn: such a
/// source simply never matches, here as on the node.
pub(super) fn unmatchable_source(source: &str) -> Option<String> {
    if let Some(domain) = source.strip_prefix("*.") {
        return (!is_wildcard_domain(domain))
            .then(|| "a wildcard source must be *.domain, without a port or path".to_string());
    }
    // A source is a prefix, not a reference: probe it with two more components, enough that
    // Docker Hub's `library/` rule cannot apply, and see whether the probe reads back as
    // written. `docker.io` and `docker.io/library` pass; `myregistry/ns` (a Hub namespace, not
    // a host) and `index.docker.io/x` (normalised to docker.io) do not.
    const PROBE: &str = "/x/y";
    let probe = format!("{source}{PROBE}");
    match Reference::parse(&probe) {
        Err(e) => Some(format!(
            "not a valid registry or repository prefix: {}",
            e.kind
        )),
        Ok(parsed) if parsed.name() != probe => {
            let name = parsed.name();
            Some(format!(
                "references are matched in normalised form, which this never prefixes (it reads \
                 as {})",
                name.strip_suffix(PROBE).unwrap_or(&name)
            ))
        }
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn prefix_matches_whole_components_only() {
        let cases = [
            ("quay.io/openshift", "quay.io/openshift", Some(17)),
            ("quay.io/openshift", "quay.io/openshift/foo:1", Some(17)),
            ("quay.io/openshift", "quay.io/openshift-release/foo", None),
            ("quay.io/openshift", "quay.io/openshift.io/x", None),
            ("quay.io/openshift", "quay.io/openshift_x/y", None),
            ("quay.io/openshift", "quay.io/open", None),
            ("quay.io", "quay.io/a/b", Some(7)),
            ("quay.io", "quay.io.evil.com/a", None),
            // A trailing slash or a tag in the pattern can never be a component prefix.
            ("quay.io/a/", "quay.io/a/b", None),
            ("quay.io/a:1", "quay.io/a:1", None),
            ("", "quay.io/a", None),
        ];
        for (pattern, reference, expected) in cases {
            assert_eq!(
                covered_len(pattern, &r(reference)),
                expected,
                "{pattern} vs {reference}"
            );
        }
    }

    #[test]
    fn ports_must_be_identical() {
        let cases = [
            (
                "registry.example.com:5000",
                "registry.example.com:5000/ns/app",
                true,
            ),
            (
                "registry.example.com:5000",
                "registry.example.com/ns/app",
                false,
            ),
            (
                "registry.example.com:5000",
                "registry.example.com:50000/ns/app",
                false,
            ),
            // The node's ':' boundary would match this and then fail (vector 11).
            (
                "registry.example.com",
                "registry.example.com:5000/ns/app",
                false,
            ),
            ("localhost:5000/ns", "localhost:5000/ns/app", true),
            ("localhost:5000/ns", "localhost/ns/app", false),
            ("[::1]:5000", "[::1]:5000/x", true),
            ("[::1]", "[::1]:5000/x", false),
        ];
        for (pattern, reference, expected) in cases {
            assert_eq!(
                covered_len(pattern, &r(reference)).is_some(),
                expected,
                "{pattern} vs {reference}"
            );
        }
    }

    #[test]
    fn wildcard_matches_any_depth_below_the_domain_without_a_port() {
        let cases = [
            ("*.redhat.io", "registry.redhat.io/product/repo", Some(18)),
            ("*.redhat.io", "a.b.redhat.io/x", Some(13)),
            ("*.redhat.io", "redhat.io/x/y", None),
            ("*.redhat.io", "registry.redhat.io:8443/x", None),
            ("*.redhat.io", "aredhat.io/x", None),
            ("*.example.com", "a.example.community/x", None),
            // The whole host is compared, not its first ".example.com" (vector 43's quirk).
            ("*.example.com", "a.example.com.example.com/x", Some(25)),
            ("*.example.com", "quay.io/a.example.com/x", None),
            // Case is kept everywhere, as on the node.
            ("*.example.com", "a.Example.com/x", None),
            // Malformed wildcards never match.
            ("*.example.com/x", "a.example.com/x/y", None),
            ("*.example.com:5000", "a.example.com:5000/x", None),
            ("*.", "a.b/x", None),
        ];
        for (pattern, reference, expected) in cases {
            assert_eq!(
                covered_len(pattern, &r(reference)),
                expected,
                "{pattern} vs {reference}"
            );
        }
    }

    #[test]
    fn docker_hub_references_match_in_normalised_form() {
        assert!(covered_len("docker.io/library/busybox", &r("busybox")).is_some());
        assert!(covered_len("docker.io/library", &r("index.docker.io/busybox:1")).is_some());
        assert!(covered_len("docker.io", &r("bitnami/redis")).is_some());
        assert!(covered_len("docker.io/busybox", &r("busybox")).is_none());
        assert!(covered_len("myregistry/ns", &r("myregistry/ns/app")).is_none());
        assert!(covered_len("docker.io/myregistry/ns", &r("myregistry/ns/app")).is_some());
    }

    #[test]
    fn blocked_host_scopes_cover_every_port() {
        let cases = [
            ("bad.local", "bad.local/x", true),
            ("bad.local", "bad.local:5000/x", true),
            ("bad.local:5000", "bad.local/x", false),
            ("bad.local:5000", "bad.local:5000/x", true),
            ("bad.local/ns", "bad.local:5000/ns/x", false),
            ("bad.local/ns", "bad.local/ns/x", true),
            ("*.bad.com", "a.bad.com:5000/x", true),
            ("*.bad.com", "bad.com/x", false),
            ("[::1]", "[::1]:5000/x", true),
            ("bad.local", "bad.localhost/x", false),
        ];
        for (scope, reference, expected) in cases {
            assert_eq!(
                covers_any_port(scope, &r(reference)),
                expected,
                "{scope} vs {reference}"
            );
        }
    }

    #[test]
    fn insecure_registry_entries_name_a_host_on_any_port_or_one_port() {
        for (entry, registry, names) in [
            ("mirror.local", "mirror.local", true),
            ("mirror.local", "mirror.local:5000", true),
            ("Mirror.Local", "mirror.local:5000", true),
            ("mirror.local:5000", "mirror.local:5000", true),
            ("mirror.local:5000", "mirror.local", false),
            ("mirror.local:5000", "mirror.local:5001", false),
            ("mirror.local", "mirror.local.evil", false),
            ("mirror.local", "a.mirror.local", false),
            ("[::1]", "[::1]:5000", true),
            ("[::1]:5000", "[::1]:5001", false),
            ("", "mirror.local", false),
        ] {
            assert_eq!(
                names_registry(entry, registry),
                names,
                "{entry} names {registry}"
            );
        }
    }

    #[test]
    fn the_nodes_quirks_are_recognised() {
        assert!(node_matches_on_another_port(
            "registry.example.com",
            &r("registry.example.com:5000/ns/app")
        ));
        assert!(node_matches_on_another_port(
            "*.redhat.io",
            &r("registry.redhat.io:8443/x")
        ));
        assert!(!node_matches_on_another_port(
            "registry.example.com",
            &r("registry.example.com/ns/app")
        ));
        assert!(!node_matches_on_another_port(
            "registry.example.com/ns",
            &r("registry.example.com:5000/ns/app")
        ));
        assert!(node_wildcard_matches("example.com", &r("a.example.com/x")));
        assert!(node_wildcard_matches(
            "example.com",
            &r("a.example.com:5000/x")
        ));
        assert!(!node_wildcard_matches(
            "example.com",
            &r("a.example.com.example.com/x")
        ));
        assert!(!node_wildcard_matches(
            "example.com",
            &r("a.example.community/x")
        ));
    }

    #[test]
    fn unmatchable_sources_are_explained() {
        for ok in [
            "quay.io",
            "quay.io:443/a/b",
            "localhost",
            "docker.io",
            "docker.io/library",
            "docker.io/busybox",
            "*.example.com",
            "Registry.Example.com/ns",
            "[::1]:5000/x",
        ] {
            assert_eq!(unmatchable_source(ok), None, "{ok}");
        }
        let cases = [
            ("myregistry/ns", "reads as docker.io/myregistry/ns)"),
            ("myregistry", "reads as docker.io/myregistry)"),
            ("index.docker.io/library", "reads as docker.io/library)"),
            ("quay.io/Foo", "must be lowercase"),
            ("quay.io/a:1", "invalid repository path component"),
            ("quay.io/a/", "empty component"),
            ("*.example.com/x", "wildcard"),
            ("quay..io", "invalid registry host"),
        ];
        for (source, why) in cases {
            let got = unmatchable_source(source).unwrap_or_default();
            assert!(got.contains(why), "{source}: {got:?}");
        }
    }
}
