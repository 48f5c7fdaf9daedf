//! The workloads and the timed loops that run them.

use std::{
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
// tokio's clock: the same as std's, except that tests can pause it.
use tokio::time::Instant;

use super::{
    BrokerProcess, USER_HZ,
    pacer::Pacer,
    paths::{Direct, Path},
    report::Cell,
};
use crate::client::{BrokerClient, PutOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Select1,
    PointLookup,
    Rows100,
    Head,
    Get4k,
    Put4k,
    Get1m,
    Put1m,
}

impl FromStr for Workload {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s.trim() {
            "select1" => Self::Select1,
            "point_lookup" => Self::PointLookup,
            "rows100" => Self::Rows100,
            "head" => Self::Head,
            "get4k" => Self::Get4k,
            "put4k" => Self::Put4k,
            "get1m" => Self::Get1m,
            "put1m" => Self::Put1m,
            other => anyhow::bail!(
                "unknown workload {other:?} (select1, point_lookup, rows100, head, get4k, put4k, get1m, put1m)"
            ),
        })
    }
}

/// In the report, a workload is its name.
impl Serialize for Workload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

const SELECT1: &str = "SELECT 1";
const POINT: &str = "SELECT id, status, file_size FROM documents WHERE s3_key = $1";
const ROWS100: &str = "SELECT id, s3_key, status, upload_date FROM documents ORDER BY id LIMIT 100";
const SEEDED_ROWS: usize = 1000;

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Self::Select1 => "select 1",
            Self::PointLookup => "point lookup",
            Self::Rows100 => "100 rows",
            Self::Head => "HeadObject",
            Self::Get4k => "GetObject 4 KiB",
            Self::Put4k => "PutObject 4 KiB",
            Self::Get1m => "GetObject 1 MiB",
            Self::Put1m => "PutObject 1 MiB",
        }
    }

    pub fn is_sql(self) -> bool {
        matches!(self, Self::Select1 | Self::PointLookup | Self::Rows100)
    }

    /// Objects of 1 MiB, which the streaming target covers.
    pub fn is_large_object(self) -> bool {
        matches!(self, Self::Get1m | Self::Put1m)
    }

    async fn once(self, path: &Path<'_>, worker: usize, n: usize) -> anyhow::Result<()> {
        let key = format!("bench/docs/{}.csv", (worker * 7919 + n) % SEEDED_ROWS);
        let put_key = format!("bench/put/{worker}-{}", n % 8);
        match (self, path) {
            (Self::Select1, Path::Broker(c)) => c.of(worker).query(SELECT1, &[]).await.map(drop)?,
            (Self::PointLookup, Path::Broker(c)) => {
                c.of(worker).query(POINT, &[key.into()]).await.map(drop)?
            }
            (Self::Rows100, Path::Broker(c)) => c.of(worker).query(ROWS100, &[]).await.map(drop)?,
            (Self::Head, Path::Broker(c)) => {
                c.of(worker).head_object("bench/4k").await.map(drop)?
            }
            (Self::Get4k, Path::Broker(c)) => c
                .of(worker)
                .get_bytes("bench/4k", 1 << 20)
                .await
                .map(drop)?,
            (Self::Get1m, Path::Broker(c)) => c
                .of(worker)
                .get_bytes("bench/1m", 2 << 20)
                .await
                .map(drop)?,
            (Self::Put4k, Path::Broker(c)) => c
                .of(worker)
                .put_bytes(&put_key, PutOptions::default(), body(4096))
                .await
                .map(drop)?,
            (Self::Put1m, Path::Broker(c)) => c
                .of(worker)
                .put_bytes(&put_key, PutOptions::default(), body(1 << 20))
                .await
                .map(drop)?,
            (Self::Select1, Path::Direct(d)) => d.query(worker, SELECT1, None).await?,
            (Self::PointLookup, Path::Direct(d)) => d.query(worker, POINT, Some(&key)).await?,
            (Self::Rows100, Path::Direct(d)) => d.query(worker, ROWS100, None).await?,
            (Self::Select1, Path::PgBouncer(b)) => b.query(worker, SELECT1, None).await?,
            (Self::PointLookup, Path::PgBouncer(b)) => b.query(worker, POINT, Some(&key)).await?,
            (Self::Rows100, Path::PgBouncer(b)) => b.query(worker, ROWS100, None).await?,
            (Self::Head, Path::Direct(d)) => {
                d.s3.head_object()
                    .bucket(&d.bucket)
                    .key("bench/4k")
                    .send()
                    .await
                    .map(drop)?
            }
            (Self::Get4k, Path::Direct(d)) => d.get("bench/4k").await.map(drop)?,
            (Self::Get1m, Path::Direct(d)) => d.get("bench/1m").await.map(drop)?,
            (Self::Put4k, Path::Direct(d)) => d.put(&put_key, body(4096)).await?,
            (Self::Put1m, Path::Direct(d)) => d.put(&put_key, body(1 << 20)).await?,
            (_, Path::PgBouncer(_)) => anyhow::bail!("PgBouncer serves SQL only"),
        }
        Ok(())
    }
}

