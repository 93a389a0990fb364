//! The process's memory allocator: jemalloc, purging freed memory in the background.
//! Every Presence binary takes it with this crate's `jemalloc` feature; a
//! binary calls [`purge_in_background`] once at start.
//!
//! Measured on the 2-core bench machine (docs/benchmarks.md, "Memory"): one
//! build run on glibc's malloc and on jemalloc 5.3 (the version this crate links)
//! preloaded:
//! - glibc kept the small allocations of a large inventory upload (the parsed
//!   records, 32-byte strings by the million) in its free lists: after 1,000,000
//!   tickets the server held 344 MiB, of which `malloc_trim` gave back 161 MiB.
//!   Further uploads added to it, since each may land in another arena: 283, 387,
//!   397 and 438 MiB after four uploads of 1,000,000 tickets (192 MiB store
//!   cache). jemalloc hands freed pages back within seconds: 154, 277, 271 and
//!   274 MiB after the same four;
//! - the server spent about a quarter less CPU per enter scan (66 against 88 µs,
//!   wrk at 64 connections).
//!
//! The price: redb's cached pages (4,096 bytes plus an `Arc` header) fall in
//! jemalloc's 5,120-byte size class, so the store's cache costs about 1.25 times
//! its configured size in resident memory.
//!
//! Freed pages are purged by jemalloc's background thread, so memory comes back
//! while the server is idle too, not only when it allocates again.
//!
//! In the distributed services glibc's malloc and free took an eighth of the
//! gateway's CPU samples under load and a fifth of its instructions per scan;
//! jemalloc cut the gateway's instructions per scan by 8–14 % and the
//! validator's by 7 % (docs/benchmarks.md, "Instructions per scan").

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Starts jemalloc's background purging. Without it freed memory goes back to the
/// system only as a side effect of later allocations.
pub fn purge_in_background() {
    #[cfg(not(target_env = "msvc"))]
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "jemalloc's background purging could not start; freed memory returns only as the server allocates");
    }
}
