//! Command-line definitions (clap). Raw values only: `config::Config` validates and merges them
//! with the environment and notes.toml. `parse` also notes which values came from environment
//! variables, so that a mistake in one names the variable, not a flag the user never typed.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::MAX_WORKERS;
use crate::store::UserName;

#[derive(Debug, Parser)]
#[command(
    name = "notesctl",
    version,
    about = "The Notes web app, its command line, and a supervisor for many instances, sharing one SQLite file or PostgreSQL database",
    propagate_version = true,
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    /// Configuration file [default: the nearest notes.toml in this folder or its parents,
    /// else $XDG_CONFIG_HOME/notesctl/notes.toml]
    #[arg(long, global = true, env = "NOTES_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// The database: a SQLite file, or a PostgreSQL server as a `postgres://` URL (overrides
    /// `database` in notes.toml; give a URL with a password through NOTES_DB or notes.toml,
    /// since a command line is visible to every user)
    #[arg(long, global = true, env = "NOTES_DB", value_name = "PATH|URL")]
    pub db: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,

    /// The environment variables whose values were used (filled by `parse`).
    #[arg(skip)]
    pub from_env: Vec<String>,
}

/// The exit codes, for `--help` and the man page (`exit` defines them; the README has the same
/// table).
const EXIT_CODES: &str = "Exit codes:
  0   success
  1   failure (e.g. no database where one must be, no cluster running)
  2   usage: a mistake on the command line or in an environment variable
  3   status: an instance is not ready
  4   status: an instance was given up
  65  bad input refused (an invalid note, a taken key, import lines skipped, a bad user or token label)
  66  no note with that key, no user with that name, or no token with that label
  69  the database cannot be opened, reached or used
  75  busy, try again (database locked, note changed meanwhile, port in use)
  78  notes.toml, a flag or a variable holds a value that cannot be used
  79  serve: the database file was deleted or replaced (a supervisor starts it again)";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one instance of the Notes web app
    Serve(ServeArgs),
    /// Run and supervise several instances on the ports of notes.toml ([cluster] ports)
    Cluster(ClusterArgs),
    /// Show what the running cluster is doing (exit code 0: all ready; 3: an instance is not
    /// ready; 4: an instance was given up; 1: no cluster)
    Status {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// A live view of the running cluster, refreshed every second: requests, latency, errors,
    /// memory, CPU and streams per instance, and the last supervisor events (q or Ctrl-C quits;
    /// exit code 1: no cluster)
    Top {
        /// Print one snapshot as JSON and exit
        #[arg(long)]
        json: bool,
    },
    /// Re-read notes.toml and replace the running cluster's instances one at a time, without
    /// dropping requests (also SIGHUP to the cluster)
    Reload {
        /// Print JSON instead of lines
        #[arg(long)]
        json: bool,
    },
    /// Replace instances one at a time without dropping requests; revives failed ones
    Restart {
        /// The ports of the instances to restart [default: every instance]
        #[arg(value_name = "PORT")]
        ports: Vec<u16>,
        /// Print JSON instead of lines
        #[arg(long)]
        json: bool,
    },
    /// Run N instances: adds ports after the last one, or removes the last ones
    Scale {
        /// How many instances to run (1 to 256)
        #[arg(value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
        instances: u16,
        /// Print JSON instead of lines
        #[arg(long)]
        json: bool,
    },
    /// Stop the running cluster gracefully and wait until it has exited
    Stop {
        /// Print JSON instead of lines
        #[arg(long)]
        json: bool,
    },
    /// Show the cluster's recent output, and with -f keep following it
    Logs {
        /// Only this instance's lines
        port: Option<u16>,
        /// Keep printing new lines until interrupted
        #[arg(long, short)]
        follow: bool,
        /// How many recent lines to show first
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: usize,
    },
    /// Read and write notes from the command line (running instances see the changes)
    Notes {
        #[command(subcommand)]
        command: NotesCommand,
    },
    /// Manage the users who may log in (passwords are stored as Argon2id hashes only)
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Print a shell completion script (e.g. `notesctl completions bash >
    /// ~/.local/share/bash-completion/completions/notesctl`)
    Completions {
        /// The shell to complete in
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; e.g. `notesctl man > ~/.local/share/man/man1/notesctl.1`)
    Man {
        /// A subcommand whose page to print instead (e.g. `notes add`)
        #[arg(value_name = "COMMAND")]
        command: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port to listen on (0 picks a free one) [notes.toml: serve.port; default: 3000]
    #[arg(long, short, env = "PORT")]
    pub port: Option<u16>,

    /// Address to bind [notes.toml: serve.host; default: 127.0.0.1]
    #[arg(long, env = "NOTES_HOST")]
    pub host: Option<String>,

    /// Threads serving requests [notes.toml: serve.workers; default: one per CPU core]
    #[arg(long, env = "NOTES_WORKERS", value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_WORKERS)))]
    pub workers: Option<u16>,

    /// Refuse to create the database file (the supervisor starts instances so: a missing file
    /// was deleted, and an empty new one would hide it)
    #[arg(long, hide = true)]
    pub existing_db: bool,

    #[command(flatten)]
    pub hosts: HostArgs,

    /// Open /events streams allowed; more are answered 503 with Retry-After
    /// [notes.toml: serve.max_event_streams; default: 10000]
    #[arg(long, env = "NOTES_MAX_EVENT_STREAMS", value_parser = clap::value_parser!(usize))]
    pub max_event_streams: Option<usize>,
}

/// `--allowed-host`, the same for `serve` and `cluster` (which passes it on to its instances).
#[derive(Debug, Args)]
pub struct HostArgs {
    /// A host name (or address) requests may name, besides loopback ones and the bound
    /// address; repeat for more. Other hosts get 421 [notes.toml: serve.allowed_hosts;
    /// environment: comma-separated]
    #[arg(
        long = "allowed-host",
        env = "NOTES_ALLOWED_HOSTS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Number of instances [default: one per port in cluster.ports]
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u16).range(1..=256))]
    pub instances: Option<u16>,

    /// Address to bind [notes.toml: serve.host; default: 127.0.0.1]
    #[arg(long, env = "NOTES_HOST")]
    pub host: Option<String>,

    /// Threads serving requests in each instance [notes.toml: serve.workers; default: the CPU
    /// cores divided among the instances, at least 1]
    #[arg(long, env = "NOTES_WORKERS", value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_WORKERS)))]
    pub workers: Option<u16>,

    #[command(flatten)]
    pub hosts: HostArgs,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user; the password is asked for twice on the terminal (creates the database if
    /// there is none)
    Add {
        /// The user's name: letters, digits, '.', '_' and '-' (at most 64)
        name: String,
        /// Read the password from the first line of standard input instead of the terminal
        #[arg(long)]
        password_stdin: bool,
        /// Print the new user as JSON
        #[arg(long)]
        json: bool,
    },
    /// List the users (never their passwords or hashes)
    List {
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Set a user's password; asked for twice on the terminal. Ends the user's sessions: a
    /// new password logs the user out everywhere (API tokens stay valid)
    Passwd {
        /// The user whose password to set
        name: String,
        /// Read the password from the first line of standard input instead of the terminal
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user, with the user's sessions and API tokens
    Rm {
        /// The user to remove
        name: String,
    },
    /// Log a user out everywhere: end every session of the user (API tokens stay valid)
    Logout {
        /// The user to log out
        name: String,
        /// Print JSON ({"user", "sessions_ended"}) on standard output
        #[arg(long)]
        json: bool,
    },
    /// Make an API token for a user and print it, this once only (the database keeps only its
    /// hash); clients send it as `Authorization: Bearer <token>`
    Token {
        /// The user the token acts as
        name: String,
        /// A label to tell the user's tokens apart and revoke one (unique per user)
        #[arg(long = "name", value_name = "LABEL", default_value = "default")]
        label: String,
        /// Print JSON ({"user", "label", "token", "created_at"}) instead of the bare token
        #[arg(long)]
        json: bool,
    },
    /// List a user's API tokens by label (never the tokens or their hashes)
    Tokens {
        /// The user whose tokens to list
        name: String,
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Revoke one of a user's API tokens: requests carrying it are refused from now on
    Revoke {
        /// The user the token belongs to
        name: String,
        /// The token's label (see `notesctl users tokens NAME`)
        label: String,
    },
}

impl UsersCommand {
    /// Only adding a user may create the database (see `NotesCommand::creates_database`).
    pub fn creates_database(&self) -> bool {
        matches!(self, Self::Add { .. })
    }
}

#[derive(Debug, Subcommand)]
pub enum NotesCommand {
    /// Add a note and print its key (creates the database if there is none)
    Add {
        /// The note's title (1 to 200 characters)
        title: String,
        /// The body; "-" reads it from standard input
        body: String,
        /// Key to use [default: generated from the title]
        #[arg(long, short)]
        key: Option<String>,
        /// Print the new note as JSON instead of its key
        #[arg(long)]
        json: bool,
        /// The author recorded [default: the local user]
        #[arg(long = "as", value_name = "NAME", value_parser = crate::author::parse_as)]
        author: Option<UserName>,
    },
    /// List notes, newest first
    #[command(alias = "ls")]
    List {
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
        /// Show at most N notes
        #[arg(long, short = 'n', default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        limit: u32,
    },
    /// Show one note
    Show {
        /// The note's key
        key: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Change a note's title and/or body
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true).args(["title", "body"]))]
    Edit {
        /// The note's key
        key: String,
        /// New title
        #[arg(long, short)]
        title: Option<String>,
        /// New body; "-" reads it from standard input
        #[arg(long, short)]
        body: Option<String>,
        /// Print the updated note as JSON
        #[arg(long)]
        json: bool,
        /// The author recorded [default: the local user]
        #[arg(long = "as", value_name = "NAME", value_parser = crate::author::parse_as)]
        author: Option<UserName>,
    },
    /// Delete a note
    #[command(alias = "delete")]
    Rm {
        /// The note's key
        key: String,
        /// Print the deleted note as JSON
        #[arg(long)]
        json: bool,
    },
    /// Import notes from JSON lines ({"key"?, "title", "body"} per line; creates the database
    /// if there is none)
    Import {
        /// File to read; "-" is standard input
        file: String,
        /// Print the summary as JSON on standard output
        #[arg(long)]
        json: bool,
        /// The author recorded for new notes; a line's own created_by and updated_by, and a
        /// note moved with its version and times, keep theirs [default: the local user]
        #[arg(long = "as", value_name = "NAME", value_parser = crate::author::parse_as)]
        author: Option<UserName>,
    },
    /// Export every note as JSON lines, oldest first [default: to standard output]
    Export {
        /// File to write (must not exist); "-" is standard output
        #[arg(default_value = "-")]
        file: String,
    },
}

impl NotesCommand {
    /// True for the commands that may create the database: the rest only read or change notes
    /// that must already exist, and a new empty file would only hide that they are elsewhere.
    pub fn creates_database(&self) -> bool {
        matches!(self, Self::Add { .. } | Self::Import { .. })
    }
}

/// Parses the command line, exiting as clap does on a mistake (code 2) or for `--help`. A bad
/// value that came from an environment variable is reported under the variable's name.
pub fn parse() -> Cli {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            if let Some(message) = env_value_error(&e) {
                eprintln!("error: {message}");
                std::process::exit(2);
            }
            e.exit()
        }
    };
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli.from_env = env_sources(&Cli::command(), &matches);
    cli
}

