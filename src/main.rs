//! `syncstream`: the one command-line tool. Thin: it parses arguments and calls the
//! crates that hold the logic.

mod check_mic;
mod cli;
mod config_file;
mod delay_command;
mod discover;
mod pairing;
mod release;
mod service;

fn main() -> std::process::ExitCode {
    cli::main()
}
