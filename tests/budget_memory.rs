//! The memory of the failure budgets, whatever clients send: counted by this test binary's
//! allocator, which is why this test has a binary of its own.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::{IpAddr, Ipv6Addr},
    sync::atomic::{AtomicIsize, Ordering},
    time::Duration,
};

use argilla_gateway::{
    config::RateLimit,
    limit::{Limiter, MAX_TRACKED},
};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

fn delta(bytes: usize) -> isize {
    isize::try_from(bytes).expect("allocation size fits isize")
}

#[allow(unsafe_code, reason = "a global allocator is an unsafe trait")]
// SAFETY: every call is forwarded to `System` with the same arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(delta(layout.size()), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(delta(layout.size()), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(delta(layout.size()), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(delta(new_size) - delta(layout.size()), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The bound the README states for both kinds of budget together.
const BOUND: isize = 10 * 1024 * 1024;

#[test]
fn memory_after_a_million_distinct_1_kib_usernames_stays_under_10_mib() {
    let limiter = Limiter::new(&RateLimit {
        failures_per_address: 100,
        failures_per_username: 10,
        window: Duration::from_secs(300),
        trusted_proxies: vec![],
    });
    let before = LIVE.load(Ordering::Relaxed);
    let mut name = vec![b'x'; 1024];
    let mut peak = 0;
    for i in 0..1_000_000u32 {
        // A distinct 1 KiB username from a distinct address each time.
        name[..8].copy_from_slice(format!("{i:08x}").as_bytes());
        let username = std::str::from_utf8(&name).unwrap();
        let address = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)));
        limiter.fail(address, Some(username));
        if i % 4096 == 0 {
            peak = peak.max(LIVE.load(Ordering::Relaxed) - before);
        }
    }
    let kept = LIVE.load(Ordering::Relaxed) - before;
    let (addresses, usernames) = limiter.tracked();
    for kept in [addresses, usernames] {
        assert!(
            (MAX_TRACKED * 7 / 8..=MAX_TRACKED).contains(&kept),
            "{kept} budgets: full (a full shard drops an eighth), none past the cap"
        );
    }
    assert!(
        kept.max(peak) < BOUND,
        "{kept} bytes kept (peak {peak}), bound {BOUND}"
    );
    eprintln!("budgets of 1 000 000 addresses and 1 KiB usernames: {kept} bytes kept, peak {peak}");
}