/// "PORT: invalid value 'abc': invalid digit found in string" for a clap error about a value
/// that came from the environment (its flag is not on the command line, its variable is set).
fn env_value_error(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(shown)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = shown.strip_prefix("--")?.split([' ', '=']).next()?;
    let arg = find_arg(&Cli::command(), long)?;
    let variable = arg.get_env()?.to_str()?.to_owned();
    std::env::var_os(&variable)?;
    let typed = std::env::args().skip(1).any(|a| {
        a == format!("--{long}")
            || a.starts_with(&format!("--{long}="))
            || arg
                .get_short()
                .is_some_and(|c| a.starts_with(&format!("-{c}")) && !a.starts_with("--"))
    });
    if typed {
        return None;
    }
    let rendered = e.to_string();
    let first = rendered.lines().next()?.strip_prefix("error: ")?;
    Some(format!(
        "{variable}: {}",
        first.replace(&format!(" for '{shown}'"), "")
    ))
}

/// The argument with long name `long` in `command` or any of its subcommands.
fn find_arg(command: &clap::Command, long: &str) -> Option<clap::Arg> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .cloned()
        .or_else(|| {
            command
                .get_subcommands()
                .find_map(|sub| find_arg(sub, long))
        })
}

/// The names of the environment variables whose values `matches` used, down the subcommands.
fn env_sources(command: &clap::Command, matches: &ArgMatches) -> Vec<String> {
    let mut found: Vec<String> = command
        .get_arguments()
        .filter(|a| matches.value_source(a.get_id().as_str()) == Some(ValueSource::EnvVariable))
        .filter_map(|a| a.get_env().and_then(|v| v.to_str()).map(str::to_owned))
        .collect();
    if let Some((name, sub_matches)) = matches.subcommand()
        && let Some(sub) = command.find_subcommand(name)
    {
        found.extend(env_sources(sub, sub_matches));
    }
    found
}

/// The completion script for `shell`, as `notesctl completions SHELL` prints it.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "notesctl", out);
}

/// The manual page (roff) of `notesctl`, or of one of its subcommands (`["notes", "add"]`),
/// as `notesctl man [COMMAND...]` prints it. The main page lists the subcommands; each has a
/// page of its own, named as git names its pages (`notesctl-notes-add`).
pub fn man_page(path: &[String], out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let mut command = Cli::command();
    let mut name = String::from("notesctl");
    for part in path {
        let Some(sub) = command.find_subcommand(part).cloned() else {
            anyhow::bail!("no command `{name} {part}`; see `{name} --help`");
        };
        name = format!("{name}-{}", sub.get_name());
        command = sub;
    }
    let command = command
        .name(name.clone())
        .display_name(name.replace('-', " "));
    clap_mangen::Man::new(command).render(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_argument_has_help() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} {id} has no help text");
            }
            for sub in command.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        let command = Cli::command();
        command.clone().debug_assert();
        check(&command, "notesctl");
    }
}
