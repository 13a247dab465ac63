//! API keys: `x402_live_` / `x402_test_` + 32 base62 characters (about 190 bits), shown once and
//! kept only as the SHA-256 of the whole key (Unkey's model).

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

pub const LIVE: &str = "x402_live_";
pub const TEST: &str = "x402_test_";
const RANDOM_LEN: usize = 32;
/// Characters kept to show a key in lists: the prefix and four more.
const SHOWN: usize = 14;

/// Scopes a key may carry.
pub const SCOPES: &[&str] = &["verify", "settle", "analytics", "manage"];

/// A new key: the key (to show once), its hash (to store) and the part to display.
pub struct NewKey {
    pub key: String,
    pub hash: String,
    pub prefix: String,
}

pub fn generate(live: bool) -> NewKey {
    let random: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(RANDOM_LEN)
        .map(char::from)
        .collect();
    let key = format!("{}{random}", if live { LIVE } else { TEST });
    NewKey {
        hash: hash(&key),
        prefix: key[..SHOWN].to_string(),
        key,
    }
}

/// The stored form: lower-case hex SHA-256 of the whole key.
pub fn hash(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Whether `key` has a key's shape (so that junk is refused without a lookup).
pub fn well_formed(key: &str) -> bool {
    let rest = key.strip_prefix(LIVE).or_else(|| key.strip_prefix(TEST));
    rest.is_some_and(|r| (16..=128).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// An id for a stored thing: `prefix_` + 16 base62 characters.
pub fn id(prefix: &str) -> String {
    let random: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(16)
        .map(char::from)
        .collect();
    format!("{prefix}_{random}")
}

/// Scopes from a comma list; `Err` names the first unknown one.
pub fn parse_scopes(list: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for s in list {
        let s = s.trim();
        if !SCOPES.contains(&s) {
            return Err(format!("scope '{s}' is not one of {}", SCOPES.join(", ")));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_well_formed_and_stored_as_hashes() {
        let a = generate(true);
        let b = generate(false);
        assert!(a.key.starts_with("x402_live_") && b.key.starts_with("x402_test_"));
        assert_eq!(a.key.len(), 10 + 32);
        assert!(well_formed(&a.key) && well_formed(&b.key));
        assert_ne!(a.key, generate(true).key);
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.key[10..]));
        assert_eq!(a.prefix, &a.key[..14]);
        // The SHA-256 of "x402_live_abc", computed independently (sha256sum).
        assert_eq!(
            hash("x402_live_abc"),
            "215303ad0f7e1d18780b7357435296529685847ff5825259b38408f9c8f7ab97"
        );
        assert!(!well_formed("x402_live_short") && !well_formed("sk_live_0123456789abcdef0123"));
        assert!(!well_formed("x402_live_0123456789abcdef!"));
    }
}
