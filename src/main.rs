//! The `ocigate` command: everything is in the library (`ocigate::cli`).

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    ocigate::cli::main()
}
