//! notesctl: the Notes web app, its command line and (later) its supervisor, as a library the
//! binary, the tests and the examples share.
//!
//! Layout: `config` resolves settings; `store` owns the data rules; `web` serves pages and the
//! JSON API; `server` binds and runs one instance; `metrics` records what an instance does for
//! `GET /metrics`; `notes_cmd` is the `notes` subcommand, `top_cmd` is `notesctl top`.

pub mod author;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod exit;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod notes_cmd;
pub mod passwords;
pub mod secrets;
pub mod server;
pub mod store;
pub mod timefmt;
pub mod top_cmd;
pub mod transfer;
pub mod units;
pub mod users_cmd;
pub mod web;

use std::process::ExitCode;

use anyhow::Context;
use cli::{Cli, Command};
use config::{Config, Overrides};

/// Runs a parsed command line. Errors are printed by `main`, with the code `exit::code_for`
/// gives them.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Neither reads a configuration: they describe the command line itself.
    match &cli.command {
        Command::Completions { shell } => {
            cli::completions(*shell, &mut std::io::stdout().lock());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man { command } => {
            cli::man_page(command, &mut std::io::stdout().lock())?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let overrides = match &cli.command {
        Command::Serve(args) => Overrides {
            database: cli.db.clone(),
            host: args.host.clone(),
            port: args.port,
            workers: args.workers,
            db_must_exist: args.existing_db,
            allowed_hosts: args.hosts.allowed_hosts.clone(),
            max_event_streams: args.max_event_streams,
            from_env: cli.from_env.clone(),
        },
        Command::Cluster(args) => Overrides {
            database: cli.db.clone(),
            host: args.host.clone(),
            port: None,
            workers: args.workers,
            db_must_exist: false,
            allowed_hosts: args.hosts.allowed_hosts.clone(),
            max_event_streams: None,
            from_env: cli.from_env.clone(),
        },
        Command::Notes { .. }
        | Command::Users { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Status { .. }
        | Command::Top { .. }
        | Command::Reload { .. }
        | Command::Restart { .. }
        | Command::Scale { .. }
        | Command::Stop { .. }
        | Command::Logs { .. } => Overrides {
            database: cli.db.clone(),
            ..Overrides::default()
        },
    };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    let socket = cluster::control::socket_path(&config);
    // A rolling operation may take each instance its readiness timeout plus its stop timeout.
    let roll_timeout = (config.cluster.ready_timeout + config.cluster.stop_timeout) * 64;
    match cli.command {
        Command::Serve(_) => {
            logging::init("info");
            server::run(config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster(args) => {
            logging::init("info");
            let origin = cluster::Origin {
                file: cli.config.clone(),
                overrides,
            };
            cluster::run(config, args.instances.map(usize::from), origin)
        }
        Command::Status { json } => {
            let report = cluster::request_status(&socket)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", cluster::client::format_status(&report));
            }
            Ok(ExitCode::from(cluster::client::status_code(&report)))
        }
        Command::Top { json } => top_cmd::run(&socket, json),
        Command::Reload { json } => print_op(cluster::client::reload(&socket, roll_timeout)?, json),
        Command::Restart { ports, json } => print_op(
            cluster::client::restart(&socket, ports, roll_timeout)?,
            json,
        ),
        Command::Scale { instances, json } => print_op(
            cluster::client::scale(&socket, usize::from(instances), roll_timeout)?,
            json,
        ),
        Command::Stop { json } => {
            let timeout = config.cluster.stop_timeout + std::time::Duration::from_secs(10);
            print_op(cluster::client::stop(&socket, timeout)?, json)
        }
        Command::Logs {
            port,
            follow,
            lines,
        } => {
            cluster::client::logs(&socket, lines, port, follow, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Notes { command } => {
            let creates = command.creates_database();
            with_store(&config, creates, async |store| {
                notes_cmd::run(&store, command).await
            })
        }
        Command::Users { command } => {
            let creates = command.creates_database();
            with_store(&config, creates, async |store| {
                users_cmd::run(&store, command).await
            })
        }
        Command::Completions { .. } | Command::Man { .. } => Ok(ExitCode::SUCCESS),
    }
}

/// Opens the store (creating the database only when `creates`) and runs a command on it, on
/// one thread: a command does one thing at a time.
fn with_store(
    config: &Config,
    creates: bool,
    command: impl AsyncFnOnce(store::Store) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    logging::init("warn");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let missing = if creates {
        config::IfMissing::Create
    } else {
        config::IfMissing::Refuse
    };
    runtime.block_on(async {
        let store = config.open_store(missing).await?;
        let done = command(store.clone()).await;
        store.settle().await;
        done
    })
}

/// Prints what a cluster operation did, as lines or JSON; exit code 1 when it did not
/// complete.
fn print_op(report: cluster::control::OpReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for step in &report.steps {
            println!("{step}");
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// True when the error is a write to a closed pipe (`notesctl notes list | head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == BrokenPipe)
            // serde_json hides the io::Error it wraps from `source()`.
            || e.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(BrokenPipe))
    })
}
