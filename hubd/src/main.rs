//! The `hubd` binary: see `hubd --help` and the README.

fn main() {
    std::process::exit(hubd::cli::main());
}
