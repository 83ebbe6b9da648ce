//! The `notesctl` binary: parse the command line, run, turn the outcome into an exit code.
//! Everything else lives in the library; `notesctl::exit` maps errors to codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = notesctl::cli::parse(); // exits 2 on a usage error
    let outcome = notesctl::run(cli);
    // Log lines still in memory go out before the error message, and before the exit.
    notesctl::logging::flush();
    match outcome {
        Ok(code) => code,
        Err(err) => {
            if notesctl::is_broken_pipe(&err) {
                // `notesctl notes list | head` is not a failure.
                return ExitCode::from(notesctl::exit::OK);
            }
            eprintln!("notesctl: error: {err:#}");
            ExitCode::from(notesctl::exit::code_for(&err))
        }
    }
}
