//! Steady state allocates nothing: after warm-up, forwarding SRTP (decrypt once,
//! encrypt for each receiver), relaying SRTCP and answering consent checks make zero
//! heap allocations, counted by a wrapping global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use viaduct_bridge::srtp::Profile;
use viaduct_bridge::testbed::Testbed;

struct Counting;

thread_local! {
    // Per thread: tests run in parallel threads, and only the measured thread counts.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_while(f: impl FnOnce()) -> u64 {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.with(Cell::get)
}

#[test]
fn forwarding_allocates_nothing_in_steady_state() {
    for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
        let mut bed = Testbed::new(profile, 9).unwrap();
        let mut buf = vec![0u8; 1500];
        // Warm-up: first packets of a stream may size per-SSRC state.
        for _ in 0..64 {
            let n = bed.next_packet(&mut buf, 1100).unwrap();
            assert_eq!(bed.forward(&mut buf[..n]), 9);
        }
        let mut check = vec![0u8; 256];
        let check_len = bed.next_check(&mut check).unwrap();
        let mut scratch = check.clone();
        let n = bed.next_report(&mut buf).unwrap();
        bed.forward(&mut buf[..n]);
        assert_eq!(bed.forward(&mut scratch[..check_len]), 1);
        let (mut forwarded, mut answered) = (0, 0);
        let allocs = allocations_while(|| {
            for i in 0..2000 {
                let n = bed.next_packet(&mut buf, 1100).unwrap();
                forwarded += bed.forward(&mut buf[..n]);
                if i % 100 == 0 {
                    // An SRTCP sender report goes to everyone; a consent check is answered.
                    let n = bed.next_report(&mut buf).unwrap();
                    forwarded += bed.forward(&mut buf[..n]);
                    scratch[..check_len].copy_from_slice(&check[..check_len]);
                    answered += bed.forward(&mut scratch[..check_len]);
                }
            }
        });
        assert_eq!(forwarded, 2000 * 9 + 20 * 9);
        assert_eq!(answered, 20, "consent checks answered");
        assert_eq!(
            allocs, 0,
            "{profile:?}: {allocs} allocations for {forwarded} forwarded packets"
        );
    }
}

#[test]
fn the_counter_counts() {
    let allocs = allocations_while(|| {
        let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(64));
        std::hint::black_box(&v);
    });
    assert_eq!(allocs, 1);
}

#[test]
fn dropped_garbage_allocates_nothing() {
    let mut bed = Testbed::new(Profile::AeadAes128Gcm, 3).unwrap();
    let mut junk: Vec<Vec<u8>> = vec![
        vec![0x80, 111, 0, 1],
        vec![
            0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ],
        vec![22; 100],
        vec![0x90; 300],
        vec![],
    ];
    let mut valid = vec![0u8; 1500];
    let n = bed.next_packet(&mut valid, 200).unwrap();
    valid.truncate(n);
    let stranger: std::net::SocketAddr = "127.0.0.9:4444".parse().unwrap();
    let allocs = allocations_while(|| {
        for _ in 0..100 {
            for j in junk.iter_mut() {
                bed.forward(j);
                bed.forward_from(stranger, j);
            }
            // A valid packet from an address nobody is bound to.
            bed.forward_from(stranger, &mut valid);
        }
    });
    assert_eq!(allocs, 0);
    // Three of the junk datagrams and the valid packet are non-STUN from the stranger
    // (the STUN one and the empty one are counted as malformed instead).
    assert_eq!(bed.state.counters.drops.unbound_source, 100 * 4);
}
