//! The test vectors of /work/shared/reference/mirror-semantics.md §7 (1–43), then the rules
//! one by one.
//!
//! Expected sources are written as strings: `@D` stands for `@sha256:` + 64 `a`, a leading
//! `✗` marks a blocked source and a trailing ` (insecure)` an insecure one.

use super::*;
use crate::reference::ReferenceErrorKind;

fn digest() -> String {
    format!("sha256:{}", "a".repeat(64))
}

/// Expands the `@D` shorthand.
fn d(s: &str) -> String {
    s.replace("@D", &format!("@{}", digest()))
}

fn r(s: &str) -> Reference {
    let s = d(s);
    Reference::parse(&s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn rule(source: &str, mirrors: &[&str]) -> MirrorRule {
    MirrorRule {
        source: source.to_string(),
        mirrors: mirrors.iter().map(|m| m.to_string()).collect(),
        policy: None,
    }
}

fn never(source: &str, mirrors: &[&str]) -> MirrorRule {
    MirrorRule {
        policy: Some(SourcePolicy::NeverContactSource),
        ..rule(source, mirrors)
    }
}

fn allow(source: &str, mirrors: &[&str]) -> MirrorRule {
    MirrorRule {
        policy: Some(SourcePolicy::AllowContactingSource),
        ..rule(source, mirrors)
    }
}

fn object(kind: MirrorKind, name: &str, rules: Vec<MirrorRule>) -> MirrorObject {
    MirrorObject {
        kind,
        name: name.to_string(),
        rules,
    }
}

fn idms(name: &str, rules: Vec<MirrorRule>) -> MirrorObject {
    object(MirrorKind::ImageDigestMirrorSet, name, rules)
}

fn itms(name: &str, rules: Vec<MirrorRule>) -> MirrorObject {
    object(MirrorKind::ImageTagMirrorSet, name, rules)
}

fn icsp(name: &str, rules: Vec<MirrorRule>) -> MirrorObject {
    object(MirrorKind::ImageContentSourcePolicy, name, rules)
}

fn scopes(allowed: &[&str], blocked: &[&str], insecure: &[&str]) -> RegistrySources {
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    RegistrySources {
        allowed: own(allowed),
        blocked: own(blocked),
        insecure: own(insecure),
    }
}

/// A pull source list in the notation above.
fn render(sources: &[PullSource]) -> Vec<String> {
    sources
        .iter()
        .map(|s| {
            format!(
                "{}{}{}",
                if s.blocked.is_some() { "✗" } else { "" },
                s.reference,
                if s.insecure.is_some() {
                    " (insecure)"
                } else {
                    ""
                }
            )
        })
        .collect()
}

fn sources_of(table: &MirrorTable, reference: &str) -> Vec<String> {
    let reference = r(reference);
    render(
        &table
            .pull_sources(&reference)
            .unwrap_or_else(|e| panic!("{reference}: {e}")),
    )
}

enum Want {
    /// The ordered pull sources.
    Sources(&'static [&'static str]),
    /// A rewrite error whose message contains each of these.
    Error(&'static [&'static str]),
    /// The reference itself does not parse.
    BadReference,
}
use Want::*;

