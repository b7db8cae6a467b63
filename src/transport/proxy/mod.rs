//! Egress proxies: which proxy (if any) a request to a URL goes through, decided the way Go's
//! `http.ProxyFromEnvironment` does, since that is what the operator and the cluster's other
//! components do:
//!
//! - `HTTPS_PROXY` (else `https_proxy`) for https URLs, `HTTP_PROXY` (else `http_proxy`) for http
//!   URLs; an empty variable counts as unset; a value without a scheme is read as `http://…`;
//! - `NO_PROXY` (else `no_proxy`) lists what goes direct (see [`no_proxy`]); loopback and
//!   `localhost` always go direct;
//! - `--proxy URL` replaces both proxy variables, `--no-proxy LIST` replaces `NO_PROXY`.
//!
//! Proxies are `http://` (plain TCP to the proxy) or `https://` (TLS to the proxy, verified with the
//! same roots as registries). https targets go through a `CONNECT` tunnel, so TLS still runs end to
//! end to the registry and the proxy resolves its name; http targets are sent to the proxy in
//! absolute form. `user:password@` in the proxy URL becomes `Proxy-Authorization: Basic`, sent to
//! the proxy only; it is never displayed: [`ProxyUrl`]'s `Display` and `Debug` leave it out.
//!
//! The connector that does this for the transport is in [`connector`].

pub(crate) mod connector;
pub(crate) mod no_proxy;

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderValue, Uri};
use thiserror::Error;

pub(crate) use no_proxy::NoProxy;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProxyConfigError {
    #[error("invalid proxy URL in {origin}: {why}")]
    Invalid { origin: String, why: String },
    #[error(
        "proxy URL in {origin} uses scheme {scheme:?}; only http:// and https:// proxies are supported"
    )]
    UnsupportedScheme { origin: String, scheme: String },
}

/// A proxy the flags, the environment or the cluster names that cannot be used: exit 2, as a bad flag.
impl crate::error::ExitStatus for ProxyConfigError {
    fn exit_code(&self) -> u8 {
        2
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyScheme {
    Http,
    Https,
}

/// One proxy. Shown as `scheme://host:port`, never with its credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ProxyUrl {
    scheme: ProxyScheme,
    /// Lowercase; IPv6 without brackets.
    host: String,
    port: u16,
    /// `user:password` as written in the URL (percent-encoded), for kube, which decodes it itself.
    userinfo: Option<String>,
    /// `Basic base64(user:password)`, decoded as Go decodes it; marked sensitive.
    authorization: Option<HeaderValue>,
}

impl ProxyUrl {
    /// Parses a proxy URL as Go's httpproxy does: a value without `scheme://` is read as
    /// `http://value`; a path is ignored.
    pub(crate) fn parse(text: &str, origin: &str) -> Result<ProxyUrl, ProxyConfigError> {
        let invalid = |why: &str| ProxyConfigError::Invalid {
            origin: origin.to_string(),
            why: why.to_string(),
        };
        let text = text.trim();
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_string(), text),
        };
        let scheme = match scheme.as_str() {
            "http" => ProxyScheme::Http,
            "https" => ProxyScheme::Https,
            _ => {
                return Err(ProxyConfigError::UnsupportedScheme {
                    origin: origin.to_string(),
                    scheme,
                });
            }
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        // Go takes the last '@': a password may hold an unescaped one.
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("unclosed '[' in the host"))?;
            let port = match after {
                "" => None,
                after => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| invalid("junk after the IPv6 address"))?,
                ),
            };
            (host, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let host_ok = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'));
        if !host_ok || (host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err()) {
            return Err(invalid("bad host"));
        }
        let port = match port {
            None | Some("") => match scheme {
                ProxyScheme::Http => 80,
                ProxyScheme::Https => 443,
            },
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0 && port.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| invalid("bad port"))?,
        };
        let authorization = match userinfo {
            None => None,
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let plain = [
                    percent_decode(user),
                    b":".to_vec(),
                    percent_decode(password),
                ]
                .concat();
                let mut value = HeaderValue::from_str(&format!("Basic {}", BASE64.encode(plain)))
                    .map_err(|_| invalid("bad credentials"))?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(ProxyUrl {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            userinfo: userinfo.map(str::to_string),
            authorization,
        })
    }

    pub(crate) fn scheme(&self) -> ProxyScheme {
        self.scheme
    }

    /// `host:port` (IPv6 in brackets): how errors name the proxy.
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Where to open the connection to the proxy: `http(s)://host:port/`.
    pub(crate) fn connect_uri(&self) -> Uri {
        format!("{}/", self).parse().unwrap_or_default()
    }

    /// The `Proxy-Authorization` value, when the URL carried credentials.
    pub(crate) fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// The URL with its credentials, for a client that sends them itself (kube). Never log it.
    pub(crate) fn uri_with_credentials(&self) -> Uri {
        let userinfo = self
            .userinfo
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let scheme = match self.scheme {
            ProxyScheme::Http => "http",
            ProxyScheme::Https => "https",
        };
        format!("{scheme}://{userinfo}{}/", self.authority())
            .parse()
            .unwrap_or_default()
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            ProxyScheme::Http => "http",
            ProxyScheme::Https => "https",
        };
        write!(f, "{scheme}://{}", self.authority())
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = if self.userinfo.is_some() {
            " (with credentials)"
        } else {
            ""
        };
        write!(f, "ProxyUrl({self}{credentials})")
    }
}

