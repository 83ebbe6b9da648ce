//! Password hashing: Argon2id (the RustCrypto `argon2` crate) in the PHC string format, which
//! carries its own salt and parameters, so a hash made with other parameters still verifies.
//!
//! The parameters are OWASP's first recommendation for Argon2id (19 MiB of memory, 2 passes,
//! 1 lane): a login then costs tens of milliseconds of one core, not seconds, while each guess
//! of an attacker who has the hashes costs as much (BENCHMARKS.md has the measured time).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest, in bytes: hashing is the costly part of a login, and it grows with the input.
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is shorter than {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("the password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("hashing the password failed: {0}")]
    Hashing(String),
}

fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks that a new password is acceptable.
pub fn check(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

/// The hash to store for a new password (checked first), with a fresh random salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    check(password)?;
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

/// Whether `password` matches `stored`. A stored value that is not a hash matches nothing.
pub fn verify(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(stored).is_ok_and(|parsed| {
        hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only_and_never_contains_it() {
        let stored = hash("correct horse").expect("hashed");
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(!stored.contains("correct horse"));
        assert!(verify("correct horse", &stored));
        assert!(!verify("correct horsf", &stored));
        assert!(!verify("correct horse", "not a hash"));
        // A fresh salt each time.
        assert_ne!(stored, hash("correct horse").expect("hashed"));
    }

    #[test]
    fn passwords_that_are_too_short_or_too_long_are_refused() {
        assert!(matches!(hash("short"), Err(PasswordError::TooShort)));
        assert!(matches!(
            hash(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(PasswordError::TooLong)
        ));
    }
}
