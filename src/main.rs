//! The `berth` binary: server and CLI in one.

fn main() {
    std::process::exit(berth::cli::main());
}
