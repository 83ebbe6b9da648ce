//! Who may log in: user names and what the store keeps of each user. The store keeps a
//! password's hash only (see `crate::passwords`), never the password, and never hands the hash
//! to anything but the check of a login. Sessions and API tokens are kept the same way: by the
//! hash of their secret (see `crate::secrets`), never the secret.

use serde::Serialize;

use super::ValidationError;

/// The longest user name, in characters.
pub const MAX_USER_NAME_CHARS: usize = 64;

/// The longest label of an API token, in characters.
pub const MAX_TOKEN_LABEL_CHARS: usize = 64;

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

/// An API token as listed: its label and times, never the token or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Token {
    /// Unique among one user's tokens: how the user tells them apart and revokes one.
    pub label: String,
    /// Unix milliseconds (RFC 3339 in JSON).
    #[serde(serialize_with = "crate::timefmt::serialize_millis")]
    pub created_at: i64,
    /// When a request last carried it, to the minute at best (`null`: never): see
    /// `Store::touch_token`.
    #[serde(serialize_with = "crate::timefmt::serialize_opt_millis")]
    pub last_used_at: Option<i64>,
}

/// Checks a token's label: 1 to 64 characters, none of them control characters (a label is
/// shown in a table and a log line).
pub(crate) fn check_token_label(label: &str) -> Result<(), ValidationError> {
    let bad = |why: &str| ValidationError::TokenLabel(format!("token label {label:?}: {why}"));
    if label.trim().is_empty() {
        return Err(bad("it is empty"));
    }
    if label.chars().count() > MAX_TOKEN_LABEL_CHARS {
        return Err(bad(&format!(
            "it is longer than {MAX_TOKEN_LABEL_CHARS} characters"
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(bad("it must not contain control characters"));
    }
    Ok(())
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

    #[test]
    fn token_labels_are_short_printable_text() {
        for good in ["default", "ci on main", "laptop (2026)", &"x".repeat(64)] {
            assert!(check_token_label(good).is_ok(), "{good}");
        }
        for bad in ["", "  ", "a\tb", "line\nbreak", &"x".repeat(65)] {
            assert!(check_token_label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_token_is_listed_with_rfc3339_times() {
        let token = Token {
            label: "ci".into(),
            created_at: 0,
            last_used_at: None,
        };
        assert_eq!(
            serde_json::to_value(&token).expect("JSON"),
            serde_json::json!({"label": "ci", "created_at": "1970-01-01T00:00:00.000Z", "last_used_at": null})
        );
        let used = Token {
            last_used_at: Some(1000),
            ..token
        };
        assert_eq!(
            serde_json::to_value(&used).expect("JSON")["last_used_at"],
            "1970-01-01T00:00:01.000Z"
        );
    }
}
