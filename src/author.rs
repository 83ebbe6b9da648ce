//! Who the command line records as the author of a note it writes: the name given with
//! `--as`, else the name of the local user running it. A label only: the name need not be a
//! user of the store (`notesctl users`), but it has the form of one (`UserName`), so that it
//! is as safe to show in a page, a log line or a shell.

use crate::store::UserName;

/// Parses the value of `--as` (clap reports a refusal as a usage error, exit code 2).
pub fn parse_as(raw: &str) -> Result<UserName, String> {
    UserName::parse(raw).map_err(|e| e.to_string())
}

/// The author of a command's writes: `given` (`--as`), else the local user. `None` when
/// neither is there or the local name is not a valid user name (a note without an author is
/// better than a command that fails for a name nobody typed).
pub fn resolve(given: Option<UserName>) -> Option<String> {
    given
        .or_else(local_user)
        .map(|name| name.as_str().to_owned())
}

/// The account name of the process's user, from the user database; `$USER` when it has no
/// entry there (a container run under a bare uid, say).
fn local_user() -> Option<UserName> {
    let from_uid = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|user| user.name);
    let name = from_uid.or_else(|| std::env::var("USER").ok())?;
    UserName::parse(&name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_name_wins_and_a_bad_one_is_refused() {
        let alice = parse_as("alice").expect("a valid name");
        assert_eq!(resolve(Some(alice)).as_deref(), Some("alice"));
        let refused = parse_as("a b").expect_err("a space is not allowed");
        assert!(refused.contains("\"a b\""), "{refused}");
    }
}
