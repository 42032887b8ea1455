//! How soon the allocator gives freed memory back to the system.
//!
//! mimalloc 3 keeps freed pages for `purge_delay` (1 s by default) before it
//! returns them, and only purges when a thread allocates or frees again. The
//! server frees a group's buffers many times a second while ingesting, and
//! then goes idle: after the quality benchmark (11M predictions, 7.7M
//! labels) it ended at 275-322 MB of RSS with a 337-363 MB peak, against
//! SPEC §6's 300 MB. With 100 ms: 248-275 MB at the end and a 299-307 MB
//! peak, for 2-4% of ingestion throughput (300 ms kept the peak at 328-336 MB
//! for as much). The offline report keeps the default: its
//! large buffers are freed and allocated again at once, and purging them
//! made it slower.

use std::os::raw::c_long;

use libmimalloc_sys::{mi_option_t, mi_option_use_numa_nodes};

/// `mi_option_purge_delay` of mimalloc 3's `mi_option_t`
/// (`include/mimalloc.h`), the option before `mi_option_use_numa_nodes`.
/// `libmimalloc-sys` names its neighbours, not this one.
const PURGE_DELAY: mi_option_t = mi_option_use_numa_nodes - 1;

/// The server's purge delay, in milliseconds.
pub const SERVER_PURGE_DELAY_MS: c_long = 100;

/// Sets the purge delay to [`SERVER_PURGE_DELAY_MS`], unless the
/// environment set it (`MIMALLOC_PURGE_DELAY`).
pub fn purge_sooner() {
    // SAFETY: `mi_option_set_default` stores an integer in mimalloc's option
    // table, which may happen at any time: the allocator reads the option
    // whenever it decides whether to purge, and any value is valid.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set_default(PURGE_DELAY, SERVER_PURGE_DELAY_MS);
    }
}

/// The purge delay in force, in milliseconds.
#[cfg(test)]
fn purge_delay_ms() -> c_long {
    // SAFETY: reads an integer from mimalloc's option table.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_get(PURGE_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_purges_freed_memory_sooner_unless_told_otherwise() {
        let from_environment = std::env::var("MIMALLOC_PURGE_DELAY").ok();
        let before = purge_delay_ms();
        purge_sooner();
        match from_environment {
            None => {
                // mimalloc 3's default, which tells the option apart from its
                // neighbours (eager commit delay 1, NUMA nodes 0).
                assert_eq!(before, 1000);
                assert_eq!(purge_delay_ms(), SERVER_PURGE_DELAY_MS);
            }
            Some(_) => assert_eq!(purge_delay_ms(), before),
        }
    }
}
