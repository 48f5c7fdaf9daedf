//! The benchmark's figures: a table on stdout and the same as JSON.

use serde::Serialize;

use super::{
    BenchArgs, BrokerProcess,
    targets::{self, Target},
    workload::{Streaming, Workload},
};

/// One (workload, path, concurrency) measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub calls: usize,
    pub errors: usize,
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Broker CPU seconds per 1,000 calls (broker path only).
    pub broker_cpu_s_per_1000: Option<f64>,
    /// CPU seconds the whole machine was busy per 1,000 calls: the
    /// clients, the broker or PgBouncer, PostgreSQL, the S3 server and
    /// anything else running (Linux only).
    pub machine_cpu_s_per_1000: Option<f64>,
    pub broker_peak_rss_mib: Option<f64>,
}

/// One workload at one concurrency, every path.
#[derive(Debug, Serialize)]
pub struct Row {
    pub workload: Workload,
    pub concurrency: usize,
    pub direct: Cell,
    pub broker: Cell,
    pub pgbouncer: Option<Cell>,
    /// Broker throughput / direct throughput.
    pub broker_vs_direct: f64,
    /// Broker throughput / PgBouncer throughput (SQL, when installed).
    pub broker_vs_pgbouncer: Option<f64>,
    /// Broker p50 minus direct p50, in microseconds.
    pub added_p50_us: f64,
}

/// One workload on a fixed schedule (an open loop), every path.
#[derive(Debug, Serialize)]
pub struct PacedRow {
    pub workload: Workload,
    pub concurrency: usize,
    /// Calls per second offered on every path.
    pub offered_calls_per_s: f64,
    pub direct: Cell,
    pub broker: Cell,
    pub pgbouncer: Option<Cell>,
    /// The broker's p50 and p99 are a hundredth of the seed's targets or
    /// less (P50 < 50 ms and P99 < 200 ms: 500 µs and 2 ms).
    pub seed_targets_met_100x: bool,
}

/// The machine's CPU seconds per 1,000 calls on each path: direct,
/// broker, PgBouncer ("-" where not measured).
fn machine_cpu(row: &Row) -> String {
    let path = |cell: Option<&Cell>| {
        cell.and_then(|c| c.machine_cpu_s_per_1000)
            .map_or("-".into(), |s| format!("{s:.3}"))
    };
    format!(
        "{}/{}/{}",
        path(Some(&row.direct)),
        path(Some(&row.broker)),
        path(row.pgbouncer.as_ref())
    )
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub startup_ms: f64,
    pub idle_rss_mib: f64,
    /// Private memory of the idle broker (RSS without its code pages).
    pub idle_private_mib: f64,
    /// The broker's worker threads.
    pub broker_threads: usize,
    /// HTTP/2 connections the broker path's clients share out.
    pub broker_connections: u16,
    /// The broker's busy-polling window (`--broker-busy-poll`), 0 when off.
    pub broker_busy_poll_us: u64,
    pub pgbouncer: bool,
    pub rows: Vec<Row>,
    /// The same workloads at a fixed offered load (`--paced-load`).
    pub paced: Vec<PacedRow>,
    pub streaming: Option<Streaming>,
    /// The performance issue's targets, judged on the figures above.
    pub targets: Vec<Target>,
}

impl Report {
    pub fn new(broker: &BrokerProcess, pgbouncer: bool, args: &BenchArgs) -> Self {
        Self {
            startup_ms: broker.startup.as_secs_f64() * 1e3,
            idle_rss_mib: broker.idle_rss_kib as f64 / 1024.0,
            idle_private_mib: broker.idle_anon_kib as f64 / 1024.0,
            broker_threads: args.broker_threads,
            broker_connections: args.broker_connections,
            broker_busy_poll_us: args.broker_busy_poll.as_micros() as u64,
            pgbouncer,
            rows: Vec::new(),
            paced: Vec::new(),
            streaming: None,
            targets: Vec::new(),
        }
    }

    pub fn add(
        &mut self,
        workload: Workload,
        concurrency: usize,
        direct: Cell,
        broker: Cell,
        pgbouncer: Option<Cell>,
    ) {
        self.rows.push(Row {
            workload,
            concurrency,
            broker_vs_direct: broker.ops_per_s / direct.ops_per_s.max(f64::MIN_POSITIVE),
            broker_vs_pgbouncer: pgbouncer
                .as_ref()
                .map(|p| broker.ops_per_s / p.ops_per_s.max(f64::MIN_POSITIVE)),
            added_p50_us: broker.p50_us - direct.p50_us,
            direct,
            broker,
            pgbouncer,
        });
    }

