//! Query's calls shared out over the read pool. A caller queues its
//! statement as a [`Job`]; leader tasks, each holding one pooled
//! connection, take up to `depth` queued jobs at a time and run them as one
//! batch ([`super::read::batch`]: one write, the answers in order). There
//! are as many leaders as the calls in progress need, one per `depth` of
//! them, within the pool's size; a leader gives its connection back as soon
//! as the queue is empty. At one caller a Query is one batch of one, on a
//! connection of its own; under load PostgreSQL gets several cycles per
//! wake-up and the broker one write for them, which is where a pooler's
//! cost per call goes.
//!
//! Only statements known to be quick share a batch: a statement whose text
//! has not run before, whose recent runs took longer than [`QUICK`], or
//! whose last answer was [`LARGE`] or more, runs in a batch of its own, so a
//! slow report never holds up the point lookups queued with it, and two
//! slow statements run side by side, on two connections. A large answer
//! costs PostgreSQL and the broker work in proportion to its rows, far more
//! than the cycle a batch saves: batched, the statements would take turns
//! on one PostgreSQL process while other cores wait (100-row queries at 16
//! callers: about a sixth more calls per second run apart).
//!
//! A job runs in the leader's task, not the caller's: a caller that leaves
//! (its deadline, its client gone) has its statement cancelled without
//! disturbing the others in the batch.

use std::{
    collections::{HashMap, VecDeque},
    hash::BuildHasher,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::oneshot, time::Instant};

use super::{
    DatabaseError, Limits, ReadPool, Result, Rows, Statement, acquire, pool, read, rows::Size,
};
use crate::resilience::deadline;

/// How many times a call whose job was handed back runs at most.
const ATTEMPTS: usize = 3;

/// A statement whose recent runs all took less than this may share a batch.
const QUICK: Duration = Duration::from_millis(5);

/// A statement whose last answer held this many bytes of cells or more
/// runs in a batch of its own.
const LARGE: usize = 4 * 1024;

/// What a statement that failed counts as having taken: it runs in batches
/// of its own for a few runs, where its error makes no one else's job run
/// again ([`super::read`]).
pub const FAILED: Duration = Duration::from_millis(20);

/// Statement texts whose speed is remembered (then forgotten all at once).
const REMEMBERED: usize = 4096;

/// A leader gives its connection back to the pool at least this often, so
/// that the pool's checks and lifetimes apply under sustained load too.
const HOLD: Duration = Duration::from_secs(1);

/// One caller's statement, waiting for or in a batch.
pub struct Job {
    pub statement: Arc<Statement>,
    /// Rows at most.
    pub limit: u32,
    /// The caller's deadline, if it has one.
    pub deadline: Option<Instant>,
    pub reply: oneshot::Sender<Outcome>,
    /// The statement's key in the table of speeds.
    pub speed_key: u64,
    /// Known to be quick: it may share a batch.
    quick: bool,
    /// The size of the statement's last answer, if it ran before: room
    /// made for its rows at once.
    pub room: Size,
}

impl Job {
    /// Answers the caller (who may have left).
    pub fn answer(self, outcome: Outcome) {
        let _ = self.reply.send(outcome);
    }
}

/// How a job ended.
pub enum Outcome {
    Done(Result<Rows>),
    /// It did not run to an answer through no fault of its own (the
    /// connection failed, a cancel meant for another job reached it, its
    /// statement's tables changed): queue it again. The error is what the
    /// caller gets when its attempts run out.
    Again(DatabaseError),
}

/// The queue of Query's jobs and its leaders.
#[derive(Clone)]
pub struct Pipeline(Arc<Shared>);

struct Shared {
    pool: ReadPool,
    failures: pool::ConnectFailures,
    limits: Limits,
    depth: usize,
    /// Hashes statement texts into keys of [`State::speeds`] (foldhash,
    /// randomly seeded: a tenth of SipHash's cost for an SQL text).
    hasher: foldhash::fast::RandomState,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queued: VecDeque<Job>,
    /// Jobs queued or in a batch.
    jobs: Counts,
    leaders: usize,
    /// By a hash of the statement text: how its recent runs went.
    speeds: HashMap<u64, Speed, foldhash::fast::RandomState>,
}

/// One run of a job, as [`read::batch`] reports it.
pub struct Run {
    /// The statement's speed key.
    pub key: u64,
    pub took: Duration,
    /// The size of its answer.
    pub size: Size,
}

/// What is remembered of a statement's runs.
struct Speed {
    /// Its slowest recent run, halved at each run since.
    slowest: Duration,
    /// Its last answer's size.
    size: Size,
}

/// Jobs queued or in a batch, by whether they may share one.
#[derive(Default)]
struct Counts {
    quick: usize,
    /// Each needs a leader of its own.
    alone: usize,
}

impl Counts {
    fn of(&mut self, quick: bool) -> &mut usize {
        if quick {
            &mut self.quick
        } else {
            &mut self.alone
        }
    }
}

impl State {
    /// Leaders the jobs in progress need.
    fn needed(&self, depth: usize) -> usize {
        self.jobs.alone + self.jobs.quick.div_ceil(depth)
    }

    /// Whether a statement may share a batch, and its last answer's size.
    fn plan(&self, key: u64) -> (bool, Size) {
        match self.speeds.get(&key) {
            Some(speed) => (
                speed.slowest < QUICK && speed.size.bytes < LARGE,
                speed.size,
            ),
            None => (false, Size::default()),
        }
    }

    fn record(&mut self, run: Run) {
        if let Some(speed) = self.speeds.get_mut(&run.key) {
            speed.slowest = run.took.max(speed.slowest / 2);
            speed.size = run.size;
            return;
        }
        if self.speeds.len() >= REMEMBERED {
            self.speeds.clear();
        }
        let speed = Speed {
            slowest: run.took,
            size: run.size,
        };
        self.speeds.insert(run.key, speed);
    }
}

