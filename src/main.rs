//! The `notesctl` binary: parse the command line, run, turn the outcome into an exit code.
//! Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = notesctl::cli::Cli::parse(); // exits 2 on a usage error
    let outcome = notesctl::run(cli);
    // Log lines still in memory go out before the error message, and before the exit.
    notesctl::logging::flush();
    match outcome {
        Ok(code) => code,
        Err(err) => {
            if notesctl::is_broken_pipe(&err) {
                // `notesctl notes list | head` is not a failure.
                return ExitCode::SUCCESS;
            }
            eprintln!("notesctl: error: {err:#}");
            if err
                .downcast_ref::<notesctl::server::DatabaseFileGone>()
                .is_some()
            {
                return ExitCode::from(notesctl::server::EXIT_DATABASE_FILE_GONE);
            }
            ExitCode::from(1)
        }
    }
}
