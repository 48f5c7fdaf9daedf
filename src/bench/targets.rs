//! The performance issue's targets, judged on one run's figures: the last
//! table of the report, so that a run says where it stands against each
//! target without a reader working the ratios out of the cells, and says
//! where the direct path misses a latency target too (the host, not the
//! broker, is then what stands in the way).

use serde::Serialize;

use super::{
    report::{Cell, Report, Row},
    workload::Workload,
};

/// Broker throughput at least PgBouncer's, at this many clients or more.
const MANY_CLIENTS: usize = 16;
const ADDED_P50_US: f64 = 100.0;
/// Broker throughput against direct aws-sdk-s3 for objects of 1 MiB+.
const LARGE_OBJECT_RATIO: f64 = 0.8;
const STREAMING_RSS_MIB: f64 = 64.0;
/// The seed's latency targets.
const SEED_P50_US: f64 = 50_000.0;
const SEED_P99_US: f64 = 200_000.0;
const STARTUP_MS: f64 = 1000.0;
const IDLE_RSS_MIB: f64 = 20.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    NotMet,
    /// The run had nothing to judge it on (a workload, concurrency level
    /// or PgBouncer left out).
    NotMeasured,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::NotMet => "not met",
            Self::NotMeasured => "not measured",
        }
    }
}

/// One target and the figures it was judged on.
#[derive(Debug, Serialize)]
pub struct Target {
    pub target: &'static str,
    pub verdict: Verdict,
    /// Each figure, those that miss the target marked; or why there were
    /// none.
    pub figures: String,
}

/// One figure a target is judged on.
struct Figure {
    text: String,
    met: bool,
    /// The direct path missed the same target.
    direct_missed: bool,
}

impl Figure {
    fn new(text: String, met: bool) -> Self {
        Self {
            text,
            met,
            direct_missed: false,
        }
    }

    fn render(&self) -> String {
        match (self.met, self.direct_missed) {
            (true, _) => self.text.clone(),
            (false, false) => format!("{} (missed)", self.text),
            (false, true) => format!("{} (missed, as direct did)", self.text),
        }
    }
}

/// Judges `target` on `figures`: met when every figure is.
fn judge(target: &'static str, figures: Vec<Figure>, unmeasured: &str) -> Target {
    if figures.is_empty() {
        return Target {
            target,
            verdict: Verdict::NotMeasured,
            figures: unmeasured.into(),
        };
    }
    let verdict = if figures.iter().all(|f| f.met) {
        Verdict::Met
    } else {
        Verdict::NotMet
    };
    let figures = figures
        .iter()
        .map(Figure::render)
        .collect::<Vec<_>>()
        .join(", ");
    Target {
        target,
        verdict,
        figures,
    }
}

/// Every target of the performance issue, in its order.
pub fn judge_all(report: &Report) -> Vec<Target> {
    vec![
        sql_against_pgbouncer(report),
        added_p50(report),
        large_objects(report),
        streaming_memory(report),
        seed_closed_loop(report),
        seed_paced(report),
        judge(
            "start-up to SERVING < 1 s",
            vec![Figure::new(
                format!("{:.0} ms", report.startup_ms),
                report.startup_ms < STARTUP_MS,
            )],
            "",
        ),
        judge(
            "idle RSS < 20 MiB",
            vec![Figure::new(
                format!("{:.1} MiB", report.idle_rss_mib),
                report.idle_rss_mib < IDLE_RSS_MIB,
            )],
            "",
        ),
    ]
}

/// A figure of one cell: `text`, then the cell's failed calls if any; a
/// cell with failed calls on any path misses, whatever its figures.
fn cell_figure(row: &Row, text: String, met: bool) -> Figure {
    let failed =
        row.direct.errors + row.broker.errors + row.pgbouncer.as_ref().map_or(0, |p| p.errors);
    if failed == 0 {
        Figure::new(text, met)
    } else {
        Figure::new(format!("{text} ({failed} errors)"), false)
    }
}

fn sql_against_pgbouncer(report: &Report) -> Target {
    let figures = report
        .rows
        .iter()
        .filter(|row| row.workload.is_sql() && row.concurrency >= MANY_CLIENTS)
        .filter_map(|row| {
            let ratio = row.broker_vs_pgbouncer?;
            Some(cell_figure(
                row,
                format!(
                    "{} @{} {ratio:.2}x ({:.2}x direct)",
                    row.workload.name(),
                    row.concurrency,
                    row.broker_vs_direct
                ),
                ratio >= 1.0,
            ))
        })
        .collect();
    judge(
        "SQL at 16+ clients >= PgBouncer's calls/s",
        figures,
        if report.pgbouncer {
            "no SQL workload at 16 clients or more"
        } else {
            "no PgBouncer in this run"
        },
    )
}

fn added_p50(report: &Report) -> Target {
    let figures = report
        .rows
        .iter()
        .filter(|row| row.workload.is_sql() && row.concurrency == 1)
        .map(|row| {
            cell_figure(
                row,
                format!("{} {:+.0} µs", row.workload.name(), row.added_p50_us),
                row.added_p50_us <= ADDED_P50_US,
            )
        })
        .collect();
    judge(
        "SQL p50 at 1 client <= direct + 100 µs",
        figures,
        "no SQL workload at 1 client",
    )
}

