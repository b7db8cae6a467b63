//! Running `provider-images extract` against a test registry and reading what it published.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::registry::Registry;
use super::run::{Run, RunOutput};

/// One `extract` invocation: images.json, pull secret and CA files live in its own temp dir.
pub struct Extract {
    dir: tempfile::TempDir,
    images: serde_json::Map<String, Value>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// How the binary reads the cluster: `--no-cluster` unless a test says otherwise.
    cluster: Vec<OsString>,
}

impl Default for Extract {
    fn default() -> Self {
        Extract::new()
    }
}

impl Extract {
    pub fn new() -> Self {
        Extract {
            dir: tempfile::tempdir().expect("temp dir"),
            images: serde_json::Map::new(),
            args: Vec::new(),
            env: Vec::new(),
            cluster: vec!["--no-cluster".into()],
        }
    }

    /// Reads the cluster from a directory of dumps.
    pub fn cluster_dir(mut self, dir: &Path) -> Self {
        self.cluster = vec!["--cluster-dir".into(), dir.into()];
        self
    }

    /// Reads the cluster from the API server a kubeconfig names (kube's defaults, via KUBECONFIG).
    pub fn kubeconfig(mut self, kubeconfig: &Path) -> Self {
        self.cluster = Vec::new();
        self.env("KUBECONFIG", kubeconfig)
    }

    /// Trusts the registry's CA and uses its credentials (the usual set-up).
    pub fn registry(self, registry: &Registry) -> Self {
        self.trust(registry).credentials(registry)
    }

    pub fn trust(self, registry: &Registry) -> Self {
        let ca = registry.ca_pem();
        self.arg("--ca-file").arg(ca)
    }

    pub fn credentials(self, registry: &Registry) -> Self {
        let json = registry.docker_config_json();
        self.pull_secret(&json)
    }

    /// The registry's credentials, filed under `host` (the registry under another name).
    pub fn credentials_for(self, registry: &Registry, host: &str) -> Self {
        let json = registry.docker_config_json_for(host);
        self.pull_secret(&json)
    }

    fn pull_secret(self, json: &str) -> Self {
        let path = self
            .dir
            .path()
            .join(format!("pull-secret-{}.json", self.args.len()));
        std::fs::write(&path, json).expect("write pull secret");
        self.arg("--pull-secret").arg(path)
    }

    pub fn image(mut self, name: &str, reference: &str) -> Self {
        self.images
            .insert(name.to_string(), Value::String(reference.to_string()));
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn images_json_path(&self) -> PathBuf {
        self.dir.path().join("images.json")
    }

    /// Runs `extract` into `out`.
    pub fn run(&self, out: &Path) -> RunOutput {
        self.command(out).run()
    }

    /// Writes images.json and returns the `extract` command line into `out`, for a
    /// test that starts it itself (`Run::spawn`, to signal it) or sets a timeout. The files it
    /// names live in this `Extract`'s temp dir: keep the `Extract` until the run is over.
    pub fn command(&self, out: &Path) -> Run {
        let images_json = self.images_json_path();
        std::fs::write(&images_json, serde_json::to_vec(&self.images).unwrap())
            .expect("write images.json");
        let mut run = Run::new()
            .arg("extract")
            .args(self.cluster.iter().cloned())
            .arg("--log-format")
            .arg("json")
            .arg("--images-json")
            .arg(images_json)
            .arg("--output")
            .arg(out)
            .args(self.args.iter().cloned());
        for (name, value) in &self.env {
            run = run.env(name, value);
        }
        run
    }
}

/// `<out>/index.json`, read through the visible link.
pub fn read_index(out: &Path) -> Value {
    let bytes = std::fs::read(out.join("index.json")).expect("index.json is published");
    serde_json::from_slice(&bytes).expect("index.json is JSON")
}

/// The index.json entry for the ref as written in images.json.
pub fn index_image<'a>(index: &'a Value, reference: &str) -> &'a Value {
    index["images"]
        .as_array()
        .expect("images is an array")
        .iter()
        .find(|image| image["ref"] == reference)
        .unwrap_or_else(|| panic!("{reference} not in index.json: {index:#}"))
}

/// A file of an image's subtree, read through the visible links.
pub fn read_subtree_file(out: &Path, image: &Value, path: &str) -> Vec<u8> {
    let volume = image["volume"].as_str().expect("volume");
    std::fs::read(out.join(volume).join("capi-operator-manifests").join(path))
        .unwrap_or_else(|e| panic!("{volume}/capi-operator-manifests/{path}: {e}"))
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Every entry of `dir`, recursively, with file contents and link targets: to compare trees.
pub fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".into()
            } else {
                sha256_hex(&std::fs::read(&path).unwrap())
            };
            entries.push((name, what));
        }
    }
    entries.sort();
    entries
}