/// `%XX` escapes decoded; anything else (including a malformed escape) kept as it is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]))
        {
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn hex_value(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

/// The proxy flags; None where the flag was not given.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxyFlags {
    pub(crate) proxy: Option<String>,
    pub(crate) no_proxy: Option<String>,
}

/// Which proxy each URL goes through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    https: Option<ProxyUrl>,
    http: Option<ProxyUrl>,
    no_proxy: NoProxy,
}

impl Proxies {
    /// No proxy for anything.
    pub fn none() -> Proxies {
        Proxies::default()
    }

    /// From the flags, falling back to the environment (`env` reads a variable). Unparseable
    /// environment values are skipped with a warning, as Go skips them; the flag's are errors, and
    /// so is a proxy scheme we cannot speak (socks5), wherever it came from: going direct instead
    /// would bypass the proxy the cluster asks for.
    pub(crate) fn configure(
        flags: &ProxyFlags,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(Proxies, Vec<String>), ProxyConfigError> {
        let mut warnings = Vec::new();
        let env_any = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| {
                env(name)
                    .filter(|value| !value.trim().is_empty())
                    .map(|value| (name, value))
            })
        };
        let mut from_env =
            |names: [&'static str; 2]| -> Result<Option<ProxyUrl>, ProxyConfigError> {
                let Some((name, value)) = env_any(names) else {
                    return Ok(None);
                };
                match ProxyUrl::parse(&value, name) {
                    Ok(url) => Ok(Some(url)),
                    Err(error @ ProxyConfigError::UnsupportedScheme { .. }) => Err(error),
                    Err(error) => {
                        warnings.push(format!("{error}; ignored"));
                        Ok(None)
                    }
                }
            };
        let (https, http) = match &flags.proxy {
            Some(text) => {
                let url = ProxyUrl::parse(text, "--proxy")?;
                (Some(url.clone()), Some(url))
            }
            None => (
                from_env(["HTTPS_PROXY", "https_proxy"])?,
                from_env(["HTTP_PROXY", "http_proxy"])?,
            ),
        };
        let no_proxy = match &flags.no_proxy {
            Some(list) => NoProxy::parse(list),
            None => env_any(["NO_PROXY", "no_proxy"])
                .map(|(_, list)| NoProxy::parse(&list))
                .unwrap_or_default(),
        };
        Ok((
            Proxies {
                https,
                http,
                no_proxy,
            },
            warnings,
        ))
    }

    /// The proxy a request to `uri` goes through; None for a direct connection.
    pub(crate) fn for_uri(&self, uri: &Uri) -> Option<&ProxyUrl> {
        let (proxy, default_port) = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => (self.https.as_ref()?, 443),
            Some(s) if s.eq_ignore_ascii_case("http") => (self.http.as_ref()?, 80),
            _ => return None,
        };
        let host = uri.host()?;
        let port = uri.port_u16().unwrap_or(default_port);
        (!self.no_proxy.bypasses(host, port)).then_some(proxy)
    }

    /// The proxy an https request to `authority` (`host[:port]`, a registry) goes through.
    pub(crate) fn for_registry(&self, authority: &str) -> Option<&ProxyUrl> {
        let uri: Uri = format!("https://{authority}/").parse().ok()?;
        self.for_uri(&uri)
    }

    /// Whether any proxy is configured at all.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.https.is_none() && self.http.is_none()
    }

    /// One line for the log: which proxies, and whether anything bypasses them.
    pub(crate) fn describe(&self) -> String {
        let show = |p: &Option<ProxyUrl>| p.as_ref().map_or("none".to_string(), |p| p.to_string());
        format!(
            "https: {}, http: {}, no_proxy: {}",
            show(&self.https),
            show(&self.http),
            if self.no_proxy.is_empty() {
                "none"
            } else {
                "set"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn configure(flags: ProxyFlags, vars: &[(&str, &str)]) -> Proxies {
        Proxies::configure(&flags, env(vars)).unwrap().0
    }

    fn via(proxies: &Proxies, url: &str) -> Option<String> {
        proxies
            .for_uri(&url.parse().unwrap())
            .map(|p| p.to_string())
    }

    #[test]
    fn proxy_urls_parse_as_go_reads_them() {
        let p = |s| ProxyUrl::parse(s, "test").unwrap();
        assert_eq!(
            p("http://proxy.example:3128").to_string(),
            "http://proxy.example:3128"
        );
        assert_eq!(
            p("proxy.example:3128").to_string(),
            "http://proxy.example:3128"
        );
        assert_eq!(p("10.0.0.1:3128").to_string(), "http://10.0.0.1:3128");
        assert_eq!(
            p("HTTPS://Proxy.Example").to_string(),
            "https://proxy.example:443"
        );
        assert_eq!(
            p("http://proxy.example").to_string(),
            "http://proxy.example:80"
        );
        assert_eq!(
            p("http://[fd00::1]:3128/path").to_string(),
            "http://[fd00::1]:3128"
        );
        assert_eq!(p("http://proxy:3128/").authority(), "proxy:3128");
        for bad in [
            "http://",
            "http://:3128",
            "http://proxy:x",
            "http://proxy:99999",
            "http://[fd00::1",
        ] {
            assert!(
                matches!(
                    ProxyUrl::parse(bad, "test"),
                    Err(ProxyConfigError::Invalid { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            ProxyUrl::parse("socks5://proxy:1080", "HTTPS_PROXY")
                .unwrap_err()
                .to_string(),
            "proxy URL in HTTPS_PROXY uses scheme \"socks5\"; only http:// and https:// proxies are supported"
        );
    }

    #[test]
    fn credentials_become_proxy_authorization_and_are_never_shown() {
        let url = ProxyUrl::parse("http://alice:s%40cr%3At@proxy:3128", "test").unwrap();
        let header = url.authorization().unwrap();
        assert!(header.is_sensitive());
        // base64("alice:s@cr:t")
        assert_eq!(
            header.to_str().unwrap(),
            format!("Basic {}", BASE64.encode("alice:s@cr:t"))
        );
        assert_eq!(url.to_string(), "http://proxy:3128");
        assert!(!format!("{url:?}").contains("s%40"), "{url:?}");
        assert!(!format!("{url:?}").contains("alice"), "{url:?}");
        assert_eq!(
            url.uri_with_credentials().to_string(),
            "http://alice:s%40cr%3At@proxy:3128/"
        );
        // The last '@' separates the host, as in Go.
        let url = ProxyUrl::parse("http://bob:p@ss@proxy:3128", "test").unwrap();
        assert_eq!(url.to_string(), "http://proxy:3128");
        assert_eq!(
            url.authorization().unwrap().to_str().unwrap(),
            format!("Basic {}", BASE64.encode("bob:p@ss"))
        );
        assert!(
            ProxyUrl::parse("http://proxy:3128", "t")
                .unwrap()
                .authorization()
                .is_none()
        );
    }

    #[test]
    fn the_environment_is_read_as_go_reads_it() {
        let proxies = configure(
            ProxyFlags::default(),
            &[
                ("HTTPS_PROXY", "http://secure-proxy:3128"),
                ("https_proxy", "http://lower:1"),
                ("http_proxy", "http://plain-proxy:8080"),
                ("no_proxy", ".internal.example"),
            ],
        );
        assert_eq!(
            via(&proxies, "https://quay.io/v2/"),
            Some("http://secure-proxy:3128".into())
        );
        assert_eq!(
            via(&proxies, "http://quay.io/v2/"),
            Some("http://plain-proxy:8080".into())
        );
        assert_eq!(
            via(&proxies, "https://mirror.internal.example:5000/v2/"),
            None
        );
        assert_eq!(via(&proxies, "https://127.0.0.1:5000/v2/"), None);
        assert_eq!(via(&proxies, "https://[::1]:5000/v2/"), None);
        // An empty upper-case variable counts as unset: the lower-case one applies.
        let proxies = configure(
            ProxyFlags::default(),
            &[("HTTPS_PROXY", ""), ("https_proxy", "lower:3128")],
        );
        assert_eq!(
            via(&proxies, "https://quay.io/"),
            Some("http://lower:3128".into())
        );
        // HTTPS_PROXY does not apply to http URLs, nor HTTP_PROXY to https ones.
        let proxies = configure(ProxyFlags::default(), &[("HTTP_PROXY", "plain:8080")]);
        assert_eq!(via(&proxies, "https://quay.io/"), None);
        assert!(configure(ProxyFlags::default(), &[]).is_empty());
    }

    #[test]
    fn flags_override_the_environment() {
        let vars = [
            ("HTTPS_PROXY", "http://env-proxy:3128"),
            ("NO_PROXY", "quay.io"),
        ];
        let flags = ProxyFlags {
            proxy: Some("https://flag-proxy:8443".into()),
            no_proxy: None,
        };
        let proxies = configure(flags, &vars);
        assert_eq!(
            via(&proxies, "https://registry.example/"),
            Some("https://flag-proxy:8443".into())
        );
        assert_eq!(
            via(&proxies, "http://registry.example/"),
            Some("https://flag-proxy:8443".into())
        );
        assert_eq!(
            via(&proxies, "https://quay.io/"),
            None,
            "NO_PROXY from the environment still applies"
        );
        let flags = ProxyFlags {
            proxy: None,
            no_proxy: Some("registry.example".into()),
        };
        let proxies = configure(flags, &vars);
        assert_eq!(
            via(&proxies, "https://quay.io/"),
            Some("http://env-proxy:3128".into())
        );
        assert_eq!(via(&proxies, "https://registry.example/"), None);
    }

    #[test]
    fn bad_values_warn_in_the_environment_and_fail_as_flags() {
        let (proxies, warnings) = Proxies::configure(
            &ProxyFlags::default(),
            env(&[("HTTPS_PROXY", "http://:3128")]),
        )
        .unwrap();
        assert!(proxies.is_empty());
        assert_eq!(
            warnings,
            ["invalid proxy URL in HTTPS_PROXY: no host; ignored"]
        );
        let flags = ProxyFlags {
            proxy: Some("http://:3128".into()),
            no_proxy: None,
        };
        assert!(Proxies::configure(&flags, env(&[])).is_err());
        assert!(
            Proxies::configure(
                &ProxyFlags::default(),
                env(&[("https_proxy", "socks5://p:1080")])
            )
            .is_err()
        );
    }
}
