//! The cosign "simple signing" payload, parsed strictly as containers/image's
//! `sigstore_payload.go` does (signature-policy §3 step 6): unknown or duplicate keys rejected,
//! keys case-sensitive, `optional` null or an object whose `timestamp` is an integer.

use serde::Deserialize;
use thiserror::Error;

/// The only `critical.type` accepted.
const SIGNATURE_TYPE: &str = "cosign container image signature";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("invalid signature payload: {0}")]
    Json(String),
    #[error("unrecognized signature type {0:?}")]
    Type(String),
    #[error("invalid signature payload: optional.timestamp is not an integer")]
    Timestamp,
}

/// What a valid payload says: the signed reference and manifest digest, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPayload {
    pub docker_reference: String,
    pub manifest_digest: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Untrusted {
    critical: Critical,
    // Required but nullable: `Option` alone would also accept the key missing.
    #[serde(deserialize_with = "required_nullable")]
    optional: Option<Optional>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Critical {
    #[serde(rename = "type")]
    kind: String,
    image: Image,
    identity: Identity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    #[serde(rename = "docker-reference")]
    reference: String,
}

/// `creator` a string, `timestamp` a number; other keys are read as Go reads them into `any`
/// and then ignored: a number out of f64's range or a duplicate key is an error there, so it is
/// here (serde's own ignoring would skip both). A string that is not UTF-8 is refused here where
/// Go substitutes U+FFFD: stricter.
struct Optional {
    timestamp: Option<serde_json::Number>,
}

impl<'de> Deserialize<'de> for Optional {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Optional, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Optional;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Optional, M::Error> {
                let mut seen = std::collections::BTreeSet::new();
                let mut timestamp = None;
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                    }
                    match key.as_str() {
                        "creator" => {
                            map.next_value::<String>()?;
                        }
                        "timestamp" => timestamp = Some(map.next_value()?),
                        _ => {
                            map.next_value::<serde_json::Value>()?;
                        }
                    }
                }
                Ok(Optional { timestamp })
            }
        }
        d.deserialize_map(Fields)
    }
}

fn required_nullable<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

/// Parses the exact signed bytes (never re-serialized).
pub fn parse(bytes: &[u8]) -> Result<SignedPayload, PayloadError> {
    let untrusted: Untrusted =
        serde_json::from_slice(bytes).map_err(|e| PayloadError::Json(e.to_string()))?;
    if untrusted.critical.kind != SIGNATURE_TYPE {
        return Err(PayloadError::Type(untrusted.critical.kind));
    }
    if let Some(timestamp) = untrusted.optional.and_then(|o| o.timestamp)
        && !is_integer(&timestamp)
    {
        return Err(PayloadError::Timestamp);
    }
    Ok(SignedPayload {
        docker_reference: untrusted.critical.identity.reference,
        manifest_digest: untrusted.critical.image.digest,
    })
}

/// An integer-valued JSON number (`1.0` counts, as Go's float64 check does).
fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"critical":{"identity":{"docker-reference":"r.example/a"},"image":{"docker-manifest-digest":"sha256:00"},"type":"cosign container image signature"},"optional":null}"#;

    /// signature-policy §3 step 6: the accepted shape.
    #[test]
    fn accepts_the_cosign_shape() {
        let parsed = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(parsed.docker_reference, "r.example/a");
        assert_eq!(parsed.manifest_digest, "sha256:00");
        let with_optional = GOOD.replace(
            "\"optional\":null",
            r#""optional":{"creator":"c","timestamp":1657296609,"other":[1]}"#,
        );
        assert!(parse(with_optional.as_bytes()).is_ok());
    }

    /// signature-policy §3 step 6 (strict format; golden helper vectors `&` and `{}`).
    #[test]
    fn rejects_anything_else() {
        let cases = [
            "&".to_string(),
            "{}".to_string(),
            GOOD.replace(",\"optional\":null", ""),
            GOOD.replace("\"optional\":null", "\"optional\":null,\"extra\":1"),
            GOOD.replace("\"type\"", "\"Type\""),
            GOOD.replace("cosign container image signature", "other"),
            GOOD.replace("\"optional\":null", r#""optional":{"timestamp":1.5}"#),
            GOOD.replace("\"optional\":null", r#""optional":{"creator":1}"#),
            // Go reads ignored keys into `any`: a duplicate or an out-of-range number fails there
            // (found by the signature_payload fuzz target).
            GOOD.replace("\"optional\":null", r#""optional":{"x":1,"x":2}"#),
            GOOD.replace("\"optional\":null", r#""optional":{"x":[1e999]}"#),
            GOOD.replace(
                "\"optional\":null",
                r#""optional":{"timestamp":1,"timestamp":2}"#,
            ),
            GOOD.replace(
                r#""type":"cosign"#,
                r#""type":"cosign container image signature","type":"cosign"#,
            ),
            GOOD.replace(
                r#"{"docker-reference":"r.example/a"}"#,
                r#"{"docker-reference":"r.example/a","x":1}"#,
            ),
        ];
        for case in cases {
            assert!(parse(case.as_bytes()).is_err(), "{case}");
        }
    }
}
