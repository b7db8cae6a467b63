//! The registry's config file: distribution reads YAML, and JSON is YAML, so it is written with
//! serde_json, which quotes every path safely.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use super::pki::Pki;
use super::registry::RegistryAuth;
use super::token::{TOKEN_ISSUER, TOKEN_SERVICE, TokenServer};

/// A response header (`http.headers`) carrying a value unique to one start attempt, so the
/// readiness probe knows it reached this registry and not another test's server on the port.
pub(crate) const IDENTITY_HEADER: &str = "X-Harness-Registry";

/// What goes into the registry's config file.
pub(crate) struct Config<'a> {
    pub dir: &'a Path,
    /// TLS with the PKI's server certificate; plain HTTP when None.
    pub pki: Option<&'a Pki>,
    pub port: u16,
    /// Sent back in `IDENTITY_HEADER` on every response.
    pub identity: &'a str,
    pub auth: Option<&'a serde_json::Value>,
    /// The redirect middleware's `baseurl`.
    pub redirect: Option<String>,
}

impl Config<'_> {
    pub(crate) fn render(&self) -> String {
        let port = self.port;
        let mut config = json!({
            "version": "0.1",
            "log": {"level": "warn", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": self.dir.join("storage")},
                "delete": {"enabled": true},
                // Purging stale uploads at startup is pointless in a fresh directory.
                "maintenance": {"uploadpurging": {"enabled": false}},
            },
            "http": {
                "addr": format!("127.0.0.1:{port}"),
                // Signs upload state; set so the registry does not warn and make one up.
                "secret": format!("harness-{}-{port}", std::process::id()),
                "headers": {IDENTITY_HEADER: [self.identity]},
            },
        });
        if let Some(pki) = self.pki {
            config["http"]["tls"] = json!({"certificate": pki.cert_pem(), "key": pki.key_pem()});
        }
        if let Some(auth) = self.auth {
            config["auth"] = auth.clone();
        }
        if let Some(baseurl) = &self.redirect {
            // distribution 2.8 keeps only the scheme and host of `baseurl`: the redirect goes to
            // `<scheme>://<host><path in the storage driver>`, never with a path or query of ours.
            config["middleware"] = json!({"storage": [
                {"name": "redirect", "options": {"baseurl": baseurl}},
            ]});
        }
        serde_json::to_string_pretty(&config).expect("serialize registry config")
    }
}

/// The config's `auth` section, if any; writes the htpasswd file into `dir` for Basic.
pub(crate) fn auth_config(
    auth: &RegistryAuth,
    dir: &Path,
    token_server: Option<&TokenServer>,
    proxy_names: bool,
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
            let realm = if proxy_names {
                token_server.realm().replace("127.0.0.1", "auth.test")
            } else {
                token_server.realm()
            };
            Some(json!({"token": {
                "realm": realm,
                "service": TOKEN_SERVICE,
                "issuer": TOKEN_ISSUER,
                "rootcertbundle": token_server.signing_cert_pem(),
            }}))
        }
    }
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
