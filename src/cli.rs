//! Command-line definitions (clap). Raw values only: `config::Config` validates and merges them
//! with the environment and notes.toml.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::MAX_WORKERS;

#[derive(Debug, Parser)]
#[command(
    name = "notesctl",
    version,
    about = "The Notes web app, its command line, and a supervisor for many instances, sharing one SQLite file or PostgreSQL database",
    propagate_version = true
)]
pub struct Cli {
    /// Configuration file [default: ./notes.toml when it exists]
    #[arg(long, global = true, env = "NOTES_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// The database: a SQLite file, or a PostgreSQL server as a `postgres://` URL (overrides
    /// `database` in notes.toml; give a URL with a password through NOTES_DB or notes.toml,
    /// since a command line is visible to every user)
    #[arg(long, global = true, env = "NOTES_DB", value_name = "PATH|URL")]
    pub db: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

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
    /// Re-read notes.toml and replace the running cluster's instances one at a time, without
    /// dropping requests (also SIGHUP to the cluster)
    Reload {
        /// Print JSON instead of lines
        #[arg(long)]
        json: bool,
    },
    /// Replace instances one at a time without dropping requests; revives failed ones
    Restart {
        /// The instances' ports [default: every instance]
        ports: Vec<u16>,
        /// Print JSON instead of lines
        #[arg(long)]
        json: bool,
    },
    /// Run N instances: adds ports after the last one, or removes the last ones
    Scale {
        #[arg(value_parser = clap::value_parser!(u16).range(1..=256))]
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
pub enum NotesCommand {
    /// Add a note and print its key
    Add {
        title: String,
        /// The body; "-" reads it from standard input
        body: String,
        /// Key to use [default: generated from the title]
        #[arg(long, short)]
        key: Option<String>,
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
        key: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Change a note's title and/or body
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true).args(["title", "body"]))]
    Edit {
        key: String,
        /// New title
        #[arg(long, short)]
        title: Option<String>,
        /// New body; "-" reads it from standard input
        #[arg(long, short)]
        body: Option<String>,
    },
    /// Delete a note
    #[command(alias = "delete")]
    Rm { key: String },
    /// Import notes from JSON lines ({"key"?, "title", "body"} per line); "-" reads stdin
    Import { file: String },
    /// Export every note as JSON lines, oldest first [default: to standard output]
    Export {
        /// File to write (must not exist); "-" is standard output
        #[arg(default_value = "-")]
        file: String,
    },
}