fn large_objects(report: &Report) -> Target {
    let mut figures: Vec<Figure> = report
        .rows
        .iter()
        .filter(|row| row.workload.is_large_object())
        .map(|row| {
            cell_figure(
                row,
                format!(
                    "{} @{} {:.2}x",
                    row.workload.name(),
                    row.concurrency,
                    row.broker_vs_direct
                ),
                row.broker_vs_direct >= LARGE_OBJECT_RATIO,
            )
        })
        .collect();
    if let Some(s) = &report.streaming {
        for (direction, ratio) in [("put", s.put_ratio), ("get", s.get_ratio)] {
            figures.push(Figure::new(
                format!("{} MiB {direction} {ratio:.2}x", s.mib),
                ratio >= LARGE_OBJECT_RATIO,
            ));
        }
    }
    judge(
        "objects of 1 MiB+ >= 0.8x direct",
        figures,
        "no 1 MiB workload and no streaming",
    )
}

fn streaming_memory(report: &Report) -> Target {
    let figures = report
        .streaming
        .iter()
        .map(|s| {
            Figure::new(
                format!("{:.1} MiB moving {} MiB", s.broker_peak_rss_mib, s.mib),
                s.broker_peak_rss_mib < STREAMING_RSS_MIB,
            )
        })
        .collect();
    judge(
        "broker RSS streaming < 64 MiB",
        figures,
        "no streaming (--stream-mib 0)",
    )
}

/// Whether every call of `cell` succeeded and its p50 and p99 are under
/// the seed's targets with `spare` times to spare.
pub(super) fn within_seed(cell: &Cell, spare: f64) -> bool {
    cell.errors == 0 && cell.p50_us < SEED_P50_US / spare && cell.p99_us < SEED_P99_US / spare
}

fn seed_closed_loop(report: &Report) -> Target {
    let most = report.rows.iter().map(|r| r.concurrency).max();
    let cells = report
        .rows
        .iter()
        .filter(|row| Some(row.concurrency) == most)
        .map(|row| (row.workload, row.concurrency, &row.broker, &row.direct));
    seed(
        "seed's p50 < 50 ms / p99 < 200 ms, closed loop",
        cells,
        1.0,
        "no cells",
    )
}

fn seed_paced(report: &Report) -> Target {
    let cells = report
        .paced
        .iter()
        .map(|row| (row.workload, row.concurrency, &row.broker, &row.direct));
    seed(
        "seed's targets / 100 (500 µs / 2 ms), paced",
        cells,
        100.0,
        "no paced cells (--paced-load 0)",
    )
}

/// Each cell's broker p50 and p99 against the seed's targets with `spare`
/// times to spare; a cell is (workload, clients, broker, direct).
fn seed<'a>(
    target: &'static str,
    cells: impl Iterator<Item = (Workload, usize, &'a Cell, &'a Cell)>,
    spare: f64,
    unmeasured: &str,
) -> Target {
    let figures = cells
        .map(|(workload, concurrency, broker, direct)| Figure {
            text: format!(
                "{} @{concurrency} {}/{}",
                workload.name(),
                time(broker.p50_us),
                time(broker.p99_us)
            ),
            met: within_seed(broker, spare),
            direct_missed: !within_seed(direct, spare),
        })
        .collect();
    judge(target, figures, unmeasured)
}

/// Microseconds as µs below a millisecond, else as ms.
fn time(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.1} ms", us / 1000.0)
    }
}

