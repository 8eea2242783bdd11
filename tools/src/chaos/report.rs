//! What one scenario's orders say: outcomes against what they would have
//! been without the fault, goodput per second, recovery time and dip, and
//! the plot of it.

use std::fmt::Write as _;

use serde::Serialize;

use super::client::Record;
use crate::bench::report::{Check, Invariants};

/// One run of `cargo xtask chaos` (or the guard's scenarios): `bench-results/chaos-<date>.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub date: String,
    pub commit: String,
    pub profile: String,
    pub command: String,
    pub note: String,
    /// The closed-loop maximum the load is a share of, when it was measured.
    pub max_sagas_per_second: Option<f64>,
    pub offered_per_second: f64,
    pub scenarios: Vec<ScenarioReport>,
}

/// One scenario's verdict in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub fault: String,
    pub ok: bool,
    pub checks: Vec<Check>,
    pub analysis: Analysis,
    pub details: Details,
}

/// What a scenario's checks were judged on, beyond the orders' analysis.
#[derive(Debug, Clone, Serialize)]
pub struct Details {
    pub drain_seconds: f64,
    pub invariants: Invariants,
    pub dead_lettered: i64,
    pub duplicate_orders_in_database: i64,
    /// Components other than the target that stopped meanwhile and were started again.
    pub also_restarted: Vec<String>,
    pub post_attempts: u64,
    pub failed_client_requests: u32,
    pub first_errors_of_orders_without_an_end: Vec<String>,
    /// What the client was told when a request failed, with when the order was sent.
    pub failed_request_errors: Vec<String>,
}

/// The `failure_reason` of an order a participant shed: its deadline had
/// passed when its request reached the participant.
pub const SHED_REASON: &str = "deadline_passed";

/// Goodput counts as recovered at this share of the offered rate (averaged
/// over [`SMOOTHING`] seconds).
pub const RECOVERED_SHARE: f64 = 0.9;

/// Seconds goodput is averaged over to judge recovery: one second is noisy,
/// and at a few orders per second so are three (completions clump when a
/// consumer handles a batch).
const SMOOTHING: usize = 5;

/// When the fault happened, from the start of the scenario.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Window {
    /// The fault was injected.
    pub fault_start: f64,
    /// The component was back (restarted and answering).
    pub fault_end: f64,
    /// The last order was sent.
    pub load_end: f64,
}

/// The numbers of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub offered_per_second: f64,
    pub sent: usize,
    pub accepted: usize,
    /// Never accepted, though the client kept trying (with the same key).
    pub not_accepted: usize,
    /// Accepted, but not terminal when the client stopped waiting.
    pub unfinished: usize,
    /// Ended as they would have without the fault.
    pub as_expected: usize,
    pub cancelled: usize,
    pub shed: usize,
    /// Ended otherwise than they would have, but neither cancelled nor shed.
    pub other: usize,
    /// Keys the platform answered with more than one order id.
    pub duplicate_keys: usize,
    /// Orders sent after goodput recovered that did not end as they would have.
    pub changed_after_recovery: usize,
    /// Orders sent after the component was back that did not end as they would have.
    pub changed_after_fault: usize,
    /// From the component being back to goodput at `RECOVERED_SHARE` of offered for the rest of
    /// the run; `None`: not within the run.
    pub recovery_seconds: Option<f64>,
    /// Lowest smoothed goodput from the fault to the recovery, as a share of offered.
    pub dip: f64,
    /// Orders that ended as expected, per second of their end.
    pub goodput: Vec<u32>,
    pub window: Window,
}

fn changed(record: &Record) -> bool {
    match &record.status {
        Some((status, reason)) => status != record.expected || reason == SHED_REASON,
        None => true,
    }
}

