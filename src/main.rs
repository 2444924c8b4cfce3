//! `syncstream`: the one command-line tool. Thin: it parses arguments and calls the
//! crates that hold the logic.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
