//! `notesctl users ...`: the users who may log in, managed from the machine itself (trusted
//! through its access to the database file or credentials). Passwords are read from the
//! terminal without echo, asked twice, or with `--password-stdin` from the first line of
//! standard input (for scripts); they are never taken as an argument, where `ps` and the shell
//! history would show them, and never printed or logged. An API token is printed once, when
//! it is made; the database keeps only its hash, so it cannot be shown again.

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::UsersCommand;
use crate::passwords;
use crate::secrets;
use crate::store::{Store, UserName};
use crate::timefmt;

pub async fn run(store: &Store, command: UsersCommand) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match command {
        UsersCommand::Add {
            name,
            password_stdin,
            json,
        } => {
            let name = UserName::parse(&name)?;
            let hash = new_password_hash(&name, password_stdin)?;
            let user = store.add_user(&name, &hash).await?;
            if json {
                serde_json::to_writer_pretty(&mut out, &user)?;
                writeln!(out)?;
            } else {
                eprintln!("added user {name}");
            }
        }
        UsersCommand::List { json } => {
            let users = store.users().await?;
            if json {
                serde_json::to_writer_pretty(&mut out, &users)?;
                writeln!(out)?;
            } else if users.is_empty() {
                eprintln!("no users: anyone who can reach the app may change notes");
            } else {
                writeln!(out, "{:<24} {:<24} PASSWORD SET", "NAME", "CREATED")?;
                for user in &users {
                    writeln!(
                        out,
                        "{:<24} {:<24} {}",
                        user.name,
                        timefmt::human(user.created_at),
                        timefmt::human(user.password_changed_at)
                    )?;
                }
            }
        }
        UsersCommand::Passwd {
            name,
            password_stdin,
        } => {
            let name = UserName::parse(&name)?;
            let hash = new_password_hash(&name, password_stdin)?;
            store.set_password(&name, &hash).await?;
            eprintln!("password of {name} changed");
        }
        UsersCommand::Rm { name } => {
            let name = UserName::parse(&name)?;
            store.remove_user(&name).await?;
            eprintln!("removed user {name}");
        }
        UsersCommand::Logout { name, json } => {
            let name = UserName::parse(&name)?;
            let ended = store.end_sessions_of(&name).await?;
            if json {
                let report = serde_json::json!({"user": name.as_str(), "sessions_ended": ended});
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                let plural = if ended == 1 { "" } else { "s" };
                eprintln!("ended {ended} session{plural} of {name}");
            }
        }
        UsersCommand::Token { name, label, json } => {
            let name = UserName::parse(&name)?;
            let token = secrets::new_secret(secrets::TOKEN_PREFIX)?;
            let added = store
                .add_token(&name, &label, &secrets::secret_hash(&token))
                .await?;
            if json {
                let report = serde_json::json!({
                    "user": name.as_str(),
                    "label": added.label,
                    "token": token,
                    "created_at": timefmt::rfc3339(added.created_at),
                });
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{token}")?;
                eprintln!(
                    "API token {:?} of {name}: shown only this once (the database keeps its \
                     hash); send it as the header `Authorization: Bearer <token>`",
                    added.label
                );
            }
        }
        UsersCommand::Tokens { name, json } => {
            let name = UserName::parse(&name)?;
            let tokens = store.tokens(&name).await?;
            if json {
                serde_json::to_writer_pretty(&mut out, &tokens)?;
                writeln!(out)?;
            } else if tokens.is_empty() {
                eprintln!("{name} has no API tokens (`notesctl users token {name}` makes one)");
            } else {
                writeln!(out, "{:<24} {:<24} LAST USED", "LABEL", "CREATED")?;
                for token in &tokens {
                    writeln!(
                        out,
                        "{:<24} {:<24} {}",
                        token.label,
                        timefmt::human(token.created_at),
                        token
                            .last_used_at
                            .map_or_else(|| "never".into(), timefmt::human)
                    )?;
                }
            }
        }
        UsersCommand::Revoke { name, label } => {
            let name = UserName::parse(&name)?;
            store.revoke_token(&name, &label).await?;
            eprintln!("revoked API token {label:?} of {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a new password for `name` and hashes it (the hash alone leaves this function).
fn new_password_hash(name: &UserName, from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        if !io::stdin().is_terminal() {
            anyhow::bail!(
                "no terminal to ask for the password on: pass --password-stdin and the password \
                 on standard input"
            );
        }
        let first = rpassword::prompt_password(format!("password for {name}: "))
            .context("reading the password")?;
        let again =
            rpassword::prompt_password("the same again: ").context("reading the password")?;
        if first != again {
            anyhow::bail!("the two passwords differ; nothing was changed");
        }
        first
    };
    Ok(passwords::hash(&password).map_err(PasswordRefused)?)
}

/// A password that cannot be used: bad input (exit code 65), like a bad note.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PasswordRefused(pub passwords::PasswordError);
