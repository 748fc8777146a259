//! The `diskvault` command: parse arguments, call the library, map errors to
//! exit codes. Everything here uses only the library's public API.

mod cli;

fn main() {
    limit_malloc_arenas();
    std::process::exit(cli::run());
}

/// glibc gives every thread that allocates its own malloc arena (up to 8
/// per core), and memory freed into one is kept there for that arena's
/// next allocations. A restore allocates on its 8 request threads and
/// frees on the CPU threads, so each arena keeps a batch's worth: the
/// restore of the 2 GiB benchmark image peaked at 104-127 MiB with the
/// default and at 72 MiB (the key derivation's peak) with one arena per
/// core, at the same speed (README, Performance). Must run before any
/// thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = cores.clamp(2, 64) as libc::c_int;
        // SAFETY: mallopt only sets an allocator parameter; it is called
        // before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
