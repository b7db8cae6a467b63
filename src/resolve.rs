//! `provider-images resolve`: the plan for each reference — every pull source in order, the rule that put
//! it there, whether it may be contacted, which credential and CAs apply, and the signature policy
//! the node would check it against — without pulling anything.
//! The text form is for an admin debugging a disconnected install; `--format json` is for machines.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cluster::ProxyOrigin;
use crate::images::ImageEntry;
use crate::plan::mirrors::{self, MirrorKind, SourceOrigin};
use crate::plan::{PlannedSource, Planner};
use crate::policy::{RenderedPolicy, SignedIdentity, TrustRoot};
use crate::reference::Reference;
use crate::setup::Setup;
use crate::transport::proxy::Proxies;

#[derive(Serialize)]
pub(crate) struct Report {
    pub(crate) images: Vec<ImageReport>,
    pub(crate) trust: Vec<TrustEntry>,
    #[serde(rename = "skippedCABundles")]
    pub(crate) skipped_ca_bundles: Vec<String>,
    #[serde(rename = "pullSecret")]
    pub(crate) pull_secret: Option<String>,
    /// Where the registries' proxy settings came from.
    #[serde(rename = "proxyFrom")]
    pub(crate) proxy_from: String,
    pub(crate) notes: Vec<String>,
}

