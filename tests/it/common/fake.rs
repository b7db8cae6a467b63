//! A fake registry, or any fake HTTPS endpoint: fixed answers per path, every request recorded.
//! For what a real registry will not do: serve bytes that do not match the digest asked for,
//! answer with a schema 1 manifest, redirect a blob to a signed URL.

use std::collections::HashMap;

use serde_json::json;

use super::image::sha256_digest;
use super::pki::Pki;
use super::recorder::{Recorder, SeenRequest};
use super::server::{HttpsServer, Response};

/// The answers, by path (the query is ignored when matching). GET only; anything else, and
/// any other path, gets distribution's 404.
#[derive(Default)]
pub struct FakeRoutes {
    routes: HashMap<String, Response>,
}

impl FakeRoutes {
    pub fn new() -> Self {
        FakeRoutes::default()
    }

    /// `GET path` answers `response`.
    pub fn route(mut self, path: &str, response: Response) -> Self {
        self.routes.insert(path.to_owned(), response);
        self
    }

    /// `GET /v2/` answers 200: an anonymous registry.
    pub fn registry(self) -> Self {
        self.route("/v2/", Response::json(200, &json!({})))
    }

    /// `GET /v2/<repo>/manifests/<reference>` answers `body` as `media_type`, without a
    /// Docker-Content-Digest header (a client must digest the body itself).
    pub fn manifest(self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Self {
        self.route(
            &format!("/v2/{repo}/manifests/{reference}"),
            Response::new(200)
                .header("content-type", media_type)
                .body(body),
        )
    }

    /// `GET /v2/<repo>/blobs/<digest of bytes>` answers `bytes`.
    pub fn blob(self, repo: &str, bytes: &[u8]) -> Self {
        self.route(
            &format!("/v2/{repo}/blobs/{}", sha256_digest(bytes)),
            Response::new(200)
                .header("content-type", "application/octet-stream")
                .body(bytes),
        )
    }

    /// `GET /v2/<repo>/blobs/<digest>` answers 307 to `location`.
    pub fn redirect_blob(self, repo: &str, digest: &str, location: &str) -> Self {
        self.route(
            &format!("/v2/{repo}/blobs/{digest}"),
            Response::new(307).header("location", location),
        )
    }

    pub fn start(self, pki: &Pki) -> FakeServer {
        let requests = Recorder::default();
        let seen = requests.clone();
        let server = HttpsServer::start(pki, move |request| {
            seen.record(request);
            let path = request
                .path_and_query
                .split_once('?')
                .map_or(request.path_and_query.as_str(), |(path, _)| path);
            match self.routes.get(path) {
                Some(response) if request.method == "GET" => response.clone(),
                _ => Response::json(
                    404,
                    &json!({"errors": [{"code": "NAME_UNKNOWN", "message": "not faked"}]}),
                ),
            }
        });
        FakeServer { server, requests }
    }
}

/// A running `FakeRoutes`; stopped on Drop.
pub struct FakeServer {
    server: HttpsServer,
    requests: Recorder,
}

impl FakeServer {
    /// `127.0.0.1:<port>`, as an image reference's registry host.
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// `https://127.0.0.1:<port><path>`; `path` starts with '/'.
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.requests.requests()
    }
}