/// The targets as the report's last table.
pub fn print(targets: &[Target]) {
    println!("\ntargets of the performance issue, judged on this run:");
    for t in targets {
        println!("{:<13} {:<48} {}", t.verdict.label(), t.target, t.figures);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::Streaming;

    fn cell(ops_per_s: f64, p50_us: f64, p99_us: f64) -> Cell {
        Cell {
            calls: 100,
            errors: 0,
            ops_per_s,
            p50_us,
            p99_us,
            p999_us: p99_us,
            broker_cpu_s_per_1000: None,
            machine_cpu_s_per_1000: None,
            broker_peak_rss_mib: None,
        }
    }

    fn report() -> Report {
        let mut report = Report {
            startup_ms: 20.0,
            idle_rss_mib: 11.0,
            idle_private_mib: 2.4,
            broker_threads: 1,
            broker_connections: 1,
            broker_busy_poll_us: 0,
            pgbouncer: true,
            rows: Vec::new(),
            paced: Vec::new(),
            streaming: None,
            targets: Vec::new(),
        };
        for (concurrency, direct_p50) in [(1, 50.0), (16, 300.0), (64, 1000.0)] {
            report.add(
                Workload::Select1,
                concurrency,
                cell(1000.0, direct_p50, 2.0 * direct_p50),
                cell(600.0, direct_p50 + 60.0, 2.0 * direct_p50),
                Some(cell(500.0, direct_p50, 2.0 * direct_p50)),
            );
        }
        report
    }

    fn verdict(report: &Report, target: usize) -> (Verdict, String) {
        let t = &judge_all(report)[target];
        (t.verdict, t.figures.clone())
    }

    #[test]
    fn a_run_that_meets_the_sql_targets_says_so() {
        let report = report();
        let (v, figures) = verdict(&report, 0);
        assert_eq!(v, Verdict::Met, "{figures}");
        assert_eq!(
            figures,
            "select 1 @16 1.20x (0.60x direct), select 1 @64 1.20x (0.60x direct)"
        );
        assert_eq!(
            verdict(&report, 1),
            (Verdict::Met, "select 1 +60 µs".into())
        );
    }

    #[test]
    fn one_cell_short_of_a_target_misses_it_and_is_named() {
        let mut report = report();
        report.add(
            Workload::Rows100,
            64,
            cell(1000.0, 1000.0, 2000.0),
            cell(900.0, 1000.0, 2000.0),
            Some(cell(950.0, 1000.0, 2000.0)),
        );
        report.add(
            Workload::PointLookup,
            1,
            cell(1000.0, 50.0, 90.0),
            cell(900.0, 151.0, 200.0),
            None,
        );
        let (v, figures) = verdict(&report, 0);
        assert_eq!(v, Verdict::NotMet);
        assert!(
            figures.ends_with("100 rows @64 0.95x (0.90x direct) (missed)"),
            "{figures}"
        );
        let (v, figures) = verdict(&report, 1);
        assert_eq!(v, Verdict::NotMet);
        assert_eq!(figures, "select 1 +60 µs, point lookup +101 µs (missed)");
    }

    #[test]
    fn a_cell_with_failed_calls_misses_whatever_its_figures() {
        let mut report = report();
        report.rows[1].broker.errors = 3;
        let (v, figures) = verdict(&report, 0);
        assert_eq!(v, Verdict::NotMet);
        assert!(
            figures.starts_with("select 1 @16 1.20x (0.60x direct) (3 errors) (missed)"),
            "{figures}"
        );
    }

    #[test]
    fn without_pgbouncer_or_streaming_those_targets_are_not_measured() {
        let mut report = report();
        report.pgbouncer = false;
        for row in &mut report.rows {
            row.pgbouncer = None;
            row.broker_vs_pgbouncer = None;
        }
        assert_eq!(
            verdict(&report, 0),
            (Verdict::NotMeasured, "no PgBouncer in this run".into())
        );
        assert_eq!(verdict(&report, 2).0, Verdict::NotMeasured);
        assert_eq!(verdict(&report, 3).0, Verdict::NotMeasured);
        assert_eq!(verdict(&report, 5).0, Verdict::NotMeasured);
        assert_eq!(verdict(&report, 6).0, Verdict::Met);
        assert_eq!(verdict(&report, 7).0, Verdict::Met);
    }

    #[test]
    fn large_objects_are_judged_on_their_cells_and_the_stream() {
        let mut report = report();
        report.add(
            Workload::Get1m,
            16,
            cell(100.0, 1.0, 1.0),
            cell(79.0, 1.0, 1.0),
            None,
        );
        report.streaming = Some(Streaming {
            mib: 1024,
            direct_put_mib_s: 100.0,
            direct_get_mib_s: 100.0,
            broker_put_mib_s: 85.0,
            broker_get_mib_s: 90.0,
            put_ratio: 0.85,
            get_ratio: 0.9,
            broker_peak_rss_mib: 70.0,
            broker_put_peak_rss_mib: 70.0,
            broker_get_peak_rss_mib: 30.0,
        });
        assert_eq!(
            verdict(&report, 2),
            (
                Verdict::NotMet,
                "GetObject 1 MiB @16 0.79x (missed), 1024 MiB put 0.85x, 1024 MiB get 0.90x".into()
            )
        );
        assert_eq!(
            verdict(&report, 3),
            (Verdict::NotMet, "70.0 MiB moving 1024 MiB (missed)".into())
        );
    }

    #[test]
    fn a_latency_target_notes_where_the_direct_path_missed_it_too() {
        let mut report = report();
        report.add_paced(
            Workload::Select1,
            64,
            1000.0,
            cell(1000.0, 100.0, 400.0),
            cell(1000.0, 200.0, 900.0),
            None,
        );
        report.add_paced(
            Workload::Put1m,
            64,
            10.0,
            cell(10.0, 5000.0, 7000.0),
            cell(10.0, 5500.0, 7400.0),
            None,
        );
        assert_eq!(
            verdict(&report, 5),
            (
                Verdict::NotMet,
                "select 1 @64 200 µs/900 µs, PutObject 1 MiB @64 5.5 ms/7.4 ms (missed, as direct did)"
                    .into()
            )
        );
        // Closed loop at the largest concurrency: 1 ms / 2 ms is well
        // within 50 ms / 200 ms.
        assert_eq!(
            verdict(&report, 4),
            (Verdict::Met, "select 1 @64 1.1 ms/2.0 ms".into())
        );
    }
}
