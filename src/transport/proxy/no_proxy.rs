//! `NO_PROXY` as Go reads it (golang.org/x/net/http/httpproxy), which is what the cluster's other
//! components use; where curl differs, Go wins:
//!
//! - entries are separated by commas, trimmed, lowercased; empty entries are skipped;
//! - `*` alone bypasses the proxy for everything;
//! - an IP address or CIDR range (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`) matches IP hosts only;
//!   an IP with a port (`10.0.0.1:443`, `[::1]:443`) only on that port;
//! - `example.com` matches `example.com` and every subdomain; `.example.com` and `*.example.com`
//!   only subdomains (curl also matches `example.com` itself there: Go does not);
//!   either with `:port` only on that port;
//! - `localhost` and loopback addresses never go through a proxy, whatever the list says.
//!
//! Deviations, both harmless: host names are compared after lowercasing (Go compares `localhost`
//! as written), and non-ASCII names are compared as written (Go converts them with IDNA first).

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// A parsed `NO_PROXY` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NoProxy {
    /// `*` was in the list.
    all: bool,
    ips: Vec<IpEntry>,
    domains: Vec<DomainEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum IpEntry {
    Net(IpNet),
    /// An address, on any port (None) or on one port.
    Addr {
        ip: IpAddr,
        port: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DomainEntry {
    /// Always starts with `.`: what a subdomain ends with.
    suffix: String,
    port: Option<String>,
    /// The entry named the host itself (`example.com`), not only its subdomains (`.example.com`).
    host_too: bool,
}

impl NoProxy {
    pub(crate) fn parse(list: &str) -> NoProxy {
        let mut parsed = NoProxy::default();
        for entry in list.split(',') {
            let entry = entry.trim().to_ascii_lowercase();
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                return NoProxy {
                    all: true,
                    ..NoProxy::default()
                };
            }
            if let Some(net) = parse_cidr(&entry) {
                parsed.ips.push(IpEntry::Net(net));
                continue;
            }
            let (host, port) = match split_host_port(&entry) {
                Some((host, port)) => {
                    if host.is_empty() {
                        continue; // ":443": no host; Go ignores it too.
                    }
                    (host, (!port.is_empty()).then(|| port.to_string()))
                }
                None => (entry.as_str(), None),
            };
            if let Ok(ip) = IpAddr::from_str(host) {
                parsed.ips.push(IpEntry::Addr {
                    ip: ip.to_canonical(),
                    port,
                });
                continue;
            }
            let host = host.strip_prefix('*').unwrap_or(host);
            if host.is_empty() || host == "." {
                continue;
            }
            let (suffix, host_too) = match host.strip_prefix('.') {
                Some(_) => (host.to_string(), false),
                None => (format!(".{host}"), true),
            };
            parsed.domains.push(DomainEntry {
                suffix,
                port,
                host_too,
            });
        }
        parsed
    }

    /// Whether nothing is listed at all.
    pub(crate) fn is_empty(&self) -> bool {
        !self.all && self.ips.is_empty() && self.domains.is_empty()
    }

    /// Whether a request to `host` (a name, or an IP address without brackets) on `port` goes
    /// direct. Loopback addresses and `localhost` always do.
    pub(crate) fn bypasses(&self, host: &str, port: u16) -> bool {
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let host = host.to_ascii_lowercase();
        let ip = IpAddr::from_str(&host).ok().map(|ip| ip.to_canonical());
        if host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
            return true;
        }
        if self.all {
            return true;
        }
        let port = port.to_string();
        let port_ok = |wanted: &Option<String>| wanted.as_ref().is_none_or(|p| *p == port);
        if let Some(ip) = ip {
            let by_ip = self.ips.iter().any(|entry| match entry {
                IpEntry::Net(net) => net.contains(&ip),
                IpEntry::Addr { ip: listed, port } => *listed == ip && port_ok(port),
            });
            if by_ip {
                return true;
            }
        }
        // As in Go, name entries apply to IP hosts too, as plain strings (".0.1" matches 10.0.0.1).
        self.domains.iter().any(|entry| {
            let named =
                host.ends_with(&entry.suffix) || (entry.host_too && host == entry.suffix[1..]);
            named && port_ok(&entry.port)
        })
    }
}

/// `addr/len` where addr is an IP address; host bits may be set (Go's ParseCIDR allows them).
fn parse_cidr(entry: &str) -> Option<IpNet> {
    let (addr, len) = entry.split_once('/')?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let net = IpNet::new(IpAddr::from_str(addr).ok()?, len.parse().ok()?).ok()?;
    Some(net.trunc())
}

