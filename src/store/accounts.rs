//! Who may log in: user names and what the store keeps of each user. The store keeps a
//! password's hash only (see `crate::passwords`), never the password, and never hands the hash
//! to anything but the check of a login.

use serde::Serialize;

use super::ValidationError;

/// The longest user name, in characters.
pub const MAX_USER_NAME_CHARS: usize = 64;

/// A user name: 1 to 64 of ASCII letters, digits, `.`, `_` and `-`, starting with a letter or a
/// digit. Plain ASCII, so two names that look alike are the same name, and a name is safe in a
/// page, a log line and a shell.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserName(String);

impl UserName {
    pub fn parse(name: &str) -> Result<Self, ValidationError> {
        let bad = |why: &str| ValidationError::UserName(format!("user name {name:?}: {why}"));
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.chars().count() > MAX_USER_NAME_CHARS {
            return Err(bad(&format!(
                "it is longer than {MAX_USER_NAME_CHARS} characters"
            )));
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(bad("it must start with a letter or a digit"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(bad(&format!(
                "{c:?} is not allowed (letters, digits, '.', '_' and '-' are)"
            )));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user as listed: no hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub name: String,
    /// Unix milliseconds (RFC 3339 in JSON).
    #[serde(serialize_with = "crate::timefmt::serialize_millis")]
    pub created_at: i64,
    /// When the password was last set.
    #[serde(serialize_with = "crate::timefmt::serialize_millis")]
    pub password_changed_at: i64,
}

impl User {
    /// A user added at `at` (its password set then too).
    pub(crate) fn new(name: &UserName, at: i64) -> Self {
        Self {
            name: name.to_string(),
            created_at: at,
            password_changed_at: at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_plain_ascii_words() {
        for good in ["alice", "a", "Bob.Smith", "x_1-2", "9lives"] {
            assert!(UserName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a b", "é", "a/b", "<b>", &"x".repeat(65)] {
            assert!(UserName::parse(bad).is_err(), "{bad}");
        }
    }
}
