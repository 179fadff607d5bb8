//! The `berth` binary: server and CLI in one.

/// mimalloc as the global allocator (measured in docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(berth::cli::main());
}
