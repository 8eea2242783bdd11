//! The run's picture: latency percentiles against offered load, from the
//! open-loop phases of the stack and (with `--peer`) of the peer, with each
//! side's closed-loop maximum as a vertical line. Drawn from the report, so a
//! plot can be redrawn from any `bench-results/*.json` read back as one.

use plotters::prelude::*;

use super::report::{Hops, Latency, Report, f};

/// One line: (offered sagas/s, latency ms) points.
struct Line {
    label: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// Which quantile of a phase's latency a line draws.
type Pick = fn(&Latency) -> f64;

const OURS: RGBColor = RGBColor(31, 119, 180);
const PEER: RGBColor = RGBColor(214, 96, 39);

/// The SVG, or `None` when the run had no open-loop phase to draw.
pub fn latency_against_load(report: &Report) -> anyhow::Result<Option<String>> {
    let ours: Vec<(f64, &Latency)> =
        report.open_loop.iter().filter_map(|p| Some((p.offered_per_second?, &p.latency_ms))).collect();
    let peer_result = report.peer.as_ref().map(|p| &p.result);
    let peer: Vec<(f64, &Latency)> =
        peer_result.iter().flat_map(|r| &r.open_loop).filter_map(|p| Some((p.rate?, &p.latency_ms))).collect();
    let peer_name = peer_result.map_or("peer", |r| r.engine.as_str());
    let mut lines = Vec::new();
    for (name, color, side) in [("this stack", OURS, &ours), (peer_name, PEER, &peer)] {
        let quantiles: [(&str, bool, Pick); 2] = [("p50", false, |l| l.p50), ("p99", true, |l| l.p99)];
        for (quantile, dashed, pick) in quantiles {
            let points: Vec<(f64, f64)> = side.iter().map(|(rate, latency)| (*rate, pick(latency))).collect();
            if !points.is_empty() {
                lines.push(Line { label: format!("{name} {quantile}"), color, dashed, points });
            }
        }
    }
    if lines.is_empty() {
        return Ok(None);
    }
    let maxima: Vec<(String, RGBColor, f64)> = [
        ("this stack", OURS, Some(report.max_sagas_per_second)),
        (peer_name, PEER, peer_result.map(|r| r.max_sagas_per_second)),
    ]
    .into_iter()
    .filter_map(|(name, color, max)| Some((format!("{name}: closed-loop maximum"), color, max?)))
    .collect();

    let all = lines.iter().flat_map(|l| l.points.iter());
    let x_max = all.clone().map(|p| p.0).chain(maxima.iter().map(|m| m.2)).fold(1.0, f64::max) * 1.08;
    let y_max = all.map(|p| p.1).fold(1.0, f64::max) * 1.12;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (860, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let caption =
            format!("Latency to the terminal status against offered load ({}, commit {})", report.date, report.commit);
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("offered load, sagas/s (open loop)")
            .y_desc("latency, ms")
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for line in &lines {
            let style = line.color.stroke_width(2);
            let series = match line.dashed {
                true => chart.draw_series(DashedLineSeries::new(line.points.iter().copied(), 6, 4, style))?,
                false => chart.draw_series(LineSeries::new(line.points.iter().copied(), style))?,
            };
            // The legend's sample of a dashed line is two dashes, of a solid one two touching halves.
            let (first, second) = if line.dashed { (8, 12) } else { (10, 10) };
            series.label(line.label.clone()).legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (first, 0)], style)
                    + PathElement::new(vec![(second, 0), (20, 0)], style)
            });
            chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 3, line.color.filled())))?;
        }
        for (label, color, max) in &maxima {
            let style = color.mix(0.7).stroke_width(1);
            chart
                .draw_series(LineSeries::new([(*max, 0.0), (*max, y_max)], style))?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
    }
    Ok(Some(svg))
}

