//! A bearer-token service for distribution's `auth: token:` mode. distribution verifies a token
//! by its `x5c` header: the leaf certificate must chain to (or be in) `rootcertbundle`, the
//! RS256 signature must verify with the leaf's key, `iss` must equal the configured issuer, `aud`
//! the service, `nbf`/`exp` must hold (60 s leeway), and `access` must grant every action the
//! request needs. So we sign with a self-signed RSA certificate that is itself the bundle.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use tempfile::TempDir;

use super::client::basic_authorization;
use super::pki::{Pki, openssl, write_openssl_cnf};
use super::server::{HttpsServer, Request, Response};
use super::urlenc;

/// The registry's `auth.token.service`, which tokens carry as `aud`.
pub const TOKEN_SERVICE: &str = "harness-registry";
/// The registry's `auth.token.issuer`, which tokens carry as `iss`.
pub const TOKEN_ISSUER: &str = "harness-token-issuer";
/// How long an issued token is valid.
const TOKEN_LIFETIME_SECS: u64 = 300;

/// One request the token service saw.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub path_and_query: String,
    /// Whether an Authorization header was sent at all (right or wrong).
    pub authorization: bool,
    /// The `scope` parameters, decoded.
    pub scopes: Vec<String>,
    /// The status answered: 200 with a token, 401 for missing or wrong credentials.
    pub status: u16,
}

/// HTTPS token service at `realm()`, granting pull and push on every repository asked for to
/// one user. Stopped on Drop.
pub struct TokenServer {
    server: HttpsServer,
    dir: TempDir,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    identity_token: String,
}

fn identity_token(user: &str, pass: &str) -> String {
    format!("identity-{user}-{pass}")
}

impl TokenServer {
    pub fn start(pki: &Pki, user: &str, pass: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("harness-token-")
            .tempdir()
            .expect("temp dir for token service");
        write_openssl_cnf(dir.path());
        openssl(
            dir.path(),
            "req -x509 -config openssl.cnf -extensions signer_ext -newkey rsa:2048 -nodes \
             -keyout signer.key -out signer.pem -days 2 -subj /CN=harness-token-signer",
            b"",
        );
        let issuer = Issuer {
            dir: dir.path().to_owned(),
            x5c: STANDARD.encode(
                CertificateDer::from_pem_file(dir.path().join("signer.pem"))
                    .expect("parse signing cert"),
            ),
            expected_authorization: basic_authorization(user, pass),
            expected_refresh_token: identity_token(user, pass),
            subject: user.to_owned(),
        };
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let server = HttpsServer::start(pki, move |request| {
            let (record, response) = issuer.handle(request);
            seen.lock().unwrap().push(record);
            response
        });
        TokenServer {
            server,
            dir,
            requests,
            identity_token: identity_token(user, pass),
        }
    }

    /// The URL for the registry's `auth.token.realm`.
    pub fn realm(&self) -> String {
        self.server.url("/token")
    }

    /// The identity (refresh) token this service accepts for the user, as a pull secret's
    /// `identitytoken` carries one.
    pub fn identity_token(&self) -> String {
        self.identity_token.clone()
    }

    /// The certificate for the registry's `auth.token.rootcertbundle`.
    pub fn signing_cert_pem(&self) -> PathBuf {
        self.dir.path().join("signer.pem")
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Forgets the requests so far, e.g. the harness's own pushes before the binary runs.
    pub fn clear_requests(&self) {
        self.requests.lock().unwrap().clear();
    }
}

/// What the request handler needs; lives on the server thread.
struct Issuer {
    dir: PathBuf,
    /// The signing certificate, DER in standard base64 as JWS `x5c` wants it.
    x5c: String,
    expected_authorization: String,
    expected_refresh_token: String,
    subject: String,
}

impl Issuer {
    fn handle(&self, request: &Request) -> (TokenRequest, Response) {
        let authorization = request.header("authorization");
        // A POST is an OAuth2 grant (form body); a GET carries its parameters in the query.
        let parameters = if request.method == "POST" {
            urlenc::query_pairs(&format!("?{}", String::from_utf8_lossy(&request.body)))
        } else {
            urlenc::query_pairs(&request.path_and_query)
        };
        let parameter = |name: &str| {
            parameters
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        let scopes: Vec<String> = parameters
            .iter()
            .filter(|(name, _)| name == "scope")
            // One parameter may hold several space-separated scopes.
            .flat_map(|(_, value)| {
                value
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        let path = request.path_and_query.split('?').next().unwrap_or_default();
        let response = if path != "/token" || !matches!(request.method.as_str(), "GET" | "POST") {
            Response::new(404)
        } else if request.method == "POST" {
            let granted = parameter("grant_type") == Some("refresh_token")
                && parameter("refresh_token") == Some(self.expected_refresh_token.as_str());
            if granted {
                Response::json(
                    200,
                    &json!({"access_token": self.sign(&scopes), "expires_in": TOKEN_LIFETIME_SECS}),
                )
            } else {
                Response::json(400, &json!({"error": "invalid_grant"}))
            }
        } else if authorization != Some(self.expected_authorization.as_str()) {
            Response::new(401).header("www-authenticate", "Basic realm=\"harness-token\"")
        } else {
            let token = self.sign(&scopes);
            Response::json(
                200,
                &json!({"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME_SECS}),
            )
        };
        let record = TokenRequest {
            path_and_query: request.path_and_query.clone(),
            authorization: authorization.is_some(),
            scopes,
            status: response.status,
        };
        (record, response)
    }

    /// A compact JWS (RS256) granting pull and push on each repository scope; other scope types
    /// (e.g. `registry:catalog:*`) are left out, so the registry denies them.
    fn sign(&self, scopes: &[String]) -> String {
        static JTI: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let access: Vec<_> = scopes
            .iter()
            .filter_map(|scope| repository_of(scope))
            .map(|name| json!({"type": "repository", "name": name, "actions": ["pull", "push"]}))
            .collect();
        let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let claims = json!({
            "iss": TOKEN_ISSUER,
            "sub": self.subject,
            "aud": TOKEN_SERVICE,
            "exp": now + TOKEN_LIFETIME_SECS,
            "nbf": now,
            "iat": now,
            "jti": format!("{}-{now}-{}", std::process::id(), JTI.fetch_add(1, Ordering::Relaxed)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        // RS256 is RSASSA-PKCS1-v1_5 over SHA-256, which is what `dgst -sign` with an RSA key does.
        let signature = openssl(
            &self.dir,
            "dgst -sha256 -sign signer.key",
            signing_input.as_bytes(),
        );
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// The repository name in `repository:<name>:<actions>`; the name sits between the first and the
/// last colon.
fn repository_of(scope: &str) -> Option<&str> {
    let rest = scope.strip_prefix("repository:")?;
    rest.rsplit_once(':').map(|(name, _)| name)
}
