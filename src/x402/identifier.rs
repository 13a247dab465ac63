//! The `payment-identifier` extension: a client-chosen id (16–128 characters of `A-Z a-z 0-9 _ -`)
//! in `paymentPayload.extensions["payment-identifier"].info.id`, which makes a paid request
//! idempotent. A server declares the extension in its 402 (`info.required` says whether an id must
//! be sent); the client copies the declaration into its payload and adds its id.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The extension's key in `extensions`.
pub const EXTENSION: &str = "payment-identifier";
pub const MIN_LEN: usize = 16;
pub const MAX_LEN: usize = 128;

/// Whether a route declares the extension, and whether it requires an id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdPolicy {
    /// Not declared; an id sent anyway is ignored.
    #[default]
    Off,
    /// Declared; a payment with an id is idempotent, one without is served as usual.
    Optional,
    /// Declared; a payment without an id is refused (400).
    Required,
}

/// What a payment says about the extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    pub id: Option<String>,
    /// The declaration the client copied says an id is required.
    pub required: bool,
}

/// Reads the extension from a payload's `extensions` (absent: no id). An id of the wrong length or
/// alphabet is an error naming the rule.
pub fn read(extensions: Option<&serde_json::value::RawValue>) -> Result<Sent, String> {
    let Some(raw) = extensions else {
        return Ok(Sent::default());
    };
    let Ok(all) = serde_json::from_str::<Value>(raw.get()) else {
        return Err("extensions: not a JSON object".into());
    };
    let Some(ext) = all.get(EXTENSION) else {
        return Ok(Sent::default());
    };
    let info = ext.get("info").unwrap_or(&Value::Null);
    let required = info.get("required").and_then(Value::as_bool).unwrap_or(false);
    let id = match info.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            check(s)?;
            Some(s.clone())
        }
        Some(_) => return Err(format!("extensions.{EXTENSION}.info.id: not a string")),
    };
    Ok(Sent { id, required })
}

/// The id rules of the extension.
pub fn check(id: &str) -> Result<(), String> {
    if !(MIN_LEN..=MAX_LEN).contains(&id.len()) {
        return Err(format!(
            "extensions.{EXTENSION}.info.id: {} characters; an id has {MIN_LEN} to {MAX_LEN}",
            id.len()
        ));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(format!(
            "extensions.{EXTENSION}.info.id: only letters, digits, '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// The declaration a 402 carries in `extensions` for a route with this policy.
pub fn declaration(policy: IdPolicy) -> Option<Value> {
    let required = match policy {
        IdPolicy::Off => return None,
        IdPolicy::Optional => false,
        IdPolicy::Required => true,
    };
    Some(json!({
        "info": {"required": required},
        "schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "required": {"type": "boolean"},
                "id": {"type": "string", "minLength": MIN_LEN, "maxLength": MAX_LEN, "pattern": "^[a-zA-Z0-9_-]+$"}
            },
            "required": ["required"]
        }
    }))
}

/// A digest of what was paid, to tell a retry (the same bytes) from another payment under the
/// same id. JSON is hashed in a canonical form (keys sorted, no spaces), so a caller that
/// re-serializes the same payload is still a retry.
pub fn digest(payload: &[u8]) -> String {
    let canonical = serde_json::from_slice::<Value>(payload)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| String::from_utf8_lossy(payload).into_owned());
    alloy::hex::encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(v: Value) -> Box<serde_json::value::RawValue> {
        serde_json::value::to_raw_value(&v).unwrap()
    }

    #[test]
    fn reads_the_id_and_the_required_flag() {
        let e = ext(json!({"payment-identifier": {"info": {"required": true, "id": "pay_7d5d747be160e280"}}}));
        assert_eq!(
            read(Some(&e)).unwrap(),
            Sent {
                id: Some("pay_7d5d747be160e280".into()),
                required: true
            }
        );
        assert_eq!(read(None).unwrap(), Sent::default());
        let other = ext(json!({"bazaar": {}}));
        assert_eq!(read(Some(&other)).unwrap(), Sent::default());
        let declared = ext(json!({"payment-identifier": {"info": {"required": true}}}));
        assert_eq!(
            read(Some(&declared)).unwrap(),
            Sent {
                id: None,
                required: true
            }
        );
    }

    #[test]
    fn refuses_ids_outside_the_rules() {
        for bad in [
            "short",
            &"x".repeat(129),
            "pay_7d5d747be160e28!",
            "pay 7d5d747be160e280",
        ] {
            let e = ext(json!({"payment-identifier": {"info": {"id": bad}}}));
            assert!(read(Some(&e)).is_err(), "{bad}");
        }
        let e = ext(json!({"payment-identifier": {"info": {"id": 12}}}));
        assert!(read(Some(&e)).unwrap_err().contains("not a string"));
        assert!(check(&"a".repeat(16)).is_ok() && check(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn the_digest_ignores_key_order_and_spacing_but_not_content() {
        let a = digest(br#"{"a":1,"b":{"c":"x"}}"#);
        assert_eq!(a, digest(br#"{ "b": {"c": "x"}, "a": 1 }"#));
        assert_ne!(a, digest(br#"{"a":2,"b":{"c":"x"}}"#));
    }

    #[test]
    fn declares_only_when_the_route_does() {
        assert_eq!(declaration(IdPolicy::Off), None);
        assert_eq!(
            declaration(IdPolicy::Required).unwrap()["info"]["required"],
            json!(true)
        );
        assert_eq!(
            declaration(IdPolicy::Optional).unwrap()["info"]["required"],
            json!(false)
        );
    }
}
