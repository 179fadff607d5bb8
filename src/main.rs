//! The `berth` binary: server and CLI in one.

/// mimalloc as the global allocator (measured in docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs [`set_allocator_options`] as a constructor: before `main` and before Rust allocates
/// anything, so the options hold for mimalloc's first arena too.
/// (ELF only: elsewhere mimalloc keeps its defaults.)
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static ALLOCATOR_OPTIONS: extern "C" fn() = set_allocator_options;

/// mimalloc's defaults keep memory berth no longer uses: an arena's memory is committed up
/// front (about 11 MB of idle RSS), and freed pages are returned to the system only after a
/// delay, often never for an idle server. berth returns them at once and commits on demand:
/// with 10,000 apps this took idle RSS from 97 to 69 MB (docs/PERFORMANCE.md). A
/// `MIMALLOC_<OPTION>` environment variable still overrides either setting.
#[cfg(target_os = "linux")]
extern "C" fn set_allocator_options() {
    // Option numbers of mimalloc 3 (`mi_option_e` in mimalloc.h); the Rust bindings name
    // only some of them.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    for (option, env, value) in
        [(ARENA_EAGER_COMMIT, c"MIMALLOC_ARENA_EAGER_COMMIT", 0), (PURGE_DELAY, c"MIMALLOC_PURGE_DELAY", 0)]
    {
        // SAFETY: getenv reads the environment, which nothing changes this early; mi_option_set
        // only stores a value.
        unsafe {
            if libc::getenv(env.as_ptr()).is_null() {
                libmimalloc_sys::mi_option_set(option, value);
            }
        }
    }
}

fn main() {
    std::process::exit(berth::cli::main());
}
