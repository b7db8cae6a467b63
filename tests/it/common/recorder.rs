//! What a fake endpoint was asked: every request's method, path with query, and headers, kept
//! for the test to inspect after the run.

use std::sync::{Arc, Mutex};

use hyper::HeaderMap;

use super::server::Request;

/// One request as a fake endpoint saw it (the body is left out).
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
}

impl SeenRequest {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(path, _)| path)
    }
}

/// A shared, append-only list of requests; clones share the list (one goes to the handler).
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<SeenRequest>>>);

impl Recorder {
    pub fn record(&self, request: &Request) {
        self.0.lock().unwrap().push(SeenRequest {
            method: request.method.clone(),
            path_and_query: request.path_and_query.clone(),
            headers: request.headers.clone(),
        });
    }

    /// Everything seen so far, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.0.lock().unwrap().clone()
    }
}