struct Vector {
    id: &'static str,
    objects: Vec<MirrorObject>,
    scopes: RegistrySources,
    cases: Vec<(&'static str, Want)>,
}

fn vector(
    id: &'static str,
    objects: Vec<MirrorObject>,
    cases: Vec<(&'static str, Want)>,
) -> Vector {
    Vector {
        id,
        objects,
        scopes: RegistrySources::default(),
        cases,
    }
}

fn vectors() -> Vec<Vector> {
    const REL: &str = "quay.io/openshift-release-dev/ocp-release";
    let v1 = || {
        vec![idms(
            "release-mirrors",
            vec![rule(REL, &["mirror.local:5000/ocp4/openshift4"])],
        )]
    };
    let v3 = || {
        vec![idms(
            "o",
            vec![rule("quay.io/openshift", &["m.local/openshift"])],
        )]
    };
    let v7 = || {
        vec![
            idms("a", vec![rule("quay.io/a", &["m1.local/a"])]),
            idms("ab", vec![rule("quay.io/a/b", &["m2.local/b"])]),
        ]
    };
    let v12 = || {
        vec![idms(
            "w",
            vec![rule("*.redhat.io", &["mirror.local/redhat"])],
        )]
    };
    let v20 = || vec![idms("n", vec![never("quay.io/x", &["m.local/x"])])];
    let v43 = || vec![idms("w", vec![rule("*.example.com", &["m.local"])])];

    vec![
        vector(
            "1",
            v1(),
            vec![(
                "quay.io/openshift-release-dev/ocp-release@D",
                Sources(&[
                    "mirror.local:5000/ocp4/openshift4@D",
                    "quay.io/openshift-release-dev/ocp-release@D",
                ]),
            )],
        ),
        vector(
            "2 (IDMS mirrors are digest-only)",
            v1(),
            vec![(
                "quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64",
                Sources(&["quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64"]),
            )],
        ),
        vector(
            "3 ('-' is not a boundary)",
            v3(),
            vec![(
                "quay.io/openshift-release/foo@D",
                Sources(&["quay.io/openshift-release/foo@D"]),
            )],
        ),
        vector(
            "4",
            v3(),
            vec![(
                "quay.io/openshift/foo/bar@D",
                Sources(&["m.local/openshift/foo/bar@D", "quay.io/openshift/foo/bar@D"]),
            )],
        ),
        vector(
            "5 ('.' and '_' are not boundaries)",
            v3(),
            vec![
                (
                    "quay.io/openshift.io/x@D",
                    Sources(&["quay.io/openshift.io/x@D"]),
                ),
                (
                    "quay.io/openshift_x/y@D",
                    Sources(&["quay.io/openshift_x/y@D"]),
                ),
            ],
        ),
        vector(
            "6 (exact)",
            v3(),
            vec![(
                "quay.io/openshift@D",
                Sources(&["m.local/openshift@D", "quay.io/openshift@D"]),
            )],
        ),
        vector(
            "7 (parent not used)",
            v7(),
            vec![(
                "quay.io/a/b/c@D",
                Sources(&["m2.local/b/c@D", "quay.io/a/b/c@D"]),
            )],
        ),
        vector(
            "8",
            v7(),
            vec![
                (
                    "quay.io/a/bb@D",
                    Sources(&["m1.local/a/bb@D", "quay.io/a/bb@D"]),
                ),
                ("quay.io/a/b@D", Sources(&["m2.local/b@D", "quay.io/a/b@D"])),
            ],
        ),
        vector(
            "9",
            vec![idms(
                "rh",
                vec![rule("registry.redhat.io", &["mirror.local/rh"])],
            )],
            vec![
                (
                    "registry.redhat.io/ubi9/ubi@D",
                    Sources(&[
                        "mirror.local/rh/ubi9/ubi@D",
                        "registry.redhat.io/ubi9/ubi@D",
                    ]),
                ),
                (
                    "registry.redhat.io.evil.com/x@D",
                    Sources(&["registry.redhat.io.evil.com/x@D"]),
                ),
            ],
        ),
        vector(
            "10",
            vec![idms(
                "p",
                vec![rule("registry.example.com:5000", &["mirror.local/reg5000"])],
            )],
            vec![
                (
                    "registry.example.com:5000/ns/app@D",
                    Sources(&[
                        "mirror.local/reg5000/ns/app@D",
                        "registry.example.com:5000/ns/app@D",
                    ]),
                ),
                (
                    "registry.example.com/ns/app@D",
                    Sources(&["registry.example.com/ns/app@D"]),
                ),
                (
                    "registry.example.com:50000/ns/app@D",
                    Sources(&["registry.example.com:50000/ns/app@D"]),
                ),
            ],
        ),
        // Node: an error (its ':' boundary matches, the rewrite fails). Brief: no entry.
        vector(
            "11 (host source never matches another port)",
            vec![idms(
                "h",
                vec![rule("registry.example.com", &["mirror.local/x"])],
            )],
            vec![(
                "registry.example.com:5000/ns/app@D",
                Sources(&["registry.example.com:5000/ns/app@D"]),
            )],
        ),
        vector(
            "12",
            v12(),
            vec![
                (
                    "registry.redhat.io/product/repo@D",
                    Sources(&[
                        "mirror.local/redhat/product/repo@D",
                        "registry.redhat.io/product/repo@D",
                    ]),
                ),
                (
                    "a.b.redhat.io/x@D",
                    Sources(&["mirror.local/redhat/x@D", "a.b.redhat.io/x@D"]),
                ),
                ("redhat.io/x/y@D", Sources(&["redhat.io/x/y@D"])),
            ],
        ),
        // Node: the first input errors. Brief: a wildcard never matches a port, no entry.
        vector(
            "13 (wildcard with a port)",
            v12(),
            vec![
                (
                    "registry.redhat.io:8443/x@D",
                    Sources(&["registry.redhat.io:8443/x@D"]),
                ),
                (
                    "registry.redhat.io/product/repo:v1",
                    Sources(&["registry.redhat.io/product/repo:v1"]),
                ),
            ],
        ),
        vector(
            "14 (equal length: wildcard sorts first)",
            vec![
                idms("w", vec![rule("*.example.com", &["m1.local"])]),
                idms("foo", vec![rule("foo.example.com", &["m2.local"])]),
                idms("a", vec![rule("a.example.com", &["m3.local"])]),
            ],
            vec![
                (
                    "foo.example.com/x@D",
                    Sources(&["m2.local/x@D", "foo.example.com/x@D"]),
                ),
                (
                    "bar.example.com/x@D",
                    Sources(&["m1.local/x@D", "bar.example.com/x@D"]),
                ),
                (
                    "a.example.com/x@D",
                    Sources(&["m1.local/x@D", "a.example.com/x@D"]),
                ),
            ],
        ),
        vector(
            "15",
            vec![
                idms(
                    "one",
                    vec![rule("quay.io/x", &["a.local/x", "b.local/x", "c.local/x"])],
                ),
                idms(
                    "two",
                    vec![rule("quay.io/x", &["c.local/x", "d.local/x", "e.local/x"])],
                ),
            ],
            vec![(
                "quay.io/x/img@D",
                Sources(&[
                    "a.local/x/img@D",
                    "b.local/x/img@D",
                    "c.local/x/img@D",
                    "d.local/x/img@D",
                    "e.local/x/img@D",
                    "quay.io/x/img@D",
                ]),
            )],
        ),
        vector(
            "16 (byte order, not object order)",
            vec![
                idms("first", vec![rule("quay.io/x", &["m2.local/x"])]),
                idms("second", vec![rule("quay.io/x", &["m1.local/x"])]),
            ],
            vec![(
                "quay.io/x/img@D",
                Sources(&["m1.local/x/img@D", "m2.local/x/img@D", "quay.io/x/img@D"]),
            )],
        ),
        vector(
            "17 (Kahn FIFO)",
            vec![
                idms("one", vec![rule("quay.io/x", &["a.local/x", "z.local/x"])]),
                idms("two", vec![rule("quay.io/x", &["b.local/x", "c.local/x"])]),
            ],
            vec![(
                "quay.io/x/img@D",
                Sources(&[
                    "a.local/x/img@D",
                    "b.local/x/img@D",
                    "z.local/x/img@D",
                    "c.local/x/img@D",
                    "quay.io/x/img@D",
                ]),
            )],
        ),
        vector(
            "18 (conflict: source first)",
            vec![
                idms("one", vec![rule("quay.io/x", &["z.local/x", "y.local/x"])]),
                idms(
                    "two",
                    vec![rule("quay.io/x", &["y.local/x", "z.local/x", "w.local/x"])],
                ),
            ],
            vec![(
                "quay.io/x/img@D",
                Sources(&[
                    "quay.io/x/img@D",
                    "w.local/x/img@D",
                    "y.local/x/img@D",
                    "z.local/x/img@D",
                    "quay.io/x/img@D",
                ]),
            )],
        ),
        vector(
            "19 (list order kept)",
            vec![idms(
                "one",
                vec![rule("quay.io/x", &["z.local/x", "a.local/x", "m.local/x"])],
            )],
            vec![(
                "quay.io/x/img@D",
                Sources(&[
                    "z.local/x/img@D",
                    "a.local/x/img@D",
                    "m.local/x/img@D",
                    "quay.io/x/img@D",
                ]),
            )],
        ),
        vector(
            "20",
            v20(),
            vec![
                (
                    "quay.io/x/img@D",
                    Sources(&["m.local/x/img@D", "✗quay.io/x/img@D"]),
                ),
                ("quay.io/y/img@D", Sources(&["quay.io/y/img@D"])),
            ],
        ),
        vector(
            "21 (IDMS NeverContactSource blocks tag pulls too)",
            v20(),
            vec![("quay.io/x/img:1.0", Sources(&["✗quay.io/x/img:1.0"]))],
        ),
        vector(
            "22",
            vec![
                idms("d", vec![never("quay.io/x", &["d.local/x"])]),
                itms("t", vec![never("quay.io/x", &["t.local/x"])]),
            ],
            vec![
                (
                    "quay.io/x/img@D",
                    Sources(&["d.local/x/img@D", "✗quay.io/x/img@D"]),
                ),
                (
                    "quay.io/x/img:1.0",
                    Sources(&["t.local/x/img:1.0", "✗quay.io/x/img:1.0"]),
                ),
            ],
        ),
        vector(
            "23",
            vec![itms("t", vec![never("quay.io/x", &["t.local/x"])])],
            vec![
                ("quay.io/x/img@D", Sources(&["✗quay.io/x/img@D"])),
                (
                    "quay.io/x/img:2",
                    Sources(&["t.local/x/img:2", "✗quay.io/x/img:2"]),
                ),
            ],
        ),
        vector(
            "24 (docker.io normalisation)",
            vec![itms(
                "hub",
                vec![rule("docker.io/library", &["mirror.local/dockerhub"])],
            )],
            vec![
                (
                    "busybox:1.36",
                    Sources(&[
                        "mirror.local/dockerhub/busybox:1.36",
                        "docker.io/library/busybox:1.36",
                    ]),
                ),
                (
                    "index.docker.io/library/busybox:1",
                    Sources(&[
                        "mirror.local/dockerhub/busybox:1",
                        "docker.io/library/busybox:1",
                    ]),
                ),
                (
                    "docker.io/library/busybox@D",
                    Sources(&["docker.io/library/busybox@D"]),
                ),
                (
                    "docker.io/bitnami/redis:7",
                    Sources(&["docker.io/bitnami/redis:7"]),
                ),
            ],
        ),
        vector(
            "25 (one source, two tables)",
            vec![
                idms("d", vec![rule("quay.io/x", &["d.local/x"])]),
                itms("t", vec![rule("quay.io/x", &["t.local/x"])]),
            ],
            vec![
                (
                    "quay.io/x/img@D",
                    Sources(&["d.local/x/img@D", "quay.io/x/img@D"]),
                ),
                (
                    "quay.io/x/img:1.0",
                    Sources(&["t.local/x/img:1.0", "quay.io/x/img:1.0"]),
                ),
            ],
        ),
        vector(
            "26 (ICSP and IDMS merge)",
            vec![
                icsp("i", vec![rule("quay.io/x", &["a-icsp.local/x"])]),
                idms("d", vec![rule("quay.io/x", &["z-idms.local/x"])]),
            ],
            vec![(
                "quay.io/x/img@D",
                Sources(&[
                    "a-icsp.local/x/img@D",
                    "z-idms.local/x/img@D",
                    "quay.io/x/img@D",
                ]),
            )],
        ),
        // Node: MCO refuses to render. Brief: blocked (and a warning, tested below).
        vector(
            "27 (conflicting policy, ICSP = Allow)",
            vec![
                icsp("i", vec![rule("quay.io/x", &["i.local/x"])]),
                idms("d", vec![never("quay.io/x", &["d.local/x"])]),
            ],
            vec![
                (
                    "quay.io/x/img@D",
                    Sources(&["d.local/x/img@D", "i.local/x/img@D", "✗quay.io/x/img@D"]),
                ),
                ("quay.io/x/img:1", Sources(&["✗quay.io/x/img:1"])),
            ],
        ),
        vector(
            "27b (conflicting policy, IDMS Never + Allow)",
            vec![
                idms("n", vec![never("quay.io/x", &["d.local/x"])]),
                idms("a", vec![allow("quay.io/x", &["e.local/x"])]),
            ],
            vec![(
                "quay.io/x/img@D",
                Sources(&["d.local/x/img@D", "e.local/x/img@D", "✗quay.io/x/img@D"]),
            )],
        ),
        vector(
            "28 (source among the mirrors)",
            vec![idms(
                "s",
                vec![rule(
                    "quay.io/x",
                    &["z1.local/x", "quay.io/x", "y2.local/x"],
                )],
            )],
            vec![(
                "quay.io/x/img@D",
                Sources(&[
                    "z1.local/x/img@D",
                    "quay.io/x/img@D",
                    "y2.local/x/img@D",
                    "quay.io/x/img@D",
                ]),
            )],
        ),
        // Node: MCO refuses to render. Brief: the rule is dropped with its policy.
        vector(
            "29 (only the source as mirror: dropped)",
            vec![idms("s", vec![never("quay.io/x", &["quay.io/x"])])],
            vec![("quay.io/x/img@D", Sources(&["quay.io/x/img@D"]))],
        ),
        vector(
            "30 (no mirrors: dropped, policy ignored)",
            vec![idms("s", vec![never("quay.io/x", &[])])],
            vec![("quay.io/x/img@D", Sources(&["quay.io/x/img@D"]))],
        ),
        vector(
            "31 (docker.io/busybox never matches)",
            vec![
                idms(
                    "lib",
                    vec![rule("docker.io/library/busybox", &["mirror.local/busybox"])],
                ),
                idms("short", vec![rule("docker.io/busybox", &["never.local/b"])]),
            ],
            vec![
                (
                    "busybox@D",
                    Sources(&["mirror.local/busybox@D", "docker.io/library/busybox@D"]),
                ),
                (
                    "library/busybox@D",
                    Sources(&["mirror.local/busybox@D", "docker.io/library/busybox@D"]),
                ),
                (
                    "docker.io/busybox@D",
                    Sources(&["mirror.local/busybox@D", "docker.io/library/busybox@D"]),
                ),
            ],
        ),
        vector(
            "32 (whole Docker Hub)",
            vec![idms("hub", vec![rule("docker.io", &["mirror.local/hub"])])],
            vec![
                (
                    "busybox@D",
                    Sources(&[
                        "mirror.local/hub/library/busybox@D",
                        "docker.io/library/busybox@D",
                    ]),
                ),
                (
                    "bitnami/redis@D",
                    Sources(&[
                        "mirror.local/hub/bitnami/redis@D",
                        "docker.io/bitnami/redis@D",
                    ]),
                ),
                (
                    "busybox:latest",
                    Sources(&["docker.io/library/busybox:latest"]),
                ),
            ],
        ),
        vector(
            "33 (case-sensitive host)",
            vec![idms(
                "c",
                vec![rule("Registry.Example.com/ns", &["mirror.local/ns"])],
            )],
            vec![
                (
                    "registry.example.com/ns/app@D",
                    Sources(&["registry.example.com/ns/app@D"]),
                ),
                (
                    "Registry.Example.com/ns/app@D",
                    Sources(&["mirror.local/ns/app@D", "Registry.Example.com/ns/app@D"]),
                ),
                ("quay.io/Foo/bar@D", BadReference),
            ],
        ),
        vector(
            "34 (deeper mirror path)",
            vec![idms(
                "r",
                vec![rule("quay.io/ocp/release", &["mirror.local/a/b/c"])],
            )],
            vec![
                (
                    "quay.io/ocp/release@D",
                    Sources(&["mirror.local/a/b/c@D", "quay.io/ocp/release@D"]),
                ),
                (
                    "quay.io/ocp/release:4.16",
                    Sources(&["quay.io/ocp/release:4.16"]),
                ),
            ],
        ),
        vector(
            "35 (rewrite to a bare host)",
            vec![idms(
                "bare",
                vec![rule("quay.io/ocp/release", &["mirror.local"])],
            )],
            vec![
                (
                    "quay.io/ocp/release@D",
                    Error(&[
                        "ImageDigestMirrorSet/bare",
                        "quay.io/ocp/release → mirror.local",
                        "must be canonical",
                    ]),
                ),
                (
                    "quay.io/ocp/release/sub@D",
                    Sources(&["mirror.local/sub@D", "quay.io/ocp/release/sub@D"]),
                ),
            ],
        ),
        Vector {
            id: "36 (insecure nested scope)",
            objects: vec![idms("o", vec![rule("quay.io/ocp", &["m.local/ocp"])])],
            scopes: scopes(&[], &[], &["quay.io/ocp/dev"]),
            cases: vec![(
                "quay.io/ocp/dev/app@D",
                Sources(&["m.local/ocp/dev/app@D", "quay.io/ocp/dev/app@D (insecure)"]),
            )],
        },
        // Node: the IDMS child shadows the ITMS parent for the first input (source only).
        // Brief: the longest match is taken per table, so the parent applies.
        vector(
            "37 (per-table longest match)",
            vec![
                idms("child", vec![rule("quay.io/a/b", &["d.local/b"])]),
                itms("parent", vec![rule("quay.io/a", &["t.local/a"])]),
            ],
            vec![
                (
                    "quay.io/a/b/c:1",
                    Sources(&["t.local/a/b/c:1", "quay.io/a/b/c:1"]),
                ),
                (
                    "quay.io/a/x:1",
                    Sources(&["t.local/a/x:1", "quay.io/a/x:1"]),
                ),
            ],
        ),
        // Node: MCO fails to render. Brief: the mirrors apply, the scope marks insecure.
        Vector {
            id: "38 (wildcard mirror + nested insecure scope)",
            objects: v43(),
            scopes: scopes(&[], &[], &["foo.example.com"]),
            cases: vec![
                (
                    "foo.example.com/x@D",
                    Sources(&["m.local/x@D", "foo.example.com/x@D (insecure)"]),
                ),
                (
                    "bar.example.com/x@D",
                    Sources(&["m.local/x@D", "bar.example.com/x@D"]),
                ),
                (
                    "foo.example.com/x:1",
                    Sources(&["foo.example.com/x:1 (insecure)"]),
                ),
            ],
        },
        Vector {
            id: "39 (blocked scope applies to mirrors)",
            objects: vec![idms(
                "x",
                vec![rule("quay.io/x", &["bad.local/x", "good.local/x"])],
            )],
            scopes: scopes(&[], &["bad.local"], &[]),
            cases: vec![(
                "quay.io/x/img@D",
                Sources(&[
                    "✗bad.local/x/img@D",
                    "good.local/x/img@D",
                    "quay.io/x/img@D",
                ]),
            )],
        },
        vector(
            "40 (ports and IPs)",
            vec![idms(
                "l",
                vec![rule("localhost:5000/ns", &["10.0.0.1:5000/ns"])],
            )],
            vec![
                (
                    "localhost:5000/ns/app@D",
                    Sources(&["10.0.0.1:5000/ns/app@D", "localhost:5000/ns/app@D"]),
                ),
                ("localhost/ns/app@D", Sources(&["localhost/ns/app@D"])),
            ],
        ),
        vector(
            "41 (dotless source host)",
            vec![idms("m", vec![rule("myregistry/ns", &["mirror.local/ns"])])],
            vec![(
                "myregistry/ns/app@D",
                Sources(&["docker.io/myregistry/ns/app@D"]),
            )],
        ),
        vector(
            "42 (wildcard ITMS)",
            vec![itms("w", vec![rule("*.example.com", &["mirror.local/ex"])])],
            vec![
                (
                    "reg.example.com/team/app:1.2",
                    Sources(&[
                        "mirror.local/ex/team/app:1.2",
                        "reg.example.com/team/app:1.2",
                    ]),
                ),
                (
                    "reg.example.com/team/app@D",
                    Sources(&["reg.example.com/team/app@D"]),
                ),
            ],
        ),
        // Node: no entry for the first input (first-occurrence quirk). Brief: the host is
        // compared as a whole, and it is a subdomain of example.com.
        vector(
            "43 (wildcard compares the whole host)",
            v43(),
            vec![
                (
                    "a.example.com.example.com/x@D",
                    Sources(&["m.local/x@D", "a.example.com.example.com/x@D"]),
                ),
                ("example.com/x@D", Sources(&["example.com/x@D"])),
                (
                    "a.example.community/x@D",
                    Sources(&["a.example.community/x@D"]),
                ),
            ],
        ),
    ]
}

#[test]
fn test_vectors_1_to_43() {
    let vectors = vectors();
    let mut failures = Vec::new();
    let mut checked = 0;
    for v in &vectors {
        let table = MirrorTable::new(&v.objects, &v.scopes);
        for (input, want) in &v.cases {
            checked += 1;
            let input = d(input);
            let parsed = Reference::parse(&input);
            let result = match (&parsed, want) {
                (Err(_), BadReference) => continue,
                (Ok(_), BadReference) => {
                    failures.push(format!("vector {}: {input} parsed", v.id));
                    continue;
                }
                (Err(e), _) => {
                    failures.push(format!("vector {}: {e}", v.id));
                    continue;
                }
                (Ok(reference), _) => table.pull_sources(reference),
            };
            match (result, want) {
                (Ok(sources), Sources(expected)) => {
                    let got = render(&sources);
                    let expected: Vec<String> = expected.iter().map(|s| d(s)).collect();
                    if got != expected {
                        failures.push(format!(
                            "vector {}: {input}\n    got      {got:?}\n    expected {expected:?}",
                            v.id
                        ));
                    }
                    // Mirrors first, the reference itself last and exactly once at the end.
                    let shape_ok = sources.split_last().is_some_and(|(last, mirrors)| {
                        parsed
                            .as_ref()
                            .is_ok_and(|reference| last.reference == *reference)
                            && matches!(last.origin, SourceOrigin::Source { .. })
                            && mirrors
                                .iter()
                                .all(|m| matches!(m.origin, SourceOrigin::Mirror { .. }))
                    });
                    if !shape_ok {
                        failures.push(format!("vector {}: {input}: bad shape {sources:?}", v.id));
                    }
                }
                (Err(e), Error(parts)) => {
                    let message = e.to_string();
                    for part in *parts {
                        if !message.contains(part) {
                            failures.push(format!(
                                "vector {}: {input}: error {message:?} lacks {part:?}",
                                v.id
                            ));
                        }
                    }
                }
                (Ok(sources), _) => failures.push(format!(
                    "vector {}: {input}: expected an error, got {:?}",
                    v.id,
                    render(&sources)
                )),
                (Err(e), _) => failures.push(format!("vector {}: {input}: {e}", v.id)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} inputs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // 43 numbered vectors plus 27b; a row lost in editing would otherwise pass silently.
    assert_eq!(vectors.len(), 44);
    assert_eq!(checked, 77);
}

#[test]
fn an_uppercase_repository_is_a_reference_error_not_a_mirror_question() {
    // Vector 33's third input: rejected before the table is consulted, as on the node.
    let err = Reference::parse(&d("quay.io/Foo/bar@D")).unwrap_err();
    assert_eq!(err.kind, ReferenceErrorKind::Uppercase);
}

#[test]
fn empty_table_returns_the_reference_itself() {
    let table = MirrorTable::new(&[], &RegistrySources::default());
    assert!(table.is_empty());
    assert!(table.warnings().is_empty());
    for input in [
        "busybox",
        "quay.io/a/b:1",
        "quay.io/a/b@D",
        "localhost:5000/x:1@D",
    ] {
        let reference = r(input);
        let sources = table.pull_sources(&reference).unwrap();
        assert_eq!(
            sources,
            [PullSource {
                reference: reference.clone(),
                origin: SourceOrigin::Source { matched: None },
                blocked: None,
                insecure: None,
            }]
        );
    }
    assert!(MirrorTable::default().is_empty());
}

#[test]
fn is_empty_only_without_mirrors_and_scopes() {
    let dropped = [idms("s", vec![rule("quay.io/x", &["quay.io/x"])])];
    assert!(MirrorTable::new(&dropped, &RegistrySources::default()).is_empty());
    let mirrored = [idms("s", vec![rule("quay.io/x", &["m.local/x"])])];
    assert!(!MirrorTable::new(&mirrored, &RegistrySources::default()).is_empty());
    for scopes in [
        scopes(&["quay.io"], &[], &[]),
        scopes(&[], &["quay.io"], &[]),
        scopes(&[], &[], &["quay.io"]),
    ] {
        assert!(!MirrorTable::new(&[], &scopes).is_empty());
    }
}

#[test]
fn origins_name_the_rule_and_the_objects() {
    let table = MirrorTable::new(
        &[
            idms("b", vec![rule("quay.io/x", &["m1.local/x", "m2.local/x"])]),
            icsp("a", vec![rule("quay.io/x", &["m1.local/x"])]),
            idms("c", vec![rule("quay.io/x", &["m1.local/x"])]),
        ],
        &RegistrySources::default(),
    );
    let sources = table.pull_sources(&r("quay.io/x/y@D")).unwrap();
    let origins: Vec<&SourceOrigin> = sources.iter().map(|s| &s.origin).collect();
    let objects = |list: &[(MirrorKind, &str)]| {
        list.iter()
            .map(|(k, n)| (*k, n.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        origins,
        [
            &SourceOrigin::Mirror {
                source: "quay.io/x".into(),
                objects: objects(&[
                    (MirrorKind::ImageDigestMirrorSet, "b"),
                    (MirrorKind::ImageDigestMirrorSet, "c"),
                    (MirrorKind::ImageContentSourcePolicy, "a"),
                ]),
            },
            &SourceOrigin::Mirror {
                source: "quay.io/x".into(),
                objects: objects(&[(MirrorKind::ImageDigestMirrorSet, "b")]),
            },
            &SourceOrigin::Source {
                matched: Some("quay.io/x".into())
            },
        ]
    );
    // A tag reference has no ITMS rule: nothing matched.
    let sources = table.pull_sources(&r("quay.io/x/y:1")).unwrap();
    assert_eq!(sources[0].origin, SourceOrigin::Source { matched: None });
}

#[test]
fn a_source_put_first_by_a_broken_cycle_is_credited_to_the_whole_group() {
    // Vector 18: nobody lists quay.io/x as a mirror, the disagreeing rules put it there.
    let table = MirrorTable::new(
        &[
            idms("one", vec![rule("quay.io/x", &["z.local/x", "y.local/x"])]),
            idms("two", vec![rule("quay.io/x", &["y.local/x", "z.local/x"])]),
        ],
        &RegistrySources::default(),
    );
    let sources = table.pull_sources(&r("quay.io/x/img@D")).unwrap();
    assert_eq!(
        sources[0].to_string(),
        d(
            "quay.io/x/img@D (mirror of quay.io/x via ImageDigestMirrorSet/one, ImageDigestMirrorSet/two)"
        )
    );
}

#[test]
fn both_tag_and_digest_is_a_digest_reference() {
    let table = MirrorTable::new(
        &[
            idms("d", vec![rule("quay.io/x", &["d.local/x"])]),
            itms("t", vec![rule("quay.io/x", &["t.local/x"])]),
        ],
        &RegistrySources::default(),
    );
    assert_eq!(
        sources_of(&table, "quay.io/x/img:v1@D"),
        [d("d.local/x/img:v1@D"), d("quay.io/x/img:v1@D")]
    );
}

#[test]
fn longest_source_wins_ties_go_to_the_byte_smaller() {
    let table = MirrorTable::new(
        &[
            idms("host", vec![rule("quay.io", &["h.local"])]),
            idms("ns", vec![rule("quay.io/a", &["n.local/a"])]),
            idms("repo", vec![rule("quay.io/a/b", &["r.local/b"])]),
            idms("wild", vec![rule("*.quay.io", &["w.local"])]),
            // Same length as *.quay.io (9 bytes); '*' sorts first.
            idms("sub", vec![rule("a.quay.io", &["s.local"])]),
        ],
        &RegistrySources::default(),
    );
    let first = |input: &str| sources_of(&table, input)[0].clone();
    assert_eq!(first("quay.io/a/b/c@D"), d("r.local/b/c@D"));
    assert_eq!(first("quay.io/a/c@D"), d("n.local/a/c@D"));
    assert_eq!(first("quay.io/c@D"), d("h.local/c@D"));
    assert_eq!(first("a.quay.io/c@D"), d("w.local/c@D"));
    assert_eq!(first("us.quay.io/c@D"), d("w.local/c@D"));
    // One byte longer than the wildcard: the specific host wins.
    let table = MirrorTable::new(
        &[
            idms("wild", vec![rule("*.quay.io", &["w.local"])]),
            idms("sub", vec![rule("eu.quay.io", &["s.local"])]),
        ],
        &RegistrySources::default(),
    );
    assert_eq!(sources_of(&table, "eu.quay.io/c@D")[0], d("s.local/c@D"));
}

#[test]
fn never_contact_source_blocks_the_source_and_whatever_falls_under_it() {
    let table = MirrorTable::new(
        &[
            idms("n", vec![never("quay.io/x", &["m.local/x"])]),
            // A mirror that points back into the blocked source is not contacted either: the
            // node checks every attempt against the entry it falls under.
            idms(
                "back",
                vec![rule("quay.io/y", &["quay.io/x/y", "ok.local/y"])],
            ),
            // A more specific source without the policy un-blocks its part, as on the node.
            idms("open", vec![rule("quay.io/x/open", &["o.local/open"])]),
        ],
        &RegistrySources::default(),
    );
    let pulls = table.pull_sources(&r("quay.io/x/img@D")).unwrap();
    assert_eq!(
        pulls[1].blocked.as_deref(),
        Some("NeverContactSource in ImageDigestMirrorSet/n")
    );
    assert_eq!(
        render(&table.pull_sources(&r("quay.io/y/img@D")).unwrap()),
        [
            d("✗quay.io/x/y/img@D"),
            d("ok.local/y/img@D"),
            d("quay.io/y/img@D")
        ]
    );
    assert_eq!(
        sources_of(&table, "quay.io/x/open/img@D"),
        [d("o.local/open/img@D"), d("quay.io/x/open/img@D")]
    );
    assert!(table.warnings().is_empty(), "{:?}", table.warnings());
    // The policy on an ICSP rule is meaningless (its API has none) and ignored.
    let table = MirrorTable::new(
        &[icsp("i", vec![never("quay.io/x", &["m.local/x"])])],
        &RegistrySources::default(),
    );
    assert_eq!(
        sources_of(&table, "quay.io/x/img@D"),
        [d("m.local/x/img@D"), d("quay.io/x/img@D")]
    );
}

/// Vectors 11 and 13: the node matches a `host` or `*.domain` source on any port of that host
/// (its `:` boundary), fails the rewrite, and so never contacts `host:5000`. We do not rewrite
/// across a port, but a NeverContactSource rule still keeps every port of its host uncontacted.
#[test]
fn never_contact_source_on_a_host_blocks_every_port_of_it_without_rewriting() {
    let table = MirrorTable::new(
        &[
            idms(
                "h",
                vec![never("registry.example.com", &["mirror.local/x"])],
            ),
            idms("w", vec![never("*.redhat.io", &["mirror.local/redhat"])]),
            // A more specific exact entry still decides for its own port, as on the node.
            idms(
                "open",
                vec![rule("registry.example.com:6000/ns", &["o.local/ns"])],
            ),
            // An unblocked host rule cannot un-block a port of a blocked wildcard's host: the node
            // fails the pull there.
            idms("a", vec![rule("a.redhat.io", &["m.local/a"])]),
        ],
        &RegistrySources::default(),
    );
    let pulls = table
        .pull_sources(&r("registry.example.com:5000/ns/app@D"))
        .unwrap();
    assert_eq!(render(&pulls), [d("✗registry.example.com:5000/ns/app@D")]);
    assert_eq!(
        pulls[0].blocked.as_deref(),
        Some(
            "NeverContactSource in ImageDigestMirrorSet/h (its source registry.example.com covers \
             every port of that host on the node)"
        )
    );
    // Tag references too: blocking is whole-scope (vector 21).
    assert_eq!(
        sources_of(&table, "registry.example.com:5000/ns/app:1"),
        ["✗registry.example.com:5000/ns/app:1"]
    );
    assert_eq!(
        sources_of(&table, "registry.redhat.io:8443/x@D"),
        [d("✗registry.redhat.io:8443/x@D")]
    );
    assert_eq!(
        sources_of(&table, "a.redhat.io:8443/x@D"),
        [d("✗a.redhat.io:8443/x@D")]
    );
    assert_eq!(
        sources_of(&table, "registry.example.com:6000/ns/app@D"),
        [
            d("o.local/ns/app@D"),
            d("registry.example.com:6000/ns/app@D")
        ]
    );
    // Other hosts are untouched.
    assert_eq!(
        sources_of(&table, "registry.example.community:5000/x@D"),
        [d("registry.example.community:5000/x@D")]
    );
}

/// What `resolve` says where we differ from the node: vectors 11, 37 and 43, and nothing for a
/// reference both treat alike.
#[test]
fn departures_from_the_node_are_named_with_their_vector() {
    let table = MirrorTable::new(
        &[
            idms("h", vec![rule("registry.example.com", &["mirror.local/x"])]),
            idms("child", vec![rule("quay.io/a/b", &["d.local/b"])]),
            itms("parent", vec![rule("quay.io/a", &["t.local/a"])]),
            idms("w", vec![rule("*.example.com", &["m.local"])]),
        ],
        &RegistrySources::default(),
    );
    let vectors = |reference: &str| -> Vec<String> {
        table
            .departures(&r(reference))
            .iter()
            .map(|note| {
                let at = note.find("(vector").expect("a vector");
                note[at..].split(')').next().unwrap().to_string() + ")"
            })
            .collect()
    };
    assert_eq!(
        vectors("registry.example.com:5000/ns/app@D"),
        ["(vectors 11, 13)"]
    );
    assert_eq!(vectors("quay.io/a/b/c:1"), ["(vector 37)"]);
    assert_eq!(vectors("a.example.com.example.com/x@D"), ["(vector 43)"]);
    for alike in [
        "registry.example.com/ns/app@D",
        "quay.io/a/x:1",
        "quay.io/a/b/c@D",
        "a.example.com/x@D",
        // A tag reference: the IDMS rule's mirrors do not apply on the node either.
        "registry.example.com:5000/ns/app:1",
    ] {
        assert_eq!(vectors(alike), Vec::<String>::new(), "{alike}");
    }
}

#[test]
fn insecure_registry_flags_name_a_host_on_any_port_or_one_port() {
    let table = MirrorTable::new(
        &[idms("x", vec![rule("quay.io/x", &["m.local:5000/x"])])],
        &scopes(&[], &[], &["quay.io/x/dev"]),
    )
    .with_insecure_registries(&["m.local".into(), "other.local:5000".into()]);
    let pulls = table.pull_sources(&r("quay.io/x/dev/img@D")).unwrap();
    let reasons: Vec<Option<String>> = pulls
        .iter()
        .map(|p| p.insecure.as_ref().map(ToString::to_string))
        .collect();
    assert_eq!(
        reasons,
        [
            Some("--insecure-registry m.local".to_string()),
            Some("image.config insecureRegistries quay.io/x/dev".to_string())
        ]
    );
    assert_eq!(
        sources_of(&table, "other.local:5000/a:1"),
        ["other.local:5000/a:1 (insecure)"]
    );
    assert_eq!(sources_of(&table, "other.local/a:1"), ["other.local/a:1"]);
    assert_eq!(sources_of(&table, "quay.io/x/img:1"), ["quay.io/x/img:1"]);
}

#[test]
fn conflicting_policies_block_and_warn_naming_the_objects() {
    let table = MirrorTable::new(
        &[
            icsp("legacy", vec![rule("quay.io/x", &["i.local/x"])]),
            idms("strict", vec![never("quay.io/x", &["d.local/x"])]),
            itms("loose", vec![rule("quay.io/x", &["t.local/x"])]),
        ],
        &RegistrySources::default(),
    );
    assert_eq!(
        table.warnings(),
        [
            "conflicting mirrorSourcePolicy for quay.io/x: NeverContactSource in \
          ImageDigestMirrorSet/strict, AllowContactingSource (or unset, or an \
          ImageContentSourcePolicy) in ImageTagMirrorSet/loose, ImageContentSourcePolicy/legacy; \
          the node's MCO refuses to render this, here quay.io/x is never contacted"
        ]
    );
    assert_eq!(
        sources_of(&table, "quay.io/x/a:1"),
        [d("t.local/x/a:1"), d("✗quay.io/x/a:1")]
    );

    // Even when the NeverContactSource rule itself is dropped (no mirrors), the conflict
    // blocks: MCO validates before it drops anything.
    let table = MirrorTable::new(
        &[
            idms("empty", vec![never("quay.io/x", &[])]),
            idms("open", vec![allow("quay.io/x", &["m.local/x"])]),
        ],
        &RegistrySources::default(),
    );
    let pulls = table.pull_sources(&r("quay.io/x/a@D")).unwrap();
    assert_eq!(
        pulls[1].blocked.as_deref(),
        Some("conflicting mirrorSourcePolicy for quay.io/x, treated as NeverContactSource")
    );
    assert_eq!(table.warnings().len(), 2, "{:?}", table.warnings());

    // Also when no rule is left at all.
    let table = MirrorTable::new(
        &[
            idms("a", vec![never("quay.io/x", &[])]),
            itms("b", vec![rule("quay.io/x", &[])]),
        ],
        &RegistrySources::default(),
    );
    assert!(!table.is_empty());
    assert_eq!(sources_of(&table, "quay.io/x/a:1"), [d("✗quay.io/x/a:1")]);
}

#[test]
fn agreeing_policies_do_not_warn() {
    let table = MirrorTable::new(
        &[
            idms("a", vec![never("quay.io/x", &["a.local/x"])]),
            itms("b", vec![never("quay.io/x", &["b.local/x"])]),
            idms("c", vec![rule("quay.io/y", &["c.local/y"])]),
            icsp("d", vec![rule("quay.io/y", &["d.local/y"])]),
            itms("e", vec![allow("quay.io/y", &["e.local/y"])]),
        ],
        &RegistrySources::default(),
    );
    assert!(table.warnings().is_empty(), "{:?}", table.warnings());
}

#[test]
fn ignored_and_unrenderable_policies_warn() {
    let table = MirrorTable::new(
        &[
            idms("only-source", vec![never("quay.io/a", &["quay.io/a"])]),
            idms("none", vec![never("quay.io/b", &[])]),
            idms(
                "with-source",
                vec![never("quay.io/c", &["m.local/c", "quay.io/c"])],
            ),
        ],
        &RegistrySources::default(),
    );
    let w = table.warnings();
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w[0].starts_with(
        "ImageDigestMirrorSet/only-source: NeverContactSource for quay.io/a is ignored"
    ));
    assert!(
        w[1].starts_with("ImageDigestMirrorSet/none: NeverContactSource for quay.io/b is ignored")
    );
    assert!(w[2].contains("lists the source among its mirrors"));
    assert_eq!(
        sources_of(&table, "quay.io/c/x@D"),
        [d("m.local/c/x@D"), d("✗quay.io/c/x@D")]
    );
}

#[test]
fn unmatchable_sources_warn_once_naming_the_object() {
    let table = MirrorTable::new(
        &[
            idms(
                "hub",
                vec![rule("index.docker.io/library", &["never.local/b"])],
            ),
            idms(
                "hub",
                vec![rule("index.docker.io/library", &["never.local/b"])],
            ),
            // A Hub namespace, not the busybox image (vector 31): valid, no warning.
            idms("ns", vec![rule("docker.io/busybox", &["never.local/b"])]),
            itms("dotless", vec![rule("myregistry/ns", &["mirror.local/ns"])]),
        ],
        &RegistrySources::default(),
    );
    assert_eq!(
        table.warnings(),
        [
            "ImageDigestMirrorSet/hub: source \"index.docker.io/library\" never matches a \
             reference: references are matched in normalised form, which this never prefixes \
             (it reads as docker.io/library)",
            "ImageTagMirrorSet/dotless: source \"myregistry/ns\" never matches a reference: \
             references are matched in normalised form, which this never prefixes (it reads as \
             docker.io/myregistry/ns)",
        ]
    );
}

#[test]
fn invalid_rewrite_names_the_object_and_the_rule() {
    let table = MirrorTable::new(
        &[
            idms("bare", vec![rule("quay.io/ocp/release", &["mirror.local"])]),
            itms("upper", vec![rule("quay.io/ocp", &["mirror.local/OCP"])]),
            idms("hub", vec![rule("quay.io/hub", &["docker.io"])]),
        ],
        &RegistrySources::default(),
    );
    let err = table.pull_sources(&r("quay.io/ocp/release@D")).unwrap_err();
    assert_eq!(
        err.to_string(),
        d(
            "ImageDigestMirrorSet/bare: mirror rule quay.io/ocp/release → mirror.local rewrites \
           quay.io/ocp/release@D to \"mirror.local@D\", which is not a valid image reference: \
           repository name must be canonical (it would be read as docker.io/library/mirror.local@D)"
        )
    );
    let MirrorError::InvalidRewrite(details) = err;
    assert_eq!(
        (
            details.kind,
            details.name.as_str(),
            details.rule_source.as_str(),
            details.mirror.as_str()
        ),
        (
            MirrorKind::ImageDigestMirrorSet,
            "bare",
            "quay.io/ocp/release",
            "mirror.local"
        )
    );

    let err = table.pull_sources(&r("quay.io/ocp/x:1")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ImageTagMirrorSet/upper: mirror rule quay.io/ocp → mirror.local/OCP rewrites \
         quay.io/ocp/x:1 to \"mirror.local/OCP/x:1\", which is not a valid image reference: \
         repository name must be lowercase"
    );

    // docker.io/x would be read as docker.io/library/x: not what the rule says.
    let err = table.pull_sources(&r("quay.io/hub/x@D")).unwrap_err();
    assert!(
        err.to_string()
            .contains("must be canonical (it would be read as docker.io/library/x@"),
        "{err}"
    );
}

#[test]
fn invalid_rewrite_with_a_port_is_reported_for_the_port_rule() {
    // Vector 13's shape where a port is part of the rule: the port is kept in the source, and
    // the mirror location takes its place, so a bare-host mirror still fails the same way.
    let table = MirrorTable::new(
        &[idms(
            "p",
            vec![rule("registry.example.com:5000/ns/app", &["m.local:5000"])],
        )],
        &RegistrySources::default(),
    );
    let err = table
        .pull_sources(&r("registry.example.com:5000/ns/app@D"))
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("ImageDigestMirrorSet/p")
            && message.contains("registry.example.com:5000/ns/app → m.local:5000"),
        "{message}"
    );
}

#[test]
fn blocked_scopes() {
    let table = MirrorTable::new(
        &[idms(
            "x",
            vec![rule("quay.io/x", &["bad.local:5000/x", "good.local/x"])],
        )],
        &scopes(&[], &["bad.local", "quay.io/x/secret", "*.evil.com"], &[]),
    );
    let pulls = table.pull_sources(&r("quay.io/x/img@D")).unwrap();
    assert_eq!(
        render(&pulls),
        [
            d("✗bad.local:5000/x/img@D"),
            d("good.local/x/img@D"),
            d("quay.io/x/img@D")
        ]
    );
    assert_eq!(
        pulls[0].blocked.as_deref(),
        Some("blockedRegistries scope bad.local")
    );
    // A path scope blocks what is inside it only, mirrors still applying.
    assert_eq!(
        sources_of(&table, "quay.io/x/secret/a@D"),
        [
            d("✗bad.local:5000/x/secret/a@D"),
            d("good.local/x/secret/a@D"),
            d("✗quay.io/x/secret/a@D")
        ]
    );
    assert_eq!(
        sources_of(&table, "quay.io/x/secretive@D")[2],
        d("quay.io/x/secretive@D")
    );
    assert_eq!(
        sources_of(&table, "a.b.evil.com/x:1"),
        ["✗a.b.evil.com/x:1"]
    );
    assert_eq!(sources_of(&table, "evil.com/x:1"), ["evil.com/x:1"]);
}

#[test]
fn allowed_scopes_judge_the_image_name_not_the_mirror() {
    let table = MirrorTable::new(
        &[idms(
            "x",
            vec![rule("quay.io/x", &["mirror.local/x", "other.local/x"])],
        )],
        &scopes(&["quay.io", "*.corp.com"], &[], &[]),
    );
    // As on the node (policy.json sees the reference as written): an allowed image may come from any
    // of its mirrors, allowed or not.
    assert_eq!(
        sources_of(&table, "quay.io/x/img@D"),
        [
            d("mirror.local/x/img@D"),
            d("other.local/x/img@D"),
            d("quay.io/x/img@D")
        ]
    );
    assert_eq!(sources_of(&table, "reg.corp.com/a:1"), ["reg.corp.com/a:1"]);
    let pulls = table.pull_sources(&r("docker.io/a/b:1")).unwrap();
    assert_eq!(render(&pulls), ["✗docker.io/a/b:1"]);
    assert_eq!(
        pulls[0].blocked.as_deref(),
        Some("docker.io/a/b is not in allowedRegistries")
    );
    // Allowed scopes match ports exactly: any-port matching here would allow more than the node.
    assert_eq!(sources_of(&table, "quay.io:443/a:1"), ["✗quay.io:443/a:1"]);
    assert_eq!(
        sources_of(&table, "quay.io:5000/a:1"),
        ["✗quay.io:5000/a:1"]
    );
    // An image outside the list is refused from its mirrors too.
    let table = MirrorTable::new(
        &[idms("y", vec![rule("evil.io/x", &["mirror.local/x"])])],
        &scopes(&["quay.io", "mirror.local"], &[], &[]),
    );
    assert_eq!(
        sources_of(&table, "evil.io/x/img@D"),
        [d("✗mirror.local/x/img@D"), d("✗evil.io/x/img@D")]
    );
}

#[test]
fn blocking_reasons_have_a_precedence() {
    // NeverContactSource, then blockedRegistries, then allowedRegistries.
    let table = MirrorTable::new(
        &[idms("n", vec![never("quay.io/x", &["m.local/x"])])],
        &scopes(&["m.local", "quay.io"], &["quay.io"], &[]),
    );
    let pulls = table.pull_sources(&r("quay.io/x/a@D")).unwrap();
    assert_eq!(pulls[0].blocked, None);
    assert_eq!(
        pulls[1].blocked.as_deref(),
        Some("NeverContactSource in ImageDigestMirrorSet/n")
    );
    let pulls = table.pull_sources(&r("quay.io/y/a@D")).unwrap();
    assert_eq!(
        pulls[0].blocked.as_deref(),
        Some("blockedRegistries scope quay.io")
    );
    let pulls = table.pull_sources(&r("docker.io/y/a@D")).unwrap();
    assert_eq!(
        pulls[0].blocked.as_deref(),
        Some("docker.io/y/a is not in allowedRegistries")
    );
}

#[test]
fn insecure_scopes_nest_and_cover_mirrors() {
    let table = MirrorTable::new(
        &[idms(
            "x",
            vec![rule("quay.io/x", &["plain.local:5000/x", "tls.local/x"])],
        )],
        &scopes(
            &[],
            &[],
            &["plain.local:5000", "quay.io/x/dev", "*.lab.example"],
        ),
    );
    assert_eq!(
        sources_of(&table, "quay.io/x/img@D"),
        [
            d("plain.local:5000/x/img@D (insecure)"),
            d("tls.local/x/img@D"),
            d("quay.io/x/img@D")
        ]
    );
    assert_eq!(
        sources_of(&table, "quay.io/x/dev/team/img@D"),
        [
            d("plain.local:5000/x/dev/team/img@D (insecure)"),
            d("tls.local/x/dev/team/img@D"),
            d("quay.io/x/dev/team/img@D (insecure)")
        ]
    );
    assert_eq!(
        sources_of(&table, "a.b.lab.example/img:1"),
        ["a.b.lab.example/img:1 (insecure)"]
    );
    // Insecure never spreads to another port or to a sibling path.
    assert_eq!(
        sources_of(&table, "plain.local/img:1"),
        ["plain.local/img:1"]
    );
    assert_eq!(
        sources_of(&table, "quay.io/x/devel:1"),
        ["quay.io/x/devel:1"]
    );
}

#[test]
fn display_says_where_a_source_comes_from() {
    let table = MirrorTable::new(
        &[idms(
            "release-mirrors",
            vec![never(
                "quay.io/openshift-release-dev/ocp-release",
                &["mirror.local:5000/ocp4/openshift4"],
            )],
        )],
        &scopes(&[], &[], &["mirror.local:5000"]),
    );
    let lines: Vec<String> = table
        .pull_sources(&r("quay.io/openshift-release-dev/ocp-release@D"))
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            d("mirror.local:5000/ocp4/openshift4@D (mirror of \
               quay.io/openshift-release-dev/ocp-release via ImageDigestMirrorSet/release-mirrors, \
               insecure)"),
            d(
                "quay.io/openshift-release-dev/ocp-release@D (source, blocked: NeverContactSource \
               in ImageDigestMirrorSet/release-mirrors)"
            ),
        ]
    );
    assert_eq!(
        table.pull_sources(&r("busybox:1")).unwrap()[0].to_string(),
        "docker.io/library/busybox:1 (source, no mirror rule)"
    );
}
