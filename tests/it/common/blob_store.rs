//! The object store behind a registry's `redirect` storage middleware: distribution answers a
//! blob GET with a 307 to `<store><storage path>`, and this server (another port, so another
//! origin) answers that GET from the registry's storage directory, recording every request.

use std::path::{Component, Path, PathBuf};

use super::pki::Pki;
use super::recorder::{Recorder, SeenRequest};
use super::server::{HttpsServer, Response};

pub struct BlobStore {
    server: HttpsServer,
    requests: Recorder,
}

impl BlobStore {
    /// Serves `GET <path>` with the file `<root><path>`; 404 for anything else.
    pub fn start(pki: &Pki, root: &Path) -> Self {
        let requests = Recorder::default();
        let seen = requests.clone();
        let root = root.to_owned();
        let server = HttpsServer::start(pki, move |request| {
            seen.record(request);
            let path = request
                .path_and_query
                .split_once('?')
                .map_or(request.path_and_query.as_str(), |(path, _)| path);
            match (request.method.as_str(), file_under(&root, path)) {
                ("GET", Some(file)) => match std::fs::read(file) {
                    Ok(bytes) => Response::new(200)
                        .header("content-type", "application/octet-stream")
                        .body(bytes),
                    Err(_) => Response::new(404),
                },
                _ => Response::new(404),
            }
        });
        BlobStore { server, requests }
    }

    /// `https://127.0.0.1:<port>/`, the middleware's `baseurl`.
    pub fn base_url(&self) -> String {
        self.server.url("/")
    }

    /// Every request the store received, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.requests.requests()
    }
}

/// `root` joined with the URL path, unless the path would climb out of it.
fn file_under(root: &Path, url_path: &str) -> Option<PathBuf> {
    let relative = Path::new(url_path.trim_start_matches('/'));
    relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| root.join(relative))
}