pub fn analyse(records: &[Record], offered: f64, window: Window) -> Analysis {
    let seconds = window.load_end.ceil() as usize;
    let mut goodput = vec![0u32; seconds.max(1)];
    let (mut as_expected, mut cancelled, mut shed, mut other) = (0, 0, 0, 0);
    for record in records {
        let Some((status, reason)) = &record.status else { continue };
        if reason == SHED_REASON {
            shed += 1;
        } else if status == record.expected {
            as_expected += 1;
            if let Some(second) = record.ended.map(|e| e.as_secs() as usize).filter(|s| *s < goodput.len()) {
                goodput[second] += 1;
            }
        } else if status == "cancelled" {
            cancelled += 1;
        } else {
            other += 1;
        }
    }
    // Each second's goodput averaged with the seconds before it: the
    // recovery is judged on what had already ended by then.
    let smoothed: Vec<f64> = (0..goodput.len())
        .map(|s| {
            let from = (s + 1).saturating_sub(SMOOTHING);
            goodput[from..=s].iter().map(|&n| f64::from(n)).sum::<f64>() / (s + 1 - from) as f64
        })
        .collect();
    // Recovered: from that second to the end of the run, goodput stays up
    // (a burst of backlog right after the fault that falls away again is no
    // recovery). Only whole seconds count: the orders of the last, partial
    // one end after the run.
    let back = window.fault_end.floor() as usize;
    let last_whole = (window.load_end.floor() as usize).saturating_sub(1).min(goodput.len() - 1);
    let up = |s: usize| smoothed[s] >= RECOVERED_SHARE * offered;
    let recovered_at = (back..=last_whole).rev().take_while(|&s| up(s)).last();
    let dip_end = recovered_at.unwrap_or(last_whole).max(back);
    let dip = (window.fault_start.floor() as usize..=dip_end)
        .filter_map(|s| smoothed.get(s))
        .fold(f64::INFINITY, |low, &g| low.min(g / offered.max(1e-9)));
    let recovery_point = recovered_at.map(|s| s as f64);
    let sent_after =
        |from: f64| records.iter().filter(|r| r.intended.as_secs_f64() >= from).filter(|r| changed(r)).count();
    Analysis {
        offered_per_second: offered,
        sent: records.len(),
        accepted: records.iter().filter(|r| r.accepted.is_some()).count(),
        not_accepted: records.iter().filter(|r| r.accepted.is_none()).count(),
        unfinished: records.iter().filter(|r| r.accepted.is_some() && r.status.is_none()).count(),
        as_expected,
        cancelled,
        shed,
        other,
        duplicate_keys: records.iter().filter(|r| r.order_ids.len() > 1).count(),
        changed_after_recovery: recovery_point.map_or(0, sent_after),
        changed_after_fault: sent_after(window.fault_end),
        recovery_seconds: recovery_point.map(|p| (p - window.fault_end).max(0.0)),
        dip: if dip.is_finite() { dip } else { 0.0 },
        goodput,
        window,
    }
}

/// Goodput per two seconds as a line of block characters, offered = ▆.
pub fn sparkline(analysis: &Analysis) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let top = analysis.offered_per_second * 4.0 / 3.0;
    analysis
        .goodput
        .chunks(2)
        .map(|pair| {
            let rate = pair.iter().map(|&n| f64::from(n)).sum::<f64>() / pair.len() as f64;
            let level = ((rate / top.max(1e-9)) * 7.0).round().clamp(0.0, 7.0) as usize;
            BLOCKS[level]
        })
        .collect()
}

