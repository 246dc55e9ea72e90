//! The VSS Demiurge control plane. Until its own issue lands it only says so:
//! the hub runs on its own (`hubd demo`), and this binary exits with code 2 so
//! no script mistakes it for a working service.

fn main() {
    eprintln!(
        "control-plane {}: not implemented yet; run `hubd demo --slots 16` for a hub with simulated slots",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
