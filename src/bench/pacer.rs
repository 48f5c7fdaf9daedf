//! Wake-ups on time to the tens of microseconds for the paced cells.
//!
//! tokio's timer rounds every deadline up to the next millisecond, so a
//! paced cell offering 2,500 calls/s would send them in bursts of two or
//! three, all at once, every millisecond: each burst's second call queues
//! behind the first on every path, and the cell measures the timer, not the
//! path. The pacer is one thread that sleeps until the earliest deadline
//! it holds (the operating system's high-resolution sleep) and wakes each
//! sleeper at its own instant.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    sync::mpsc::{self, RecvTimeoutError},
    thread::JoinHandle,
    time::Instant,
};

use tokio::sync::oneshot;

/// A thread that wakes sleepers at their deadlines; it stops when dropped.
pub struct Pacer {
    requests: Option<mpsc::Sender<Wake>>,
    thread: Option<JoinHandle<()>>,
}

impl Pacer {
    pub fn start() -> std::io::Result<Self> {
        let (requests, incoming) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("bench-pacer".into())
            .spawn(move || wake_on_time(incoming))?;
        Ok(Self {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Returns at `due` or just after (never before).
    pub async fn sleep_until(&self, due: tokio::time::Instant) {
        let due = due.into_std();
        if Instant::now() >= due {
            return;
        }
        let (wake, woken) = oneshot::channel();
        let sent = self
            .requests
            .as_ref()
            .is_some_and(|requests| requests.send(Wake { due, wake }).is_ok());
        if sent && woken.await.is_ok() {
            return;
        }
        // The pacer is gone: the coarse timer still keeps the schedule.
        tokio::time::sleep_until(due.into()).await;
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One sleeper: when, and how to wake it.
struct Wake {
    due: Instant,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Wake {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}

impl Eq for Wake {}

impl PartialOrd for Wake {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Wake {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.due.cmp(&other.due)
    }
}

/// The pacer thread: holds the sleepers by deadline, waits for the earliest
/// or a new one, wakes those due; returns when the channel closes.
fn wake_on_time(incoming: mpsc::Receiver<Wake>) {
    let mut sleepers = BinaryHeap::new();
    loop {
        let now = Instant::now();
        while sleepers
            .peek()
            .is_some_and(|Reverse(next): &Reverse<Wake>| next.due <= now)
        {
            if let Some(Reverse(due)) = sleepers.pop() {
                // A sleeper that stopped waiting is no error.
                let _ = due.wake.send(());
            }
        }
        let received = match sleepers.peek() {
            Some(Reverse(next)) => incoming.recv_timeout(next.due - now),
            None => incoming.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(sleeper) => sleepers.push(Reverse(sleeper)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn sleepers_given_out_of_order_each_wake_at_their_deadline_never_early() {
        let pacer = Pacer::start().unwrap();
        let start = tokio::time::Instant::now();
        // Deadlines closer together than tokio's millisecond, given out of order.
        let offsets_us = [900, 300, 600, 1200, 150];
        let woken = futures::future::join_all(offsets_us.map(|us| {
            let due = start + Duration::from_micros(us);
            let pacer = &pacer;
            async move {
                pacer.sleep_until(due).await;
                (due, tokio::time::Instant::now())
            }
        }))
        .await;
        for (due, at) in woken {
            assert!(at >= due, "woke {:?} before its deadline", due - at);
        }
    }

    #[tokio::test]
    async fn a_deadline_already_past_returns_at_once_and_dropping_the_pacer_stops_its_thread() {
        let pacer = Pacer::start().unwrap();
        let past = tokio::time::Instant::now() - Duration::from_millis(5);
        tokio::time::timeout(Duration::from_secs(5), pacer.sleep_until(past))
            .await
            .expect("a past deadline does not wait");
        // Joins the thread: a pacer that did not stop would hang the test.
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio::task::spawn_blocking(move || drop(pacer)),
        )
        .await
        .expect("the pacer thread stops when dropped")
        .unwrap();
    }
}
