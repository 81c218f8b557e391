#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    ocigate::cli::main()
}
