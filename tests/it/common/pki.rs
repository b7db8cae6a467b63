//! Test PKI made with the `openssl` CLI: a CA and a server certificate for 127.0.0.1/localhost,
//! and for the `.test` names the test proxy resolves (see `proxy::PROXY_NAMES`), and for 0.0.0.0:
//! Linux connects that address to 127.0.0.1, yet a client does not count it as loopback, so it
//! can be reached directly or through a proxy depending on NO_PROXY.
//! Every `Pki::new()` is an independent CA, so a second one is the "unknown CA" for the first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use tempfile::TempDir;

/// An openssl config of our own, so the result does not depend on the system's openssl.cnf
/// (whose default `v3_ca` section would clash with the extensions we ask for).
const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:0.0.0.0, DNS:localhost, DNS:registry.test, DNS:mirror.test, DNS:auth.test, DNS:blobs.test, DNS:api.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[self_signed_ext]
basicConstraints = critical, CA:TRUE
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
[signer_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
# `openssl ca`, only to sign with chosen dates (`req -x509` takes only a positive -days).
[ca]
default_ca = dated
[dated]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any_name
unique_subject = no
[any_name]
commonName = supplied
";

/// A new EC P-256 key: generated in milliseconds, where RSA takes a good fraction of a second.
const EC_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

/// A CA plus a server certificate it signed. Cheap to clone: the files live as long as any clone.
#[derive(Clone)]
pub struct Pki {
    dir: Arc<TempDir>,
}

impl Pki {
    /// Makes a fresh CA (EC P-256, fast to generate) and a server cert with
    /// SANs IP:127.0.0.1, DNS:localhost and the proxy's `.test` names, signed by it.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("harness-pki-")
            .tempdir()
            .expect("temp dir for PKI");
        let d = dir.path();
        write_openssl_cnf(d);
        // A distinct subject per CA: with a shared name, a verifier would take an unrelated CA
        // for the issuer and report a bad signature instead of an unknown issuer.
        let ca_name = d.file_name().expect("temp dir name").to_string_lossy();
        openssl(
            d,
            &format!(
                "req -x509 -config openssl.cnf -extensions ca_ext {EC_KEY} -keyout ca.key \
                 -out ca.pem -days 2 -subj /CN=harness-test-ca-{ca_name}"
            ),
            b"",
        );
        openssl(
            d,
            &format!(
                "req -x509 -config openssl.cnf -extensions server_ext -CA ca.pem -CAkey ca.key \
                 {EC_KEY} -keyout server.key -out server.pem -days 2 -subj /CN=127.0.0.1"
            ),
            b"",
        );
        Pki { dir: Arc::new(dir) }
    }

    /// A lab mirror's usual certificate: one self-signed CA:TRUE certificate for 127.0.0.1 and localhost
    /// (what `openssl req -x509` makes), serving as its own CA: `ca_pem()` is `cert_pem()`.
    pub fn self_signed() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("harness-pki-")
            .tempdir()
            .expect("temp dir for PKI");
        let d = dir.path();
        write_openssl_cnf(d);
        openssl(
            d,
            &format!(
                "req -x509 -config openssl.cnf -extensions self_signed_ext {EC_KEY} -keyout server.key \
                 -out server.pem -days 2 -subj /CN=127.0.0.1"
            ),
            b"",
        );
        std::fs::copy(d.join("server.pem"), d.join("ca.pem")).expect("copy self-signed cert");
        Pki { dir: Arc::new(dir) }
    }

    /// Like `self_signed()`, but valid from `not_before` to `not_after` (`YYYYMMDDHHMMSSZ`), e.g.
    /// long expired.
    pub fn self_signed_dated(not_before: &str, not_after: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("harness-pki-")
            .tempdir()
            .expect("temp dir for PKI");
        let d = dir.path();
        write_openssl_cnf(d);
        std::fs::write(d.join("index.txt"), "").expect("write CA database");
        std::fs::write(d.join("serial"), "01\n").expect("write CA serial");
        openssl(
            d,
            &format!(
                "req -new -config openssl.cnf {EC_KEY} -keyout server.key -out server.csr \
                 -subj /CN=127.0.0.1"
            ),
            b"",
        );
        openssl(
            d,
            &format!(
                "ca -batch -config openssl.cnf -selfsign -keyfile server.key -in server.csr \
                 -out server.pem -notext -extensions self_signed_ext \
                 -startdate {not_before} -enddate {not_after}"
            ),
            b"",
        );
        std::fs::copy(d.join("server.pem"), d.join("ca.pem")).expect("copy self-signed cert");
        Pki { dir: Arc::new(dir) }
    }

    /// The CA certificate (PEM), what a client must trust.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (PEM) for 127.0.0.1 and localhost.
    pub fn cert_pem(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server certificate's private key (PKCS#8 PEM).
    pub fn key_pem(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

/// Writes the shared openssl config into `dir` (as `openssl.cnf`).
pub(crate) fn write_openssl_cnf(dir: &Path) {
    std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).expect("write openssl.cnf");
}

/// Runs openssl in `dir` with `args` (split at whitespace, so no argument may hold a space)
/// and `stdin` as its input; panics with its stderr on failure.
pub(crate) fn openssl(dir: &Path, args: &str, stdin: &[u8]) -> Vec<u8> {
    let args: Vec<&str> = args.split_whitespace().collect();
    let mut child = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    // Inputs are a few hundred bytes, far below a pipe's buffer, so writing all of it before
    // reading any output cannot deadlock; dropping the handle closes openssl's stdin.
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin)
        .expect("write openssl stdin");
    let out = child.wait_with_output().expect("wait for openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
