//! The benchmark's figures: a table on stdout and the same as JSON.

use serde::Serialize;

use super::{BrokerProcess, workload::Streaming};

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
    pub broker_peak_rss_mib: Option<f64>,
}

/// One workload at one concurrency, every path.
#[derive(Debug, Serialize)]
pub struct Row {
    pub workload: &'static str,
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

#[derive(Debug, Serialize)]
pub struct Report {
    pub startup_ms: f64,
    pub idle_rss_mib: f64,
    /// Private memory of the idle broker (RSS without its code pages).
    pub idle_private_mib: f64,
    /// The broker's worker threads.
    pub broker_threads: usize,
    pub pgbouncer: bool,
    pub rows: Vec<Row>,
    pub streaming: Option<Streaming>,
}

impl Report {
    pub fn new(broker: &BrokerProcess, pgbouncer: bool, broker_threads: usize) -> Self {
        Self {
            startup_ms: broker.startup.as_secs_f64() * 1e3,
            idle_rss_mib: broker.idle_rss_kib as f64 / 1024.0,
            idle_private_mib: broker.idle_anon_kib as f64 / 1024.0,
            broker_threads,
            pgbouncer,
            rows: Vec::new(),
            streaming: None,
        }
    }

    pub fn add(
        &mut self,
        workload: &'static str,
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

    pub fn print(&self) {
        println!(
            "\nbroker bench: broker on {} worker thread(s); start-up to SERVING {:.0} ms, idle RSS {:.1} MiB ({:.1} MiB private, the rest code pages){}\n",
            self.broker_threads,
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
            "{:<16} {:>4} {:>10} {:>10} {:>10} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>6}",
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
            "RSS MiB",
            "errors"
        );
        for row in &self.rows {
            let b = &row.broker;
            println!(
                "{:<16} {:>4} {:>10.0} {:>10.0} {:>10} {:>7.2} {:>7} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>8.3} {:>7.1} {:>6}",
                row.workload,
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
                b.broker_peak_rss_mib.unwrap_or(0.0),
                b.errors + row.direct.errors,
            );
        }
        if let Some(s) = &self.streaming {
            println!(
                "\nstreaming {} MiB: put direct {:.0} MiB/s, broker {:.0} MiB/s ({:.2}x); get direct {:.0} MiB/s, broker {:.0} MiB/s ({:.2}x); broker peak RSS {:.1} MiB",
                s.mib,
                s.direct_put_mib_s,
                s.broker_put_mib_s,
                s.put_ratio,
                s.direct_get_mib_s,
                s.broker_get_mib_s,
                s.get_ratio,
                s.broker_peak_rss_mib
            );
        }
    }
}