    pub fn add_paced(
        &mut self,
        workload: Workload,
        concurrency: usize,
        offered_calls_per_s: f64,
        direct: Cell,
        broker: Cell,
        pgbouncer: Option<Cell>,
    ) {
        self.paced.push(PacedRow {
            workload,
            concurrency,
            offered_calls_per_s,
            seed_targets_met_100x: targets::within_seed(&broker, 100.0),
            direct,
            broker,
            pgbouncer,
        });
    }

    pub fn print(&self) {
        println!(
            "\nbroker bench: broker on {} worker thread(s){}, clients on {} connection(s); start-up to SERVING {:.0} ms, idle RSS {:.1} MiB ({:.1} MiB private, the rest code pages){}\n",
            self.broker_threads,
            match self.broker_busy_poll_us {
                0 => String::new(),
                us => format!(" busy polling {us} µs"),
            },
            self.broker_connections,
            self.startup_ms,
            self.idle_rss_mib,
            self.idle_private_mib,
            if self.pgbouncer {
                ""
            } else {
                " (no PgBouncer)"
            }
        );
        println!(
            "{:<16} {:>4} {:>10} {:>10} {:>10} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} {:>17} {:>7} {:>6}",
            "workload",
            "conc",
            "direct/s",
            "broker/s",
            "pgb/s",
            "b/dir",
            "b/pgb",
            "+p50 µs",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "cpu s/1k",
            "mach s/1k d/b/p",
            "RSS MiB",
            "errors"
        );
        for row in &self.rows {
            let b = &row.broker;
            println!(
                "{:<16} {:>4} {:>10.0} {:>10.0} {:>10} {:>7.2} {:>7} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>8.3} {:>17} {:>7.1} {:>6}",
                row.workload.name(),
                row.concurrency,
                row.direct.ops_per_s,
                b.ops_per_s,
                row.pgbouncer
                    .as_ref()
                    .map_or("-".into(), |p| format!("{:.0}", p.ops_per_s)),
                row.broker_vs_direct,
                row.broker_vs_pgbouncer
                    .map_or("-".into(), |r| format!("{r:.2}")),
                row.added_p50_us,
                b.p50_us,
                b.p99_us,
                b.p999_us,
                b.broker_cpu_s_per_1000.unwrap_or(0.0),
                machine_cpu(row),
                b.broker_peak_rss_mib.unwrap_or(0.0),
                b.errors + row.direct.errors,
            );
        }
        if !self.paced.is_empty() {
            self.print_paced();
        }
        if let Some(s) = &self.streaming {
            println!(
                "\nstreaming {} MiB: put direct {:.0} MiB/s, broker {:.0} MiB/s ({:.2}x); get direct {:.0} MiB/s, broker {:.0} MiB/s ({:.2}x); broker peak RSS {:.1} MiB (put {:.1}, get {:.1})",
                s.mib,
                s.direct_put_mib_s,
                s.broker_put_mib_s,
                s.put_ratio,
                s.direct_get_mib_s,
                s.broker_get_mib_s,
                s.get_ratio,
                s.broker_peak_rss_mib,
                s.broker_put_peak_rss_mib,
                s.broker_get_peak_rss_mib,
            );
        }
        targets::print(&self.targets);
    }

    /// Judges the performance issue's targets on the figures so far.
    pub fn judge(&mut self) {
        self.targets = targets::judge_all(self);
    }

    fn print_paced(&self) {
        println!(
            "\npaced: each workload again at {} clients on a fixed schedule, offered the same calls/s on every path; latency counts from when a call was due",
            self.paced[0].concurrency
        );
        println!(
            "{:<16} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>6}",
            "workload",
            "offered/s",
            "broker/s",
            "dir p50",
            "dir p99",
            "brk p50",
            "brk p99",
            "brk p99.9",
            "pgb p50",
            "seed/100",
            "errors"
        );
        let us = |v: f64| format!("{v:.0} µs");
        for row in &self.paced {
            let b = &row.broker;
            println!(
                "{:<16} {:>10.0} {:>10.0} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>6}",
                row.workload.name(),
                row.offered_calls_per_s,
                b.ops_per_s,
                us(row.direct.p50_us),
                us(row.direct.p99_us),
                us(b.p50_us),
                us(b.p99_us),
                us(b.p999_us),
                row.pgbouncer.as_ref().map_or("-".into(), |p| us(p.p50_us)),
                if row.seed_targets_met_100x {
                    "met"
                } else {
                    "not met"
                },
                b.errors + row.direct.errors,
            );
        }
    }
}