impl Pipeline {
    pub fn new(
        pool: ReadPool,
        failures: pool::ConnectFailures,
        limits: Limits,
        depth: usize,
    ) -> Self {
        Self(Arc::new(Shared {
            pool,
            failures,
            limits,
            depth: depth.max(1),
            hasher: foldhash::fast::RandomState::default(),
            state: Mutex::default(),
        }))
    }

    /// Runs one read-only statement, at most `limit` rows.
    pub async fn query(&self, statement: Arc<Statement>, limit: u32) -> Result<Rows> {
        let deadline = deadline::at();
        let mut reason = None;
        for _ in 0..ATTEMPTS {
            match self.submit(statement.clone(), limit, deadline).await {
                Outcome::Done(result) => return result,
                Outcome::Again(why) => reason = Some(why),
            }
        }
        Err(reason.unwrap_or_else(|| DatabaseError::Unavailable("no attempt was made".into())))
    }

    async fn submit(
        &self,
        statement: Arc<Statement>,
        limit: u32,
        deadline: Option<Instant>,
    ) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let speed_key = self.0.hasher.hash_one(&statement.sql);
        let new_leader = {
            let mut state = self.0.lock();
            let (quick, room) = state.plan(speed_key);
            state.queued.push_back(Job {
                statement,
                limit,
                deadline,
                reply,
                speed_key,
                quick,
                room,
            });
            *state.jobs.of(quick) += 1;
            let needed = state.leaders < state.needed(self.0.depth);
            state.leaders += usize::from(needed);
            needed
        };
        if new_leader {
            tokio::spawn(lead(self.0.clone()));
        }
        answer.await.unwrap_or_else(|_| {
            Outcome::Again(DatabaseError::Unavailable(
                "the query's connection went away".into(),
            ))
        })
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next batch: the first job whose caller still waits and, if it
    /// is quick, the quick jobs after it, `depth` at most. `None` (and
    /// this leader is gone) when no job waits.
    fn take(&self) -> Option<Vec<Job>> {
        let mut state = self.lock();
        let state = &mut *state;
        let jobs = &mut state.jobs;
        state.queued.retain(|job| {
            let waiting = !job.reply.is_closed();
            if !waiting {
                *jobs.of(job.quick) -= 1;
            }
            waiting
        });
        let Some(first) = state.queued.pop_front() else {
            state.leaders -= 1;
            return None;
        };
        let mut jobs = vec![first];
        if jobs[0].quick {
            let mut i = 0;
            while jobs.len() < self.depth && i < state.queued.len() {
                if state.queued[i].quick {
                    jobs.extend(state.queued.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        Some(jobs)
    }

    /// A batch ended: its jobs are done, and how each ran is noted.
    fn finished(&self, quick: bool, jobs: usize, runs: &mut Vec<Run>) {
        let mut state = self.lock();
        *state.jobs.of(quick) -= jobs;
        for run in runs.drain(..) {
            state.record(run);
        }
    }
}

/// One leader: a connection while there are jobs.
async fn lead(shared: Arc<Shared>) {
    let mut held = None;
    let mut since = Instant::now();
    let mut runs = Vec::new();
    loop {
        let conn = match &mut held {
            Some(conn) => conn,
            None => match acquire(&shared.failures, shared.pool.get_owned()).await {
                Ok(conn) => {
                    since = Instant::now();
                    held.insert(conn)
                }
                Err(e) => {
                    // The callers waiting now learn why.
                    let Some(jobs) = shared.take() else { return };
                    let (quick, count) = (jobs[0].quick, jobs.len());
                    for job in jobs {
                        job.answer(Outcome::Done(Err(e.clone())));
                    }
                    shared.finished(quick, count, &mut runs);
                    continue;
                }
            },
        };
        let Some(jobs) = shared.take() else { return };
        let (quick, count) = (jobs[0].quick, jobs.len());
        read::batch(conn, jobs, &shared.limits, &mut runs).await;
        shared.finished(quick, count, &mut runs);
        if !conn.reusable() || since.elapsed() > HOLD {
            held = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(key: u64, took: Duration, bytes: usize) -> Run {
        let size = Size { bytes, rows: 1 };
        Run { key, took, size }
    }

    fn is_quick(state: &State, key: u64) -> bool {
        state.plan(key).0
    }

    #[test]
    fn statements_share_batches_only_while_quick_with_small_answers() {
        let fast = Duration::from_micros(100);
        let mut state = State::default();
        assert!(
            !is_quick(&state, 1),
            "a statement not seen before runs alone"
        );
        state.record(run(1, fast, 100));
        assert!(is_quick(&state, 1));
        state.record(run(1, fast, LARGE));
        assert!(!is_quick(&state, 1), "a large answer runs alone");
        state.record(run(1, fast, LARGE - 1));
        assert!(is_quick(&state, 1), "the last answer's size decides");

        state.record(run(2, QUICK * 2, 0));
        assert!(!is_quick(&state, 2), "a slow run runs alone");
        state.record(run(2, fast, 0));
        assert!(!is_quick(&state, 2), "the slowest run is halved per run");
        state.record(run(2, fast, 0));
        assert!(is_quick(&state, 2));
    }

    #[test]
    fn quick_jobs_need_a_leader_per_depth_and_others_one_each() {
        let mut state = State::default();
        state.jobs.quick = 17;
        state.jobs.alone = 2;
        assert_eq!(state.needed(8), 2 + 3);
        assert_eq!(state.needed(1), 2 + 17);
    }
}