/// Go's `net.SplitHostPort`, enough for list entries: `host:port`, `[v6]:port`; None when there
/// is no port separator (a bare name or a bare IPv6 address).
fn split_host_port(entry: &str) -> Option<(&str, &str)> {
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    let (host, port) = entry.rsplit_once(':')?;
    if host.contains(':') {
        return None; // a bare IPv6 address
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (NO_PROXY, host, port, goes direct)
    const TABLE: &[(&str, &str, u16, bool)] = &[
        // nothing listed: only loopback goes direct
        ("", "registry.example.com", 443, false),
        ("", "localhost", 5000, true),
        ("", "LOCALHOST", 5000, true),
        ("", "127.0.0.1", 443, true),
        ("", "127.1.2.3", 443, true),
        ("", "::1", 443, true),
        ("", "[::1]", 443, true),
        ("", "::ffff:127.0.0.1", 443, true),
        ("", "foo.localhost", 443, false),
        // exact host, which also covers subdomains (Go and curl agree)
        ("registry.example.com", "registry.example.com", 443, true),
        ("registry.example.com", "a.registry.example.com", 443, true),
        ("registry.example.com", "example.com", 443, false),
        (
            "registry.example.com",
            "otherregistry.example.com",
            443,
            false,
        ),
        ("example.com", "registry.example.com", 443, true),
        ("example.com", "badexample.com", 443, false),
        // leading dot: subdomains only (curl would match the domain itself too; Go does not)
        (".example.com", "registry.example.com", 443, true),
        (".example.com", "example.com", 443, false),
        ("*.example.com", "registry.example.com", 443, true),
        ("*.example.com", "example.com", 443, false),
        // star
        ("*", "anything.example.org", 443, true),
        ("*", "10.1.2.3", 5000, true),
        ("foo.com, *", "bar.com", 443, true),
        // a star inside a name is no wildcard
        ("reg*.example.com", "registry.example.com", 443, false),
        // IP addresses
        ("10.0.0.1", "10.0.0.1", 443, true),
        ("10.0.0.1", "10.0.0.2", 443, false),
        ("10.0.0.1:5000", "10.0.0.1", 5000, true),
        ("10.0.0.1:5000", "10.0.0.1", 443, false),
        ("::ffff:10.0.0.1", "10.0.0.1", 443, true),
        ("10.0.0.1", "::ffff:10.0.0.1", 443, true),
        // CIDR ranges
        ("10.0.0.0/8", "10.200.3.4", 443, true),
        ("10.0.0.0/8", "11.0.0.1", 443, false),
        ("10.1.2.3/8", "10.9.9.9", 443, true),
        ("172.30.0.0/16", "172.30.0.1", 443, true),
        ("172.30.0.0/16", "172.31.0.1", 443, false),
        ("10.0.0.0/8", "ten.example.com", 443, false),
        ("0.0.0.0/0", "8.8.8.8", 443, true),
        // ports on names
        ("example.com:5000", "registry.example.com", 5000, true),
        ("example.com:5000", "registry.example.com", 443, false),
        (".example.com:443", "registry.example.com", 443, true),
        ("example.com:", "example.com", 8443, true),
        // case and whitespace
        (
            "  Registry.Example.COM  ",
            "registry.example.com",
            443,
            true,
        ),
        ("registry.example.com", "REGISTRY.example.com", 443, true),
        // IPv6
        ("fd00::1", "fd00::1", 443, true),
        ("fd00::1", "[fd00::1]", 443, true),
        ("FD00::1", "fd00::1", 443, true),
        ("fd00::1", "fd00::2", 443, false),
        ("[fd00::1]:5000", "fd00::1", 5000, true),
        ("[fd00::1]:5000", "fd00::1", 443, false),
        ("fd00::/8", "fd12:3456::1", 443, true),
        ("fd00::/8", "fe80::1", 443, false),
        // several entries, empty ones and junk skipped
        ("a.com,,b.com, ,c.com", "x.b.com", 443, true),
        (",,", "b.com", 443, false),
        (":443", "b.com", 443, false),
        (".", "b.com", 443, false),
        // name entries compare IP hosts as strings, as Go's do
        (".0.1", "10.0.0.1", 443, true),
        // the OpenShift default shape
        (
            ".cluster.local,.svc,10.128.0.0/14,127.0.0.1,172.30.0.0/16,api-int.lab.example.com,localhost",
            "image-registry.openshift-image-registry.svc",
            5000,
            true,
        ),
        (
            ".cluster.local,.svc,10.128.0.0/14,127.0.0.1,172.30.0.0/16,api-int.lab.example.com,localhost",
            "quay.io",
            443,
            false,
        ),
    ];

    #[test]
    fn no_proxy_matching_follows_go() {
        let mut failures = Vec::new();
        for (list, host, port, direct) in TABLE {
            let got = NoProxy::parse(list).bypasses(host, *port);
            if got != *direct {
                failures.push(format!(
                    "NO_PROXY={list:?} host={host} port={port}: direct={got}, want {direct}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn empty_lists_are_empty() {
        assert!(NoProxy::parse("").is_empty());
        assert!(NoProxy::parse(" , ,").is_empty());
        assert!(!NoProxy::parse("*").is_empty());
        assert!(!NoProxy::parse("10.0.0.0/8").is_empty());
        assert!(!NoProxy::parse("10.0.0.1:443").is_empty());
        assert!(!NoProxy::parse(".example.com").is_empty());
    }
}