#[derive(Serialize)]
pub(crate) struct ImageReport {
    #[serde(rename = "ref")]
    pub(crate) reference: String,
    pub(crate) names: Vec<String>,
    pub(crate) sources: Vec<SourceReport>,
    /// Where the node would pull this reference otherwise, each with its vector.
    #[serde(rename = "differsFromNode", skip_serializing_if = "Vec::is_empty")]
    pub(crate) differs_from_node: Vec<String>,
    #[serde(rename = "signaturePolicy")]
    pub(crate) signature_policy: SignaturePolicyReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// The signature policy scope the reference falls under (signature-policy §3 lookup).
#[derive(Serialize)]
pub(crate) struct SignaturePolicyReport {
    /// `applies`, `none` (no scope: the node accepts the image unsigned) or `unknown` (the
    /// cluster was not read).
    pub(crate) status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scope: Option<String>,
    /// Every requirement of the scope; all must pass.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) requirements: Vec<RequirementReport>,
}

#[derive(Serialize)]
pub(crate) struct RequirementReport {
    /// `ClusterImagePolicy name` or `ImagePolicy namespace/name`.
    pub(crate) object: String,
    #[serde(rename = "rootOfTrust", skip_serializing_if = "Option::is_none")]
    pub(crate) root_of_trust: Option<String>,
    #[serde(rename = "matchPolicy", skip_serializing_if = "Option::is_none")]
    pub(crate) match_policy: Option<String>,
    /// Why the requirement rejects every image under the scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct SourceReport {
    pub(crate) reference: String,
    /// `mirror` or `source`.
    pub(crate) kind: &'static str,
    /// The mirror rule's source, when one matched.
    #[serde(rename = "ruleSource", skip_serializing_if = "Option::is_none")]
    pub(crate) rule_source: Option<String>,
    /// The objects that declared this mirror, as `Kind/name`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) objects: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) blocked: Option<String>,
    pub(crate) insecure: bool,
    /// Why TLS may go unverified (or fall back to plain http) for this source's own registry.
    #[serde(rename = "insecureBecause", skip_serializing_if = "Option::is_none")]
    pub(crate) insecure_because: Option<String>,
    pub(crate) credential: Option<String>,
    /// The proxy (`scheme://host:port`, never credentials) the registry is reached through; null
    /// when direct.
    pub(crate) proxy: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct TrustEntry {
    pub(crate) origin: String,
    pub(crate) certificates: usize,
}

fn kind_name(kind: MirrorKind) -> &'static str {
    match kind {
        MirrorKind::ImageDigestMirrorSet => "ImageDigestMirrorSet",
        MirrorKind::ImageTagMirrorSet => "ImageTagMirrorSet",
        MirrorKind::ImageContentSourcePolicy => "ImageContentSourcePolicy",
    }
}

fn source_report(planned: &PlannedSource, proxies: &Proxies) -> SourceReport {
    let (kind, rule_source, objects) = match &planned.pull.origin {
        SourceOrigin::Mirror { source, objects } => (
            "mirror",
            Some(source.clone()),
            objects
                .iter()
                .map(|(kind, name)| format!("{}/{name}", kind_name(*kind)))
                .collect(),
        ),
        SourceOrigin::Source { matched } => ("source", matched.clone(), Vec::new()),
    };
    SourceReport {
        reference: planned.display(),
        kind,
        rule_source,
        objects,
        blocked: planned.pull.blocked.clone(),
        insecure: planned.pull.insecure.is_some(),
        insecure_because: planned.pull.insecure.as_ref().map(ToString::to_string),
        credential: planned.credential.clone(),
        proxy: proxies
            .for_registry(&planned.source.registry)
            .map(|proxy| proxy.to_string()),
    }
}

fn signature_policy(policy: Option<&RenderedPolicy>, image: &Reference) -> SignaturePolicyReport {
    let Some(policy) = policy else {
        return SignaturePolicyReport {
            status: "unknown",
            scope: None,
            requirements: Vec::new(),
        };
    };
    let Some((scope, requirements)) = policy.lookup(image) else {
        return SignaturePolicyReport {
            status: "none",
            scope: None,
            requirements: Vec::new(),
        };
    };
    let requirements = requirements
        .iter()
        .map(|scoped| {
            let object = scoped.object.to_string();
            match &scoped.requirement {
                Ok(requirement) => RequirementReport {
                    object,
                    root_of_trust: Some(root_of_trust(&requirement.trust)),
                    match_policy: Some(match_policy(&requirement.identity)),
                    error: None,
                },
                Err(error) => RequirementReport {
                    object,
                    root_of_trust: None,
                    match_policy: None,
                    error: Some(crate::error::error_chain(error)),
                },
            }
        })
        .collect();
    SignaturePolicyReport {
        status: "applies",
        scope: Some(scope.to_string()),
        requirements,
    }
}

/// The API's policyType, with what identifies the signer.
fn root_of_trust(trust: &TrustRoot) -> String {
    match trust {
        TrustRoot::PublicKey { rekor_keys, .. } if rekor_keys.is_empty() => "PublicKey".into(),
        TrustRoot::PublicKey { .. } => "PublicKey with Rekor".into(),
        TrustRoot::Fulcio {
            oidc_issuer, email, ..
        } => format!("FulcioCAWithRekor (OIDC issuer {oidc_issuer}, email {email})"),
        TrustRoot::Pki {
            email, hostname, ..
        } => {
            let subject: Vec<String> = [("email", email), ("hostname", hostname)]
                .into_iter()
                .filter_map(|(what, value)| value.as_ref().map(|v| format!("{what} {v}")))
                .collect();
            format!("PKI ({})", subject.join(", "))
        }
    }
}

/// The API's matchPolicy, with its settings.
fn match_policy(identity: &SignedIdentity) -> String {
    match identity {
        SignedIdentity::MatchRepoDigestOrExact => "MatchRepoDigestOrExact".into(),
        SignedIdentity::MatchRepository => "MatchRepository".into(),
        SignedIdentity::ExactRepository(repository) => format!("ExactRepository {repository}"),
        SignedIdentity::RemapIdentity {
            prefix,
            signed_prefix,
        } => format!("RemapIdentity {prefix} -> {signed_prefix}"),
    }
}

pub(crate) fn report(
    entries: &[ImageEntry],
    planner: &Planner,
    setup: &Setup,
    notes: &[String],
    proxy_from: ProxyOrigin,
) -> Report {
    let images = entries
        .iter()
        .map(|entry| {
            let (sources, error) = match planner.plan(&entry.reference) {
                Ok(sources) => (
                    sources
                        .iter()
                        .map(|source| source_report(source, &setup.proxies))
                        .collect(),
                    None,
                ),
                Err(error) => (Vec::new(), Some(crate::error::error_chain(&error))),
            };
            ImageReport {
                reference: entry.reference_text.clone(),
                names: entry.names.clone(),
                sources,
                differs_from_node: planner.table().departures(&entry.reference),
                signature_policy: signature_policy(setup.policy.as_deref(), &entry.reference),
                error,
            }
        })
        .collect();
    let mut all_notes = notes.to_vec();
    all_notes.extend(planner.table().warnings().iter().cloned());
    if let Some(policy) = &setup.policy {
        all_notes.extend(policy.dropped.iter().map(|dropped| {
            format!(
                "{} scope {} ignored: ClusterImagePolicy scope {} covers it (the MCO marks it \
                 Pending)",
                dropped.object, dropped.scope, dropped.covered_by
            )
        }));
    }
    all_notes.extend(
        setup
            .trust
            .departures
            .iter()
            .map(|departure| format!("differs from the node: {departure}")),
    );
    Report {
        images,
        trust: setup
            .trust
            .loaded
            .iter()
            .map(|(origin, certificates)| TrustEntry {
                origin: origin.clone(),
                certificates: *certificates,
            })
            .collect(),
        skipped_ca_bundles: setup.trust.skipped.clone(),
        pull_secret: setup.pull_secret.clone(),
        proxy_from: proxy_from.to_string(),
        notes: all_notes,
    }
}

impl SignaturePolicyReport {
    fn write_text(&self, out: &mut String) {
        match (self.status, &self.scope) {
            ("unknown", _) => {
                let _ = writeln!(out, "  signature policy unknown (no cluster read)");
            }
            (_, None) => {
                let _ = writeln!(out, "  no signature policy applies");
            }
            (_, Some(scope)) => {
                let _ = writeln!(out, "  signature policy: scope {scope}, all required:");
                for requirement in &self.requirements {
                    let what = match (&requirement.error, &requirement.root_of_trust) {
                        (Some(error), _) => format!("rejects every image: {error}"),
                        (None, Some(root)) => format!(
                            "{root}, {}",
                            requirement.match_policy.as_deref().unwrap_or("")
                        ),
                        (None, None) => String::new(),
                    };
                    let _ = writeln!(out, "       {}: {what}", requirement.object);
                }
            }
        }
    }
}

impl Report {
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    pub(crate) fn to_text(&self) -> String {
        let mut out = String::new();
        for image in &self.images {
            let names = if image.names.is_empty() {
                String::new()
            } else {
                format!("  ({})", image.names.join(", "))
            };
            let _ = writeln!(out, "{}{names}", image.reference);
            if let Some(error) = &image.error {
                let _ = writeln!(out, "  error: {error}");
            }
            for departure in &image.differs_from_node {
                let _ = writeln!(out, "  differs from the node: {departure}");
            }
            image.signature_policy.write_text(&mut out);
            for (number, source) in image.sources.iter().enumerate() {
                let mut marks = Vec::new();
                if source.blocked.is_some() {
                    marks.push("BLOCKED");
                }
                if source.insecure {
                    marks.push("insecure");
                }
                let marks = if marks.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", marks.join(", "))
                };
                let _ = writeln!(out, "  {}. {}{marks}", number + 1, source.reference);
                match (source.kind, &source.rule_source) {
                    ("mirror", Some(rule)) => {
                        let _ = writeln!(
                            out,
                            "       mirror of {rule}, from {}",
                            source.objects.join(", ")
                        );
                    }
                    (_, Some(rule)) => {
                        let _ = writeln!(
                            out,
                            "       the source itself (mirrored by the rule for {rule})"
                        );
                    }
                    _ => {
                        let _ = writeln!(out, "       the source itself (no mirror rule matches)");
                    }
                }
                if let Some(why) = &source.blocked {
                    let _ = writeln!(out, "       {}", mirrors::not_contacted(why));
                }
                if let Some(why) = &source.insecure_because {
                    let _ = writeln!(out, "       insecure: yes ({why})");
                }
                let credential = source.credential.as_deref().unwrap_or("none (anonymous)");
                let _ = writeln!(out, "       credentials: {credential}");
                match &source.proxy {
                    Some(proxy) => {
                        let _ = writeln!(out, "       proxy: {proxy}");
                    }
                    None => {
                        let _ = writeln!(out, "       proxy: none (direct)");
                    }
                }
            }
            out.push('\n');
        }
        let _ = writeln!(out, "trusted CAs: the system's roots, plus");
        if self.trust.is_empty() {
            let _ = writeln!(out, "  nothing else");
        }
        for entry in &self.trust {
            let plural = if entry.certificates == 1 { "" } else { "s" };
            let _ = writeln!(
                out,
                "  {}: {} certificate{plural}",
                entry.origin, entry.certificates
            );
        }
        for skipped in &self.skipped_ca_bundles {
            let _ = writeln!(out, "  skipped (no PEM certificate): {skipped}");
        }
        let _ = writeln!(
            out,
            "pull secret: {}",
            self.pull_secret.as_deref().unwrap_or("none")
        );
        let _ = writeln!(out, "proxy from: {}", self.proxy_from);
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}
