//! The `control-plane` binary: see `control-plane --help` and the README.

fn main() {
    std::process::exit(control_plane::cli::main());
}