fn body(len: usize) -> Bytes {
    Bytes::from(vec![0x5a; len])
}

/// The schema, 1,000 documents and the objects the workloads read.
pub async fn prepare(client: &BrokerClient) -> anyhow::Result<()> {
    client.init_schema().await?;
    client
        .execute(
            "INSERT INTO documents (s3_key, document_type, file_name, file_size) \
             SELECT 'bench/docs/' || n || '.csv', 'csv', n || '.csv', n FROM generate_series(0, $1::int - 1) n \
             ON CONFLICT (s3_key) DO NOTHING",
            &[(SEEDED_ROWS as i64).into()],
        )
        .await?;
    client
        .put_bytes("bench/4k", PutOptions::default(), body(4096))
        .await?;
    client
        .put_bytes("bench/1m", PutOptions::default(), body(1 << 20))
        .await?;
    Ok(())
}

/// How the workers of a cell send their calls.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// Each worker sends its next call as soon as the last one is answered:
    /// the most the path can do, where latency is concurrency ÷ throughput.
    Closed,
    /// The workers together send this many calls per second, each on its own
    /// fixed schedule, whatever the answers' speed (an open loop, as agents
    /// with work of their own between calls). A call sent late because the
    /// worker's previous one was still running counts from when it was due.
    Paced { calls_per_s: f64 },
}

