//! The command line (the design's contract) and the parsers for its values.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use thiserror::Error;

use crate::time::parse_duration;

#[derive(Debug, Parser)]
#[command(
    name = "provider-images",
    version,
    about = "Extract CAPI provider manifests from provider images"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull every image of images.json and publish their capi-operator-manifests/ trees with index.json.
    Extract(ExtractArgs),
    /// Print where each reference would be pulled from, and with what, without pulling anything.
    Resolve(ResolveArgs),
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The images to resolve, as for extract.
    #[arg(long, value_name = "FILE|DIR")]
    pub images_json: Option<PathBuf>,
    /// Image references to resolve (instead of --images-json or the cluster's list).
    #[arg(value_name = "REF", conflicts_with = "images_json")]
    pub references: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The images to pull: a flat JSON object {"component-name": "image-ref", ...}, or a mounted
    /// ConfigMap (its images.json, else one reference per key); default: the cluster's (--namespace).
    #[arg(long, env = "IMAGES_JSON", value_name = "FILE|DIR")]
    pub images_json: Option<PathBuf>,
    /// Where the tree is published (may be a mount point).
    #[arg(long, env = "PROVIDER_IMAGE_DIR", value_name = "DIR")]
    pub output: PathBuf,
    /// Images in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Limit for the whole run, e.g. 10m, 90s.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Largest file written under the subtree, e.g. 64MiB.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub max_file_size: u64,
    /// Most bytes written under the subtree per image.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub max_image_size: u64,
    /// Never use TOC-based partial pulls (zstd:chunked, eStargz): download every layer whole.
    #[arg(long)]
    pub no_partial: bool,
    /// Keep each layer's contribution (and configs and manifests) here, by digest, for later runs.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Where the kubelet reads the termination message (at most 4 KiB is written).
    #[arg(long, value_name = "FILE")]
    pub termination_message_path: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// A .dockerconfigjson, or a Secret manifest holding one.
    #[arg(long, value_name = "FILE")]
    pub pull_secret: Option<PathBuf>,
    /// Extra PEM roots (repeatable), added to the system's.
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_files: Vec<PathBuf>,
    /// Plain http or unverified TLS for this registry only (repeatable): HOST alone covers every port of
    /// that host, HOST:PORT that port only. A token realm or redirect on another host is still verified.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Which manifest of an index to use: OS/ARCH[/VARIANT]; default the running platform.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Read the cluster's objects from a directory of dumps (`oc get -o yaml` files, must-gather trees)
    /// instead of the API.
    #[arg(long, value_name = "DIR", conflicts_with = "no_cluster")]
    pub cluster_dir: Option<PathBuf>,
    /// Read nothing from a cluster (--pull-secret and --ca-file still apply).
    #[arg(long)]
    pub no_cluster: bool,
    /// Where the operator's images ConfigMaps are read (cluster-capi-operator-images key images.json,
    /// else capi-installer-images) when no list is given; never the kubeconfig context's namespace.
    #[arg(long, value_name = "NAMESPACE", default_value = crate::cluster::DEFAULT_NAMESPACE, value_parser = parse_namespace)]
    pub namespace: String,
    /// Egress proxy (http:// or https://, optionally user:password@) for registries and the
    /// cluster API; replaces HTTPS_PROXY and HTTP_PROXY.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Comma-separated hosts, .domains, IPs and CIDRs reached without the proxy; replaces NO_PROXY.
    #[arg(long, value_name = "LIST")]
    pub no_proxy: Option<String>,
    /// text on a terminal, json otherwise.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A flag's value that its parser refuses (clap shows it after naming the flag).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FlagValueError {
    #[error("invalid namespace {0:?} (a DNS label)")]
    Namespace(String),
    #[error("invalid size {0:?} (use e.g. 64MiB, 1GiB, 4096)")]
    Size(String),
}

/// A namespace name: a DNS label (lowercase letters, digits and '-', at most 63).
pub fn parse_namespace(text: &str) -> Result<String, FlagValueError> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = text.len() <= 63
        && text.starts_with(ok)
        && text.ends_with(ok)
        && text.chars().all(|c| ok(c) || c == '-');
    if valid {
        Ok(text.to_string())
    } else {
        Err(FlagValueError::Namespace(text.to_string()))
    }
}

/// `1024`, `64KiB`, `64MiB`, `1GiB` (also `K`/`M`/`G` and `KB`/`MB`/`GB`, read as powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, FlagValueError> {
    let bad = || FlagValueError::Size(text.to_string());
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits].parse().map_err(|_| bad())?;
    let multiplier: u64 = match &text[digits..] {
        "" | "B" => 1,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        "K" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    number.checked_mul(multiplier).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        for bad in ["", "MiB", "1TiB", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_parses() {
        let cli = Cli::try_parse_from([
            "provider-images",
            "extract",
            "--images-json",
            "i.json",
            "--output",
            "/out",
            "--no-cluster",
            "--ca-file",
            "a.pem",
            "--ca-file",
            "b.pem",
            "--platform",
            "linux/arm64",
            "--proxy",
            "http://proxy:3128",
            "--no-proxy",
            ".internal,10.0.0.0/8",
        ])
        .unwrap();
        let Command::Extract(args) = cli.command else {
            panic!("extract expected")
        };
        assert_eq!(args.common.ca_files.len(), 2);
        assert_eq!(args.common.proxy.as_deref(), Some("http://proxy:3128"));
        assert_eq!(
            args.common.no_proxy.as_deref(),
            Some(".internal,10.0.0.0/8")
        );
        assert_eq!(args.concurrency, 4);
        assert_eq!(args.max_file_size, 64 << 20);
        assert_eq!(args.timeout, Duration::from_secs(600));
        assert!(!args.no_partial, "partial pulls are on by default");
    }

    #[test]
    fn resolve_takes_references_or_an_images_json() {
        let cli = Cli::try_parse_from([
            "provider-images",
            "resolve",
            "quay.io/a/b:c",
            "--cluster-dir",
            "/dump",
        ])
        .unwrap();
        let Command::Resolve(args) = cli.command else {
            panic!("resolve expected")
        };
        assert_eq!(args.references, ["quay.io/a/b:c"]);
        assert_eq!(args.format, ReportFormat::Text);
        // Without a list or references, the cluster's list (issue 15 item 3).
        let cli = Cli::try_parse_from(["provider-images", "resolve"]).unwrap();
        let Command::Resolve(args) = cli.command else {
            panic!("resolve expected")
        };
        assert!(args.images_json.is_none() && args.references.is_empty());
        assert_eq!(args.common.namespace, "openshift-cluster-api-operator");
        for bad in ["", "Upper", "a/b", "-a", "a-"] {
            assert!(
                Cli::try_parse_from(["provider-images", "resolve", "--namespace", bad]).is_err(),
                "{bad:?}"
            );
        }
        assert!(
            Cli::try_parse_from([
                "provider-images",
                "resolve",
                "a/b:c",
                "--cluster-dir",
                "/d",
                "--no-cluster"
            ])
            .is_err(),
            "one cluster source"
        );
    }
}