/// The goodput plot: a bar per second, the offered rate as a line, the fault
/// shaded, the recovery marked.
pub fn svg(name: &str, analysis: &Analysis) -> String {
    let (width, height, left, bottom, top_pad) = (720.0, 240.0, 48.0, 28.0, 24.0);
    let seconds = analysis.goodput.len().max(1) as f64;
    let peak = analysis.goodput.iter().copied().max().unwrap_or(0) as f64;
    let y_max = (analysis.offered_per_second * 1.5).max(peak).max(1.0);
    let plot_w = width - left - 8.0;
    let plot_h = height - bottom - top_pad;
    let x = |s: f64| left + s / seconds * plot_w;
    let y = |v: f64| top_pad + plot_h - v / y_max * plot_h;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="{width}" height="{height}" fill="white"/>"#);
    let w = analysis.window;
    let _ = writeln!(
        out,
        r##"<rect x="{:.1}" y="{top_pad}" width="{:.1}" height="{plot_h}" fill="#f4cccc"/>"##,
        x(w.fault_start),
        (x(w.fault_end) - x(w.fault_start)).max(1.0)
    );
    let bar = plot_w / seconds;
    for (s, &n) in analysis.goodput.iter().enumerate() {
        let top = y(f64::from(n));
        let _ = writeln!(
            out,
            r##"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="#3c78d8"/>"##,
            x(s as f64),
            (bar - 0.5).max(0.5),
            top_pad + plot_h - top
        );
    }
    let offered = y(analysis.offered_per_second);
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{offered:.1}" x2="{:.1}" y2="{offered:.1}" stroke="#333" stroke-dasharray="4 3"/>"##,
        left + plot_w
    );
    if let Some(recovery) = analysis.recovery_seconds {
        let at = x(w.fault_end + recovery);
        let _ = writeln!(
            out,
            r##"<line x1="{at:.1}" y1="{top_pad}" x2="{at:.1}" y2="{:.1}" stroke="#38761d" stroke-width="2"/>"##,
            top_pad + plot_h
        );
    }
    let axis = top_pad + plot_h;
    let _ = writeln!(out, r##"<line x1="{left}" y1="{axis}" x2="{:.1}" y2="{axis}" stroke="#333"/>"##, left + plot_w);
    let _ = writeln!(out, r##"<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{axis}" stroke="#333"/>"##);
    for tick in (0..=seconds as usize).step_by(10) {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{tick}s</text>"#,
            x(tick as f64),
            axis + 14.0
        );
    }
    let _ =
        writeln!(out, r#"<text x="{}" y="{:.1}" text-anchor="end">{:.0}/s</text>"#, left - 4.0, y(y_max) + 4.0, y_max);
    let _ = writeln!(out, r#"<text x="{}" y="{:.1}" text-anchor="end">0</text>"#, left - 4.0, axis);
    let recovery = analysis.recovery_seconds.map_or("not within the run".to_owned(), |r| format!("{r:.0} s"));
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="15">{name}: sagas ending as without the fault, per second (bars); offered {:.0}/s (dashed); fault (shaded); recovered after {recovery} (green)</text>"#,
        analysis.offered_per_second
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;

    fn record(intended: u64, ended: u64, status: &str, expected: &'static str) -> Record {
        Record {
            intended: Duration::from_secs(intended),
            expected,
            accepted: Some(Duration::from_secs(intended)),
            order_ids: BTreeSet::from([format!("{intended}-{ended}")]),
            status: Some((status.to_owned(), String::new())),
            ended: Some(Duration::from_secs(ended)),
            attempts: 1,
            last_error: None,
            failed_requests: 0,
        }
    }

    #[test]
    fn recovery_is_when_goodput_is_back_and_later_orders_end_as_expected() {
        let window = Window { fault_start: 10.0, fault_end: 20.0, load_end: 40.0 };
        let mut records = Vec::new();
        for s in 0..40 {
            // 10 orders a second, each ending in its second; those sent in the fault end at 21.
            let ended = if (10..20).contains(&s) { 21 } else { s };
            records.extend((0..10).map(|_| record(s, ended, "completed", "completed")));
        }
        records.push(record(30, 31, "cancelled", "completed"));
        records.push(record(5, 31, "cancelled", "completed"));
        let analysis = analyse(&records, 10.0, window);
        assert_eq!((analysis.as_expected, analysis.cancelled), (400, 2));
        assert_eq!(analysis.dip, 0.0, "nothing ended during the fault");
        assert_eq!(analysis.recovery_seconds, Some(1.0), "the second the backlog ended in");
        assert_eq!(analysis.goodput[21], 110);
        assert_eq!(analysis.changed_after_fault, 1, "the order sent before the fault does not count");
        assert_eq!(analysis.changed_after_recovery, 1);
        assert!(svg("test", &analysis).contains("<svg"));
        assert_eq!(sparkline(&analysis).chars().count(), 20);
    }

    #[test]
    fn a_few_orders_a_second_with_clumps_and_a_partial_last_second_still_recover() {
        let window = Window { fault_start: 5.0, fault_end: 8.0, load_end: 30.6 };
        let mut records = Vec::new();
        // 8 a second, completions clumped in pairs of seconds (7, 9), the last second cut short.
        for s in 0..31u64 {
            let ended = if (5..8).contains(&s) { 8 } else { s };
            let n = if s == 30 {
                3
            } else if s % 2 == 0 {
                7
            } else {
                9
            };
            records.extend((0..n).map(|_| record(s, ended, "completed", "completed")));
        }
        let analysis = analyse(&records, 8.0, window);
        assert_eq!(analysis.recovery_seconds, Some(0.0), "{:?}", analysis.goodput);
    }

    #[test]
    fn shed_orders_are_counted_apart_from_cancelled_ones() {
        let mut shed = record(1, 2, "inventory_reserved_failed", "completed");
        shed.status = Some(("inventory_reserved_failed".to_owned(), SHED_REASON.to_owned()));
        let mut lost = record(2, 3, "completed", "completed");
        lost.status = None;
        lost.accepted = None;
        let window = Window { fault_start: 0.0, fault_end: 0.0, load_end: 5.0 };
        let analysis = analyse(&[shed, lost, record(3, 3, "payment_failed", "payment_failed")], 1.0, window);
        assert_eq!((analysis.shed, analysis.cancelled, analysis.as_expected), (1, 0, 1));
        assert_eq!((analysis.not_accepted, analysis.unfinished), (1, 0));
        assert_eq!(analysis.changed_after_fault, 2);
    }
}