/// Runs `workload` on `concurrency` workers for `duration`.
pub async fn run_cell(
    workload: &Workload,
    path: &Path<'_>,
    concurrency: usize,
    load: Load,
    duration: Duration,
    broker: Option<&BrokerProcess>,
) -> anyhow::Result<Cell> {
    // Warm-up: connections open, statements prepared.
    for worker in 0..concurrency.min(4) {
        workload.once(path, worker, 0).await?;
    }
    if let Some(b) = broker {
        b.reset_peak();
    }
    let cpu_before = broker.map(BrokerProcess::cpu_seconds);
    let machine_before = machine_busy_seconds();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pacer = match load {
        Load::Paced { .. } => Some(Pacer::start()?),
        Load::Closed => None,
    };
    let started = Instant::now();
    let end = started + duration;
    futures::stream::iter(0..concurrency)
        .for_each_concurrent(None, |worker| {
            let (latencies, errors) = (latencies.clone(), errors.clone());
            let pacer = pacer.as_ref();
            async move {
                let mut mine = Vec::new();
                let mut n = 0;
                let mut schedule = Schedule::new(load, started, worker, concurrency);
                while Instant::now() < end {
                    let Some(began) = schedule.next_call(end, pacer).await else {
                        break;
                    };
                    if workload.once(path, worker, n).await.is_err() {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    mine.push(began.elapsed());
                    n += 1;
                }
                latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(mine);
            }
        })
        .await;
    let elapsed = started.elapsed();
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    latencies.sort_unstable();
    let calls = latencies.len();
    let cpu = match (broker, cpu_before) {
        (Some(b), Some(before)) if calls > 0 => {
            Some((b.cpu_seconds() - before) * 1000.0 / calls as f64)
        }
        _ => None,
    };
    let machine = match (machine_before, machine_busy_seconds()) {
        (Some(before), Some(after)) if calls > 0 => Some((after - before) * 1000.0 / calls as f64),
        _ => None,
    };
    Ok(Cell {
        calls,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        ops_per_s: calls as f64 / elapsed.as_secs_f64(),
        p50_us: quantile(&latencies, 0.50),
        p99_us: quantile(&latencies, 0.99),
        p999_us: quantile(&latencies, 0.999),
        broker_cpu_s_per_1000: cpu,
        machine_cpu_s_per_1000: machine,
        broker_peak_rss_mib: broker.map(BrokerProcess::peak_rss_mib),
    })
}

/// CPU seconds every core of the machine has been busy since boot (Linux's
/// `/proc/stat`; `None` elsewhere).
fn machine_busy_seconds() -> Option<f64> {
    busy_seconds(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The busy time in `/proc/stat`'s first line: user, nice, system, irq and
/// softirq, not idle, iowait or steal (time the hypervisor gave to others).
fn busy_seconds(stat: &str) -> Option<f64> {
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, ..] = fields[..] else {
        return None;
    };
    Some((user + nice + system + irq + softirq) / USER_HZ)
}

/// When one worker's calls are due.
struct Schedule {
    /// Time between two calls of this worker (paced loads only).
    interval: Option<Duration>,
    next: Instant,
    /// When the worker last woke from waiting for a call's time: since
    /// then it has been sending calls back to back.
    busy_since: Option<Instant>,
}

impl Schedule {
    fn new(load: Load, started: Instant, worker: usize, concurrency: usize) -> Self {
        match load {
            Load::Closed => Self {
                interval: None,
                next: started,
                busy_since: None,
            },
            Load::Paced { calls_per_s } => {
                let interval = Duration::from_secs_f64(concurrency as f64 / calls_per_s);
                // Workers spread evenly over one interval, not all at once.
                let phase = interval.mul_f64(worker as f64 / concurrency as f64);
                Self {
                    interval: Some(interval),
                    next: started + phase,
                    busy_since: None,
                }
            }
        }
    }

    /// Waits until the next call is due (on `pacer`'s fine clock, or
    /// tokio's millisecond one without it) and returns the instant its
    /// latency counts from, or `None` when it would be due after `end`.
    async fn next_call(&mut self, end: Instant, pacer: Option<&Pacer>) -> Option<Instant> {
        let Some(interval) = self.interval else {
            return Some(Instant::now());
        };
        let due = self.next;
        if due >= end {
            return None;
        }
        self.next += interval;
        if Instant::now() < due {
            // On time: the latency counts from the wake-up, so that the
            // timer's own lateness is not the path's.
            match pacer {
                Some(pacer) => pacer.sleep_until(due).await,
                None => tokio::time::sleep_until(due).await,
            }
            let woke = Instant::now();
            self.busy_since = Some(woke);
            Some(woke)
        } else {
            // Behind schedule: the wait behind the worker's earlier calls
            // counts, from when this one was due or, if the timer woke the
            // worker only after that, from the wake-up.
            Some(self.busy_since.map_or(due, |busy| busy.max(due)))
        }
    }
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1))
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Large-object streaming, one object each way.
#[derive(Debug, Serialize)]
pub struct Streaming {
    pub mib: usize,
    pub direct_put_mib_s: f64,
    pub direct_get_mib_s: f64,
    pub broker_put_mib_s: f64,
    pub broker_get_mib_s: f64,
    pub put_ratio: f64,
    pub get_ratio: f64,
    /// The larger of the two below.
    pub broker_peak_rss_mib: f64,
    /// The broker's peak RSS while it took the object in.
    pub broker_put_peak_rss_mib: f64,
    /// The same while it sent the object back out (the peak reset to the
    /// RSS the put left).
    pub broker_get_peak_rss_mib: f64,
}

fn chunks(mib: usize) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let chunk = Bytes::from(vec![0xa5; 1 << 20]);
    futures::stream::iter((0..mib).map(move |_| Ok(chunk.clone())))
}

