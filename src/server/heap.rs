//! Giving memory back to the operating system after allocations end.
//!
//! A TURN server's memory follows its allocation count: a busy hour can hold thousands
//! of allocations, and then the table empties. glibc's allocator would keep that peak
//! resident for good (coturn's resident size never comes down). Two settings fix that:
//!
//! - fixed trim and mmap thresholds: glibc otherwise raises its trim threshold to twice
//!   the largest block it ever freed from mmap (a grown allocation table is such a
//!   block), after which the top of every per-thread heap stays resident;
//! - an explicit trim after the core shrank its tables, because `malloc_trim` is the
//!   only call that returns free pages from the middle of a heap.
//!
//! Both are no-ops on other C libraries (musl returns memory on its own).

/// Trim and mmap threshold (glibc's initial default, made fixed).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const THRESHOLD: libc::c_int = 128 * 1024;

/// Fixes glibc's trim and mmap thresholds, unless the operator tuned the allocator
/// through `GLIBC_TUNABLES`. Call before any thread starts.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        // SAFETY: mallopt only changes allocator parameters under glibc's own lock;
        // both parameters take any positive value.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
            libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
        }
    }
}

/// Hands freed heap pages back to the operating system. Called only after the core
/// shrank its tables, i.e. after many allocations ended, because the trim walks the
/// whole heap.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it takes glibc's arena locks itself and
    // only releases pages that hold no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
