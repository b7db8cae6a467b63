//! A real CNCF distribution registry (`docker-registry serve`) per test: TLS from the test PKI
//! (or plain HTTP), storage in a temp dir, optional htpasswd or token auth, optionally blobs
//! redirected to a store on another origin. Killed on Drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use tempfile::TempDir;

use super::blob_store::BlobStore;
use super::client::{Client, HttpResponse};
use super::image::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use super::pki::Pki;
use super::registry_config::{Config, IDENTITY_HEADER, auth_config};
use super::token::TokenServer;

/// How long the registry gets to answer `/v2/`; it normally takes well under a second.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Tries with a fresh port when another process grabbed ours between probe and bind.
const PORT_ATTEMPTS: usize = 5;
/// What a client must accept to be served each kind of manifest: distribution 2.8 answers 404
/// for an OCI manifest or index the Accept header does not name.
const MANIFEST_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// How clients authenticate to the registry.
#[derive(Clone, Debug, Default)]
pub enum RegistryAuth {
    #[default]
    Anonymous,
    /// `auth.htpasswd` with one bcrypt user.
    Basic { user: String, pass: String },
    /// `auth.token`, with a `TokenServer` that the registry owns.
    Token { user: String, pass: String },
}

#[derive(Clone, Default)]
pub struct RegistryOpts {
    /// The PKI for the registry's TLS; a fresh one when None. Share one to serve several
    /// registries under a single CA.
    pub pki: Option<Pki>,
    pub auth: RegistryAuth,
    /// Plain HTTP instead of TLS (the PKI is then unused by the registry).
    pub plain_http: bool,
    /// Blob GETs answer 307 to a `BlobStore` the registry owns (storage middleware `redirect`).
    pub redirect_blobs: bool,
    /// The token realm and the blob store are named `auth.test` and `blobs.test`, names only the
    /// test proxy resolves, instead of 127.0.0.1 (which a client never proxies).
    pub proxy_names: bool,
}

impl RegistryOpts {
    pub fn basic_auth(mut self, user: &str, pass: &str) -> Self {
        self.auth = RegistryAuth::Basic {
            user: user.to_owned(),
            pass: pass.to_owned(),
        };
        self
    }

    pub fn token_auth(mut self, user: &str, pass: &str) -> Self {
        self.auth = RegistryAuth::Token {
            user: user.to_owned(),
            pass: pass.to_owned(),
        };
        self
    }

    pub fn pki(mut self, pki: &Pki) -> Self {
        self.pki = Some(pki.clone());
        self
    }

    /// Serve plain HTTP, as a registry reached with `--insecure-registry` may.
    pub fn plain_http(mut self) -> Self {
        self.plain_http = true;
        self
    }

    /// Redirect blob downloads to a `BlobStore` on another port (same PKI), as registries
    /// backed by object storage do; see `Registry::blob_store`.
    pub fn redirect_blobs(mut self) -> Self {
        self.redirect_blobs = true;
        self
    }

    /// Name the token realm and the blob store with the test proxy's names (`ProxyServer`).
    pub fn proxy_names(mut self) -> Self {
        self.proxy_names = true;
        self
    }
}

pub struct Registry {
    // Declared first so it is dropped first: the process dies before its directory goes.
    process: KillOnDrop,
    scheme: &'static str,
    port: u16,
    pki: Pki,
    credentials: Option<(String, String)>,
    token_server: Option<TokenServer>,
    blob_store: Option<BlobStore>,
    /// Authenticated as the configured user, for pushes and reads.
    client: Client,
    dir: TempDir,
}

impl Registry {
    /// Starts a registry and waits until `GET /v2/` answers (200 or 401); panics with the
    /// registry's log if it does not within 10 s.
    pub fn start(opts: RegistryOpts) -> Self {
        let pki = opts.pki.unwrap_or_else(Pki::new);
        let dir = tempfile::Builder::new()
            .prefix("harness-registry-")
            .tempdir()
            .expect("temp dir for registry");
        let token_server = match &opts.auth {
            RegistryAuth::Token { user, pass } => Some(TokenServer::start(&pki, user, pass)),
            _ => None,
        };
        let auth = auth_config(
            &opts.auth,
            dir.path(),
            token_server.as_ref(),
            opts.proxy_names,
        );
        let blob_store = opts
            .redirect_blobs
            .then(|| BlobStore::start(&pki, &dir.path().join("storage")));
        let scheme = if opts.plain_http { "http" } else { "https" };
        let credentials = match opts.auth {
            RegistryAuth::Anonymous => None,
            RegistryAuth::Basic { user, pass } | RegistryAuth::Token { user, pass } => {
                Some((user, pass))
            }
        };
        let client = match &credentials {
            None => Client::new(&pki.ca_pem()),
            Some((user, pass)) => Client::new(&pki.ca_pem()).with_credentials(user, pass),
        };
        // Anonymous: 401 counts as up, and no token flow is needed to see that.
        let probe_client = Client::new(&pki.ca_pem());
        let config_path = dir.path().join("config.yml");
        let log_path = dir.path().join("registry.log");
        for attempt in 0..PORT_ATTEMPTS {
            let port = free_port();
            let identity = format!("{}-{attempt}", dir_name(dir.path()));
            let config = Config {
                dir: dir.path(),
                pki: (!opts.plain_http).then_some(&pki),
                port,
                identity: &identity,
                auth: auth.as_ref(),
                redirect: blob_store.as_ref().map(|store| {
                    let url = store.base_url();
                    if opts.proxy_names {
                        url.replace("127.0.0.1", "blobs.test")
                    } else {
                        url
                    }
                }),
            };
            std::fs::write(&config_path, config.render()).expect("write registry config");
            let mut process = spawn_registry(&config_path, &log_path);
            let probe = Probe {
                url: format!("{scheme}://127.0.0.1:{port}/v2/"),
                identity: &identity,
                client: &probe_client,
            };
            match wait_ready(&mut process, &probe, &log_path) {
                Ready::Yes => {
                    return Registry {
                        process,
                        scheme,
                        port,
                        pki,
                        credentials,
                        token_server,
                        blob_store,
                        client,
                        dir,
                    };
                }
                // Dropping `process` kills it; the next attempt overwrites config and log.
                Ready::PortTaken => {}
            }
        }
        panic!("registry: no free port after {PORT_ATTEMPTS} attempts");
    }

