//! Times berth's build-context work on a generated source tree: reading the files, hashing
//! them, and packing the tar the engine builds from. Used by bench/build.sh.
//!
//! cargo run --release --example context_bench -- [FILES]

use std::time::Instant;

use berth::build::context::BuildContext;

fn main() -> std::io::Result<()> {
    let files: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir()?;
    for i in 0..files {
        let sub = dir.path().join(format!("d{}", i / 100));
        std::fs::create_dir_all(&sub)?;
        std::fs::write(sub.join(format!("f{i}.py")), format!("# file {i}\nprint({i})\n"))?;
    }
    let started = Instant::now();
    let mut ctx = BuildContext::new();
    ctx.add_dir(dir.path())?;
    let read = started.elapsed();
    let hash = ctx.content_hash(&[("spec", "bench")]);
    let hashed = started.elapsed();
    let tar = ctx.tar()?;
    let total = started.elapsed();
    println!(
        "files={files} read_ms={:.1} hash_ms={:.1} tar_ms={:.1} total_ms={:.1} tar_bytes={} hash={}",
        read.as_secs_f64() * 1e3,
        (hashed - read).as_secs_f64() * 1e3,
        (total - hashed).as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        tar.len(),
        &hash[..12]
    );
    Ok(())
}