pub async fn stream(
    direct: &Direct,
    client: &BrokerClient,
    broker: &BrokerProcess,
    mib: usize,
) -> anyhow::Result<Streaming> {
    let rate = |started: Instant| mib as f64 / started.elapsed().as_secs_f64();
    // Direct: a multipart upload of the same 8 MiB parts the broker uses.
    let started = Instant::now();
    let key = "bench/stream-direct";
    let upload = direct
        .s3
        .create_multipart_upload()
        .bucket(&direct.bucket)
        .key(key)
        .send()
        .await?;
    let id = upload.upload_id().unwrap_or_default().to_owned();
    let mut parts = Vec::new();
    for (number, part) in (1..).zip((0..mib).step_by(8)) {
        let len = (mib - part).min(8) << 20;
        let done = direct
            .s3
            .upload_part()
            .bucket(&direct.bucket)
            .key(key)
            .upload_id(&id)
            .part_number(number)
            .body(aws_sdk_s3::primitives::ByteStream::from(vec![0xa5; len]))
            .send()
            .await?;
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(number)
                .set_e_tag(done.e_tag)
                .build(),
        );
    }
    direct
        .s3
        .complete_multipart_upload()
        .bucket(&direct.bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await?;
    let direct_put = rate(started);
    let started = Instant::now();
    direct.get(key).await?;
    let direct_get = rate(started);

    broker.reset_peak();
    let started = Instant::now();
    client
        .put_object("bench/stream-broker", PutOptions::default(), chunks(mib))
        .await?;
    let broker_put = rate(started);
    let put_peak = broker.peak_rss_mib();
    broker.reset_peak();
    let started = Instant::now();
    let mut reader = client.get_object("bench/stream-broker").await?;
    while let Some(chunk) = reader.next().await {
        chunk?;
    }
    let broker_get = rate(started);
    let get_peak = broker.peak_rss_mib();
    Ok(Streaming {
        mib,
        direct_put_mib_s: direct_put,
        direct_get_mib_s: direct_get,
        broker_put_mib_s: broker_put,
        broker_get_mib_s: broker_get,
        put_ratio: broker_put / direct_put,
        get_ratio: broker_get / direct_get,
        broker_peak_rss_mib: put_peak.max(get_peak),
        broker_put_peak_rss_mib: put_peak,
        broker_get_peak_rss_mib: get_peak,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_is_user_nice_system_irq_softirq_of_all_cores() {
        let stat = "cpu  1000 20 300 90000 50 4 6 700 0 0\ncpu0 500 10 150 45000 25 2 3 350 0 0\n";
        assert_eq!(busy_seconds(stat), Some(13.3));
        assert_eq!(
            busy_seconds("cpu0 1 2 3 4 5 6 7\n"),
            None,
            "not the all-cores line"
        );
        assert_eq!(busy_seconds("cpu  1 2 3\n"), None, "too few fields");
        assert_eq!(busy_seconds(""), None);
    }

    #[tokio::test(start_paused = true)]
    async fn paced_workers_share_the_rate_and_spread_over_an_interval() {
        let started = Instant::now();
        let end = started + Duration::from_secs(1);
        // 4 workers, 40 calls/s together: each every 100 ms, 25 ms apart.
        let load = Load::Paced { calls_per_s: 40.0 };
        let mut second = Schedule::new(load, started, 1, 4);
        let mut dues = Vec::new();
        while let Some(due) = second.next_call(end, None).await {
            dues.push(due - started);
        }
        let expected: Vec<Duration> = (0..10)
            .map(|n| Duration::from_millis(25 + 100 * n))
            .collect();
        assert_eq!(dues, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_sent_late_counts_from_when_it_was_due() {
        let started = Instant::now();
        let end = started + Duration::from_secs(1);
        let mut schedule = Schedule::new(Load::Paced { calls_per_s: 10.0 }, started, 0, 1);
        assert_eq!(schedule.next_call(end, None).await, Some(started));
        // The first call takes 250 ms: the second (due at 100 ms) and third
        // (due at 200 ms) start at once, and their latency counts from then.
        tokio::time::advance(Duration::from_millis(250)).await;
        let late = schedule.next_call(end, None).await.unwrap();
        assert_eq!(late - started, Duration::from_millis(100));
        assert_eq!(
            schedule.next_call(end, None).await.unwrap() - started,
            Duration::from_millis(200)
        );
        // Back on time: the fourth waits until 300 ms.
        assert_eq!(
            schedule.next_call(end, None).await.unwrap() - started,
            Duration::from_millis(300)
        );
        assert_eq!(Instant::now() - started, Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_wake_up_is_not_counted_against_the_calls_it_delays() {
        let started = Instant::now();
        let end = started + Duration::from_secs(1);
        let mut schedule = Schedule::new(Load::Paced { calls_per_s: 10.0 }, started, 0, 1);
        schedule.next_call(end, None).await;
        // The timer wakes the worker for its second call (due at 100 ms) at
        // 250 ms; that call takes 10 ms, so the third (due at 200 ms) waited
        // behind it from 250 ms, not from when it was due.
        tokio::time::advance(Duration::from_millis(250)).await;
        schedule.busy_since = Some(Instant::now());
        schedule.next = started + Duration::from_millis(200);
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(
            schedule.next_call(end, None).await.unwrap() - started,
            Duration::from_millis(250)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_loop_sends_at_once() {
        let started = Instant::now();
        let mut schedule = Schedule::new(Load::Closed, started, 3, 4);
        let end = started + Duration::from_secs(1);
        assert_eq!(schedule.next_call(end, None).await, Some(started));
        assert_eq!(schedule.next_call(end, None).await, Some(started));
    }
}