/// Colours of the kinds of hop, in the order the report lists them.
const KINDS: [RGBColor; 6] = [
    RGBColor(148, 103, 189),
    RGBColor(31, 119, 180),
    RGBColor(214, 96, 39),
    RGBColor(44, 160, 44),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Per open-loop phase, two stacked bars: the mean of each kind of hop over
/// all sagas, and over the slowest 1 %. A saga's hops add up to its latency,
/// so each bar's height is that group's mean latency, and where the two bars
/// differ is where the tail comes from. `None` when no phase has hops.
pub fn hops_by_kind(report: &Report) -> anyhow::Result<Option<String>> {
    let phases: Vec<(String, &Hops)> = report
        .open_loop
        .iter()
        .filter_map(|p| Some((format!("{}/s", f(p.offered_per_second?)), p.hops.as_ref().filter(|h| h.sagas > 0)?)))
        .collect();
    let Some((_, first)) = phases.first() else { return Ok(None) };
    let kinds: Vec<&str> = first.kinds.iter().map(|k| k.name.as_str()).collect();
    // Bar 2i is phase i's sagas, bar 2i + 1 its slowest 1 %.
    let bars: Vec<(String, Vec<f64>)> = phases
        .iter()
        .flat_map(|(rate, hops)| {
            let all = hops.kinds.iter().map(|k| k.mean).collect();
            let slowest = hops.kinds.iter().map(|k| k.mean_in_slowest.unwrap_or(0.0)).collect();
            [(format!("{rate}: all"), all), (format!("{rate}: slowest 1 %"), slowest)]
        })
        .collect();
    let y_max = bars.iter().map(|(_, v)| v.iter().sum::<f64>()).fold(1.0, f64::max) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (860, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let caption = format!("Mean latency by kind of hop, open loop ({}, commit {})", report.date, report.commit);
        let labels: Vec<String> = bars.iter().map(|(label, _)| label.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d((0..bars.len() - 1).into_segmented(), 0.0..y_max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE.mix(0.0))
            .x_labels(bars.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc("mean latency, ms")
            .draw()?;
        for (k, kind) in kinds.iter().enumerate() {
            let color = KINDS[k % KINDS.len()];
            let rectangles = bars.iter().enumerate().map(move |(i, (_, values))| {
                let bottom: f64 = values[..k].iter().sum();
                let top = bottom + values.get(k).copied().unwrap_or(0.0);
                let mut bar = Rectangle::new(
                    [(SegmentValue::Exact(i), bottom), (SegmentValue::Exact(i + 1), top)],
                    color.filled(),
                );
                // A narrow gap between a phase's two bars, a wide one between phases.
                let (left, right) = if i % 2 == 0 { (24, 3) } else { (3, 24) };
                bar.set_margin(0, 0, left, right);
                bar
            });
            chart
                .draw_series(rectangles)?
                .label(kind.to_string())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
    }
    Ok(Some(svg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report;

    /// A recorded run with the peer beside the stack (three open-loop rates each).
    fn recorded() -> Report {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
        let text = std::fs::read_to_string(root.join("bench-results/20261203T175300Z.json")).expect("recorded run");
        serde_json::from_str(&text).expect("a report")
    }

    #[test]
    fn both_sides_and_their_maxima_are_drawn() {
        let mut report = recorded();
        report.open_loop.truncate(2);
        if let Some(peer) = report.peer.as_mut() {
            peer.result.engine = "DBOS".to_owned();
            peer.result.open_loop.truncate(1);
        }
        let svg = latency_against_load(&report).expect("drawn").expect("an open loop to draw");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for label in ["this stack p50", "this stack p99", "DBOS p50", "DBOS p99", "DBOS: closed-loop maximum"] {
            assert!(svg.contains(label), "no {label:?} in the legend");
        }
        // A marker per percentile per phase: two phases of ours, one of the peer.
        assert_eq!(svg.matches("<circle").count(), 2 * 2 + 2, "markers for both percentiles of each phase");
    }

    #[test]
    fn a_run_without_an_open_loop_draws_nothing() {
        let mut report = recorded();
        report.open_loop.clear();
        report.peer = None;
        assert!(latency_against_load(&report).expect("no error").is_none());
    }

    #[test]
    fn each_phase_gets_a_bar_of_all_sagas_and_one_of_the_slowest_stacked_by_kind() {
        let mut report = recorded();
        assert!(hops_by_kind(&report).expect("no error").is_none(), "a run before hops draws none");
        let stats = |name: &str, mean: f64| report::HopStats {
            name: name.to_owned(),
            on_path: true,
            sagas: 100,
            p50: mean,
            p95: mean,
            p99: mean,
            mean,
            mean_in_slowest: Some(mean * 3.0),
        };
        let hops = Hops {
            sagas: 100,
            unlinked: 0,
            total: stats("the whole saga", 6.0),
            kinds: vec![stats("request", 1.0), stats("transactions", 2.0), stats("broker", 3.0)],
            hops: vec![],
        };
        report.open_loop.truncate(2);
        report.open_loop.iter_mut().for_each(|p| p.hops = Some(hops.clone()));
        let svg = hops_by_kind(&report).expect("drawn").expect("phases with hops");
        for label in ["request", "transactions", "broker", "60.8/s: all", "122/s: slowest 1 %"] {
            assert!(svg.contains(label), "no {label:?} in the picture");
        }
        // Two phases, two bars each, three kinds per bar, plus the legend's three samples.
        let filled = svg.matches("<rect").count();
        assert!(filled >= 2 * 2 * 3 + 3, "{filled} rectangles");
    }
}
