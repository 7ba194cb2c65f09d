//! The start line of a run: every load thread sets up first (its sockets, its AF_XDP
//! socket and XDP program), and the run's clock starts only when all of them are ready.
//! A clock started before the setup put every sender behind its schedule, and it caught
//! up in one burst: attaching AF_XDP took long enough that the first second of a veth
//! run queued at the bridge (p99 8.7 ms in that second against 0.3 ms in the next ones).

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// When the run's clock started, monotonic and as Unix time (for the kernel's arrival
/// stamps).
#[derive(Clone, Copy, Debug)]
pub(super) struct Epoch {
    pub(super) at: Instant,
    pub(super) unix_ns: u64,
}

impl Epoch {
    fn now() -> Self {
        Self {
            at: Instant::now(),
            unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        }
    }
}

/// Holds the threads that arrive until all have; the last one starts the clock.
#[derive(Debug)]
pub(super) struct StartLine {
    /// Threads still to arrive, and the epoch once all have.
    state: Mutex<(usize, Option<Epoch>)>,
    started: Condvar,
}

impl StartLine {
    /// A start line for `threads` threads.
    pub(super) fn new(threads: usize) -> Self {
        Self {
            state: Mutex::new((threads, None)),
            started: Condvar::new(),
        }
    }

    /// Arrive and wait for the others; returns the common epoch.
    pub(super) fn arrive(&self) -> Epoch {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Self::count_off(&mut state, 1, &self.started);
        loop {
            if let Some(epoch) = state.1 {
                return epoch;
            }
            state = self
                .started
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Stop waiting for `threads` that will never arrive (they could not be started).
    pub(super) fn excuse(&self, threads: usize) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Self::count_off(&mut state, threads, &self.started);
    }

    /// A place on the line for one thread: it arrives with [`Place::arrive`], or when the
    /// place is dropped (its setup failed), so that the others are not held forever.
    pub(super) fn place(&self) -> Place<'_> {
        Place {
            line: self,
            arrived: false,
        }
    }

    fn count_off(state: &mut (usize, Option<Epoch>), threads: usize, started: &Condvar) {
        state.0 = state.0.saturating_sub(threads);
        if state.0 == 0 && state.1.is_none() {
            state.1 = Some(Epoch::now());
            started.notify_all();
        }
    }
}

/// One thread's place on a [`StartLine`].
#[derive(Debug)]
pub(super) struct Place<'a> {
    line: &'a StartLine,
    arrived: bool,
}

impl Place<'_> {
    /// Ready: wait for the others and take the common epoch.
    pub(super) fn arrive(mut self) -> Epoch {
        self.arrived = true;
        self.line.arrive()
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.arrived {
            self.line.excuse(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_thread_gets_the_epoch_taken_after_the_last_arrival() {
        let line = Arc::new(StartLine::new(3));
        let slow = Instant::now();
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let line = line.clone();
                std::thread::spawn(move || {
                    if i == 1 {
                        std::thread::sleep(std::time::Duration::from_millis(30));
                    }
                    line.place().arrive()
                })
            })
            .collect();
        let mine = line.arrive();
        for t in threads {
            assert_eq!(t.join().unwrap().at, mine.at);
        }
        assert!(mine.at.duration_since(slow) >= std::time::Duration::from_millis(30));
    }

    #[test]
    fn a_place_dropped_without_arriving_releases_the_others() {
        let line = Arc::new(StartLine::new(2));
        let failing = {
            let line = line.clone();
            std::thread::spawn(move || {
                let _place = line.place();
                // Setup fails here: the place is dropped without arriving.
            })
        };
        let _ = line.arrive();
        failing.join().unwrap();
    }

    #[test]
    fn excused_threads_are_not_waited_for() {
        let line = StartLine::new(3);
        line.excuse(2);
        let _ = line.arrive();
    }
}
