//! A real CNCF distribution registry (`docker-registry serve`) per test: TLS from the test PKI,
//! storage in a temp dir, optional htpasswd or token auth. Killed on Drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use tempfile::TempDir;

use super::client::{Client, HttpResponse};
use super::image::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use super::pki::Pki;
use super::token::{TOKEN_ISSUER, TOKEN_SERVICE, TokenServer};

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
}

pub struct Registry {
    // Declared first so it is dropped first: the process dies before its directory goes.
    process: KillOnDrop,
    port: u16,
    pki: Pki,
    credentials: Option<(String, String)>,
    token_server: Option<TokenServer>,
    /// Authenticated as the configured user, for pushes and reads.
    client: Client,
    dir: TempDir,
}

impl Registry {
    /// Starts a registry and waits until `GET /v2/` answers over TLS (200 or 401); panics with
    /// the registry's log if it does not within 10 s.
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
        let auth = auth_config(&opts.auth, dir.path(), token_server.as_ref());
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
        let config_path = dir.path().join("config.yml");
        let log_path = dir.path().join("registry.log");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let config = config(dir.path(), &pki, port, auth.as_ref());
            std::fs::write(&config_path, config).expect("write registry config");
            let mut process = spawn_registry(&config_path, &log_path);
            match wait_ready(&mut process, port, &pki, &log_path) {
                Ready::Yes => {
                    return Registry {
                        process,
                        port,
                        pki,
                        credentials,
                        token_server,
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

    /// `https://127.0.0.1:<port><path>`; `path` starts with '/'.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.host())
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
        let auths = match self.credentials() {
            Some((user, pass)) => json!({self.host(): {
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

/// Waits until the registry on `port` answers `GET /v2/` over TLS with 200 or 401.
fn wait_ready(process: &mut KillOnDrop, port: u16, pki: &Pki, log: &Path) -> Ready {
    // Anonymous: 401 counts as up, and no token flow is needed to see that.
    let probe = Client::new(&pki.ca_pem());
    let url = format!("https://127.0.0.1:{port}/v2/");
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = process.0.try_wait().expect("poll registry") {
            let log = read_log(log);
            if log.contains("address already in use") {
                return Ready::PortTaken;
            }
            panic!("registry exited ({status}) during startup; log:\n{log}");
        }
        // Another test's server may hold the port until ours binds; it fails our CA check.
        let answer = probe.try_request("GET", &url, &[], Vec::new());
        if matches!(answer, Ok(response) if response.status == 200 || response.status == 401) {
            return Ready::Yes;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "registry on port {port} not ready within {START_TIMEOUT:?}; log:\n{}",
        read_log(log)
    );
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

/// The config's `auth` section, if any; writes the htpasswd file into `dir` for Basic.
fn auth_config(
    auth: &RegistryAuth,
    dir: &Path,
    token_server: Option<&TokenServer>,
) -> Option<serde_json::Value> {
    match auth {
        RegistryAuth::Anonymous => None,
        RegistryAuth::Basic { user, pass } => {
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, bcrypt_htpasswd(user, pass)).expect("write htpasswd");
            Some(json!({"htpasswd": {"realm": "harness-registry", "path": htpasswd}}))
        }
        RegistryAuth::Token { .. } => {
            let token_server = token_server.expect("token auth needs its token server");
            Some(json!({"token": {
                "realm": token_server.realm(),
                "service": TOKEN_SERVICE,
                "issuer": TOKEN_ISSUER,
                "rootcertbundle": token_server.signing_cert_pem(),
            }}))
        }
    }
}

/// distribution reads YAML, and JSON is YAML: serde_json quotes every path safely.
fn config(dir: &Path, pki: &Pki, port: u16, auth: Option<&serde_json::Value>) -> String {
    let mut config = json!({
        "version": "0.1",
        "log": {"level": "warn", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": dir.join("storage")},
            "delete": {"enabled": true},
            // Purging stale uploads at startup is pointless in a fresh directory.
            "maintenance": {"uploadpurging": {"enabled": false}},
        },
        "http": {
            "addr": format!("127.0.0.1:{port}"),
            // Signs upload state; set so the registry does not warn and make one up.
            "secret": format!("harness-{}-{port}", std::process::id()),
            "tls": {"certificate": pki.cert_pem(), "key": pki.key_pem()},
        },
    });
    if let Some(auth) = auth {
        config["auth"] = auth.clone();
    }
    serde_json::to_string_pretty(&config).expect("serialize registry config")
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

/// One `user:bcrypt-hash` line; distribution's htpasswd backend accepts bcrypt only.
fn bcrypt_htpasswd(user: &str, pass: &str) -> Vec<u8> {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .expect("run htpasswd (apache2-utils)");
    assert!(
        out.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
