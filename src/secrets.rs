//! Secrets handed to clients: session ids (in a cookie) and API tokens (in an
//! `Authorization: Bearer` header). The client keeps the secret; the store keeps only its hash,
//! so a copy of the database lets no one act as a user.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// What an API token starts with, so that one found in a log or a paste is recognisable.
pub const TOKEN_PREFIX: &str = "nct_";
/// What a session id starts with: nothing (it lives in a cookie, where no one reads it).
pub const SESSION_PREFIX: &str = "";

/// Random bytes in a secret: 256 bits, beyond any guessing.
const SECRET_BYTES: usize = 32;

/// The operating system could not give random bytes (no secret is made without them).
#[derive(Debug, thiserror::Error)]
#[error("the operating system gave no random bytes for a new secret: {0}")]
pub struct NoRandomness(String);

/// A new secret: `prefix` (`SESSION_PREFIX` or `TOKEN_PREFIX`) and 32 bytes from the
/// operating system's random source, base64url without padding: 43 characters that are safe
/// in a cookie, a header and a URL.
pub fn new_secret(prefix: &str) -> Result<String, NoRandomness> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::getrandom(&mut bytes).map_err(|e| NoRandomness(e.to_string()))?;
    let mut secret = String::with_capacity(prefix.len() + 43);
    secret.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut secret);
    Ok(secret)
}

/// What the store keeps of a secret: its SHA-256, as 64 lowercase hex digits.
///
/// A fast hash is enough here, unlike for passwords (`crate::passwords`): a password is chosen
/// by a person and may be guessed, so its hash must make each guess costly; a secret from
/// `new_secret` is 256 random bits, which no amount of guessing finds, however quick each
/// guess. A fast hash also keeps the check of every request that carries one cheap.
pub fn secret_hash(secret: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest.iter() {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_url_safe_and_new_each_time() {
        let token = new_secret(TOKEN_PREFIX).expect("random bytes");
        assert!(token.starts_with("nct_"), "{token}");
        let body = &token[TOKEN_PREFIX.len()..];
        assert_eq!(body.len(), 43, "{token}");
        assert!(
            body.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
        let decoded = URL_SAFE_NO_PAD.decode(body).expect("base64url");
        assert_eq!(decoded.len(), SECRET_BYTES);
        let session = new_secret(SESSION_PREFIX).expect("random bytes");
        assert_eq!(session.len(), 43);
        assert_ne!(session, new_secret("").expect("random bytes"));
    }

    #[test]
    fn the_hash_is_sha256_in_hex() {
        // The SHA-256 test vector of "abc" (FIPS 180-2).
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let secret = new_secret("nct_").expect("random bytes");
        let hash = secret_hash(&secret);
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, secret_hash(&secret));
        assert!(!hash.contains(&secret[4..]));
    }
}
