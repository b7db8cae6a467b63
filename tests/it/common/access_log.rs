//! The registry's access log (combined log format), parsed: what a client asked and what it got.

use super::registry::Registry;

/// One request as the registry's access log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub method: String,
    /// The request target, e.g. `/v2/p/one/blobs/sha256:…`.
    pub path: String,
    pub status: u16,
    pub user_agent: String,
}

impl Access {
    /// The digest or tag of a `/v2/<repo>/blobs/<digest>` or `/v2/<repo>/manifests/<ref>` request.
    pub fn object(&self, kind: &str) -> Option<&str> {
        let (_, object) = self.path.split_once(&format!("/{kind}/"))?;
        (!object.contains('/')).then_some(object)
    }

    pub fn is_blob(&self) -> bool {
        self.object("blobs").is_some()
    }

    pub fn is_manifest(&self) -> bool {
        self.object("manifests").is_some()
    }
}

impl Registry {
    /// Every request the access log records so far, in order.
    pub fn access_log(&self) -> Vec<Access> {
        self.log().lines().filter_map(Access::parse).collect()
    }

    /// The requests made by provider-images (its user agent is `provider-images/<version>`).
    pub fn requests_by_us(&self) -> Vec<Access> {
        self.access_log()
            .into_iter()
            .filter(|access| access.user_agent.starts_with("provider-images/"))
            .collect()
    }
}

impl Access {
    /// `127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "referer" "agent"`; None for other lines
    /// (the registry's own structured messages).
    pub fn parse(line: &str) -> Option<Access> {
        let (_, rest) = line.split_once("] \"")?;
        let (request, rest) = rest.split_once("\" ")?;
        let mut parts = request.split(' ');
        let (method, path) = (parts.next()?, parts.next()?);
        let mut fields = rest.splitn(3, ' ');
        let status = fields.next()?.parse().ok()?;
        let _size = fields.next()?;
        let quoted = fields.next()?;
        // "referer" "agent"
        let agent = quoted.rsplit_once(" \"")?.1.strip_suffix('"')?;
        Some(Access {
            method: method.to_string(),
            path: path.to_string(),
            status,
            user_agent: agent.to_string(),
        })
    }
}
