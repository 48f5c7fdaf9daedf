//! Busy polling (`BROKER_BUSY_POLL`): while calls come and go, the broker's
//! one thread keeps polling its sockets instead of going to sleep between
//! messages, so the next one (PostgreSQL's answer, a client's next call)
//! is read as it arrives rather than after the wake-up a sleeping thread
//! needs, which costs tens of microseconds on a virtual machine.
//!
//! How: a task that only yields. While it is ready, tokio's current-thread
//! scheduler polls for I/O without blocking (`epoll_wait` with a zero
//! timeout) between its turns and runs whatever became ready. Each call
//! that arrives or is answered ([`activity`], from the server's connection
//! loop) opens a window or extends it; once a whole window passes without
//! one, the task waits for the next and the thread sleeps as usual. An
//! idle broker spends nothing; one that is never idle for a window polls
//! whenever it has nothing else to do.
//!
//! Each turn also gives the core away (`sched_yield`) to any other thread
//! or process waiting for it, so polling takes only time the core would
//! otherwise spend idle: PostgreSQL or a client queued on the broker's
//! core runs first. Without it, polling took CPU that PostgreSQL needed
//! (100-row queries at 16 clients on two cores fell from about
//! PgBouncer's calls/s to 0.8 of them; docs/performance.md). It brings
//! nothing over from other cores, though: the kernel moves waiting work
//! onto a core when it goes idle, and a polling core never does, so
//! where PostgreSQL shares the machine its processes can queue on the
//! other cores (README, "Busy polling").

use std::{
    cell::OnceCell,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// Longest window `BROKER_BUSY_POLL` accepts: past a millisecond, polling
/// only spends CPU that a sleeping thread's wake-up would have cost less.
pub const MAX_WINDOW: Duration = Duration::from_millis(1);

thread_local! {
    /// The poller of the runtime on this thread, once it runs.
    static POLLER: OnceCell<Arc<Window>> = const { OnceCell::new() };
}

/// When the last call came or went, and the signal that wakes the poller.
struct Window {
    epoch: Instant,
    /// Microseconds since `epoch`.
    last_activity: AtomicU64,
    activity: Notify,
}

impl Window {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// A call arrived or was answered on this thread: poll for the next
/// message for another window. Does nothing where no poller runs (busy
/// polling off, a runtime of several threads).
pub fn activity() {
    POLLER.with(|poller| {
        if let Some(window) = poller.get() {
            window.last_activity.store(window.now(), Ordering::Relaxed);
            window.activity.notify_one();
        }
    });
}

/// Polls through each window of `window` after [`activity`], for ever.
/// Spawn it on a current-thread runtime: it polls that runtime's thread.
pub async fn run(window: Duration) {
    let state = Arc::new(Window {
        epoch: Instant::now(),
        last_activity: AtomicU64::new(0),
        activity: Notify::new(),
    });
    POLLER.with(|poller| poller.set(state.clone()).ok());
    let window = window.as_micros() as u64;
    loop {
        state.activity.notified().await;
        while state
            .now()
            .saturating_sub(state.last_activity.load(Ordering::Relaxed))
            < window
        {
            // The core first, to whoever else is waiting for it; then the
            // runtime, which polls the sockets before the next turn.
            std::thread::yield_now();
            tokio::task::yield_now().await;
        }
    }
}

/// Parses `BROKER_BUSY_POLL`: a duration from 0 (off) to [`MAX_WINDOW`].
pub fn parse_window(text: &str) -> Result<Duration, String> {
    let window = crate::config::parse_duration(text)?;
    if window > MAX_WINDOW {
        return Err(format!(
            "at most {MAX_WINDOW:?} (a window of 200us covers a database round trip and the client's next call; 0s turns it off)"
        ));
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Times the runtime's thread went to sleep (blocked for events).
    fn sleeps() -> u64 {
        tokio::runtime::Handle::current()
            .metrics()
            .worker_park_count(0)
    }

    /// CPU time this thread has used.
    fn thread_cpu() -> Duration {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    /// A one-thread runtime with a poller of `window` running.
    fn polling_runtime(window: Duration) -> tokio::runtime::Runtime {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(run(window));
        runtime
    }

    /// Lets the poller start (it registers itself on its first turn).
    async fn poller_started() {
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert!(
            POLLER.with(|p| p.get().is_some()),
            "no poller on this thread"
        );
    }

    #[test]
    fn after_a_call_the_thread_polls_instead_of_sleeping() {
        polling_runtime(Duration::from_secs(5)).block_on(async {
            poller_started().await;
            activity();
            let before = sleeps();
            // The timer fires through the non-blocking polls.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(sleeps(), before, "the thread slept inside the window");
        });
    }

    #[test]
    fn once_a_window_passes_without_calls_the_thread_sleeps() {
        polling_runtime(Duration::from_millis(2)).block_on(async {
            poller_started().await;
            activity();
            let (before, cpu) = (sleeps(), thread_cpu());
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(sleeps() > before, "the thread never slept again");
            // Polling through the whole wait would have cost about 300 ms.
            let spent = thread_cpu() - cpu;
            assert!(spent < Duration::from_millis(150), "{spent:?} of CPU");
        });
    }

    #[test]
    fn without_calls_the_thread_sleeps_as_usual() {
        // The control for the tests above: the same wait, no call.
        polling_runtime(Duration::from_secs(5)).block_on(async {
            poller_started().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
            let before = sleeps();
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(sleeps() > before);
        });
    }

    /// Keeps the calling thread on one of the CPUs it may run on.
    fn pin_to(cpu: usize) {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set).expect("pinning a thread");
    }

    #[test]
    fn a_polling_thread_gives_its_core_to_other_work() {
        let allowed = rustix::thread::sched_getaffinity(None).unwrap();
        let cpu = (0..rustix::thread::CpuSet::MAX_CPU)
            .find(|&cpu| allowed.is_set(cpu))
            .unwrap();
        let spell = Duration::from_millis(300);
        // Another thread on the same core, wanting all of it.
        let other = std::thread::spawn(move || {
            pin_to(cpu);
            let (start, cpu) = (Instant::now(), thread_cpu());
            while start.elapsed() < spell {
                std::hint::spin_loop();
            }
            thread_cpu() - cpu
        });
        pin_to(cpu);
        let polled = polling_runtime(Duration::from_secs(5)).block_on(async {
            poller_started().await;
            activity();
            let cpu = thread_cpu();
            tokio::time::sleep(spell).await;
            thread_cpu() - cpu
        });
        let other = other.join().unwrap();
        // Sharing the core evenly, each would get about half; giving way,
        // the poller takes a turn (microseconds) per time slice of the other.
        assert!(
            other > polled * 4,
            "the other thread got {other:?} of CPU, the polling thread {polled:?}"
        );
    }

    #[test]
    fn a_window_is_zero_to_a_millisecond() {
        assert_eq!(parse_window("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_window("200us"), Ok(Duration::from_micros(200)));
        assert_eq!(parse_window("1ms"), Ok(MAX_WINDOW));
        let too_long = parse_window("5ms").unwrap_err();
        assert!(too_long.contains("at most 1ms"), "{too_long}");
        assert!(parse_window("soon").is_err());
    }
}
