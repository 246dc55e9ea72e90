//! The `control-plane` binary. Its HTTP API is being built (see the open
//! control-plane issue); until then it says so and exits with code 2, so no
//! script mistakes it for a working service.

fn main() {
    eprintln!(
        "control-plane {}: the HTTP API is not served yet; run `hubd demo --slots 16` for a hub with simulated slots",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
