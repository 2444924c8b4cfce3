//! `syncstream`: the one command-line tool. Thin: it parses arguments and calls the
//! crates that hold the logic.

mod cli;
mod delay_command;

fn main() -> std::process::ExitCode {
    cli::main()
}