    /// `127.0.0.1:<port>`, as an image reference's registry host.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `<name>:<port>`: this registry under another name, e.g. one only the test proxy resolves.
    pub fn host_named(&self, name: &str) -> String {
        format!("{name}:{}", self.port)
    }

    /// `https://127.0.0.1:<port><path>` (`http://` for a plain-HTTP registry); `path` starts
    /// with '/'.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.host())
    }

    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The CA a client must trust to talk to this registry.
    pub fn ca_pem(&self) -> PathBuf {
        self.pki.ca_pem()
    }

    /// The configured user and password (Basic or token auth).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(user, pass)| (user.as_str(), pass.as_str()))
    }

    /// A `.dockerconfigjson` holding this registry's credentials (empty `auths` when it has
    /// none), for the binary's `--pull-secret`.
    pub fn docker_config_json(&self) -> String {
        self.docker_config_json_for(&self.host())
    }

    /// The same, with the credentials filed under `host` (this registry under another name).
    pub fn docker_config_json_for(&self, host: &str) -> String {
        let auths = match self.credentials() {
            Some((user, pass)) => json!({host: {
                "auth": STANDARD.encode(format!("{user}:{pass}")),
            }}),
            None => json!({}),
        };
        json!({ "auths": auths }).to_string()
    }

    /// Present when the registry uses token auth.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token_server.as_ref()
    }

    /// Where blob downloads are redirected, with `RegistryOpts::redirect_blobs`.
    pub fn blob_store(&self) -> Option<&BlobStore> {
        self.blob_store.as_ref()
    }

    /// `storage.filesystem.rootdirectory`.
    pub fn storage_root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:<hex>`); overwrite it to
    /// serve a blob that no longer matches its digest.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
        self.storage_root()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The registry's stdout and stderr so far (warnings, errors and the access log).
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("registry.log"))
    }

    /// A client authenticated as the configured user (anonymous for an open registry).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A client that never authenticates.
    pub fn anonymous_client(&self) -> Client {
        Client::new(&self.ca_pem())
    }

    /// GET a manifest by tag or digest as the configured user, accepting every manifest type.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> HttpResponse {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        self.client.request(
            "GET",
            &url,
            &[("accept", &MANIFEST_TYPES.join(", "))],
            Vec::new(),
        )
    }

    /// GET a blob as the configured user.
    pub fn get_blob(&self, repo: &str, digest: &str) -> HttpResponse {
        self.client
            .get(&self.url(&format!("/v2/{repo}/blobs/{digest}")))
    }
}

enum Ready {
    Yes,
    PortTaken,
}

/// How to tell that our registry is up: `GET url` answers 200 or 401 carrying our identity.
struct Probe<'a> {
    url: String,
    identity: &'a str,
    client: &'a Client,
}

/// Waits until the registry answers the probe.
fn wait_ready(process: &mut KillOnDrop, probe: &Probe, log: &Path) -> Ready {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = process.0.try_wait().expect("poll registry") {
            let log = read_log(log);
            if log.contains("address already in use") {
                return Ready::PortTaken;
            }
            panic!("registry exited ({status}) during startup; log:\n{log}");
        }
        // Another test's server may hold the port until ours binds: it fails our CA check
        // (TLS) or lacks our identity header (plain HTTP).
        let answer = probe.client.try_request("GET", &probe.url, &[], Vec::new());
        if matches!(answer, Ok(response)
            if (response.status == 200 || response.status == 401)
                && response.header(IDENTITY_HEADER) == Some(probe.identity))
        {
            return Ready::Yes;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "registry at {} not ready within {START_TIMEOUT:?}; log:\n{}",
        probe.url,
        read_log(log)
    );
}

/// The temp dir's own name, unique on this machine while it exists.
fn dir_name(dir: &Path) -> String {
    let name = dir.file_name().expect("temp dir has a name");
    name.to_string_lossy().into_owned()
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The registry process; killed and reaped when dropped, including on a panicking test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_registry(config: &Path, log: &Path) -> KillOnDrop {
    let log = File::create(log).expect("create registry log");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .expect("spawn docker-registry (is it installed?)");
    KillOnDrop(child)
}

/// A port that was free a moment ago. The registry binds it itself, so another process may
/// take it first; `start` then retries with a new one.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}
