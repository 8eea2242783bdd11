//! The status machine as an SVG, for the console: a box per state, an arrow per transition
//! and per timeout. Every element carries its name (`data-state`, `data-from`, `data-to`,
//! `data-on`), so a page can highlight the current state and the ways out of it without
//! knowing the spec. Written by the generator, so it cannot drift from the spec, and bundled
//! into the binaries: nothing is fetched from elsewhere.
//!
//! Layout: a column per step, each state one column right of the furthest state that leads
//! to it (the machine's forward steps; a cycle back is drawn as it comes). An arrow between
//! neighbouring columns is a curve; one that skips columns runs along the bottom, under
//! the boxes, so it never crosses one.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::ir::{Saga, StatusMachine};

const BOX_W: i32 = 190;
const BOX_H: i32 = 40;
const COL_GAP: i32 = 190;
const ROW_GAP: i32 = 36;
const MARGIN: i32 = 20;
/// Room under the boxes for the arrows that skip columns, one lane each.
const LANE: i32 = 22;

/// One arrow: from, to, label, whether it is a timeout.
struct Arrow<'a> {
    from: &'a str,
    to: &'a str,
    on: String,
    label: String,
    timeout: bool,
}

pub fn status(saga: &Saga) -> Option<String> {
    let sm = saga.status.as_ref()?;
    let arrows = arrows(sm);
    let column = columns(sm, &arrows);
    let mut rows: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for st in &sm.states {
        rows.entry(column[st.name.as_str()]).or_default().push(&st.name);
    }
    let max_rows = rows.values().map(Vec::len).max().unwrap_or(1) as i32;
    let position = |state: &str| -> (i32, i32) {
        let col = column[state];
        let row = rows[&col].iter().position(|s| *s == state).unwrap_or(0) as i32;
        (MARGIN + col as i32 * (BOX_W + COL_GAP), MARGIN + row * (BOX_H + ROW_GAP))
    };
    let boxes_bottom = MARGIN + max_rows * (BOX_H + ROW_GAP) - ROW_GAP;
    let skipping = arrows.iter().filter(|a| column[a.to] > column[a.from] + 1).count() as i32;
    let width = MARGIN * 2 + rows.len() as i32 * (BOX_W + COL_GAP) - COL_GAP;
    let height = boxes_bottom + MARGIN + (skipping + 1) * LANE;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="status-machine" data-owner="{}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-family="sans-serif" font-size="13">"#,
        sm.owner
    );
    let _ = writeln!(s, "  <title>Status of one {} saga, owned by the {} service</title>", saga.name, sm.owner);
    s.push_str(concat!(
        "  <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" ",
        "orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"context-stroke\"/></marker></defs>\n"
    ));
    let mut lane = 0;
    for a in &arrows {
        let (fx, fy) = position(a.from);
        let (tx, ty) = position(a.to);
        let (from_col, to_col) = (column[a.from], column[a.to]);
        let (path, label_at) = if to_col > from_col + 1 {
            lane += 1;
            let y = boxes_bottom + lane * LANE;
            let (sx, ex) = (fx + BOX_W / 2, tx + BOX_W / 2);
            (format!("M {sx} {} L {sx} {y} L {ex} {y} L {ex} {}", fy + BOX_H, ty + BOX_H), ((sx + ex) / 2, y - 5))
        } else if to_col > from_col {
            let (sx, sy, ex, ey) = (fx + BOX_W, fy + BOX_H / 2, tx, ty + BOX_H / 2);
            let mid = (sx + ex) / 2;
            (format!("M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex} {ey}"), (mid, (sy + ey) / 2 - 5))
        } else if to_col == from_col {
            // Same column: down (or up) the side of the boxes.
            let (sx, ex) = (fx + BOX_W - 30, tx + BOX_W - 30);
            let (sy, ey) = if ty > fy { (fy + BOX_H, ty) } else { (fy, ty + BOX_H) };
            (format!("M {sx} {sy} L {ex} {ey}"), (sx + 6, (sy + ey) / 2))
        } else {
            // Back to an earlier column: over the top.
            let (sx, ex) = (fx + BOX_W / 2, tx + BOX_W / 2);
            let y = MARGIN / 2;
            (format!("M {sx} {fy} L {sx} {y} L {ex} {y} L {ex} {ty}"), ((sx + ex) / 2, y + 12))
        };
        let class = if a.timeout { "transition timeout" } else { "transition" };
        let dash = if a.timeout { r#" stroke-dasharray="6 4""# } else { "" };
        let _ = writeln!(
            s,
            r##"  <g class="{class}" data-from="{}" data-to="{}" data-on="{}"><path d="{path}" fill="none" stroke="#667" stroke-width="1.5"{dash} marker-end="url(#arrow)"/><text x="{}" y="{}" text-anchor="middle" fill="#445">{}</text></g>"##,
            a.from,
            a.to,
            a.on,
            label_at.0,
            label_at.1,
            escape(&a.label)
        );
    }
    for st in &sm.states {
        let (x, y) = position(&st.name);
        let class = if st.terminal { "state terminal" } else { "state" };
        let border = if st.terminal { 3 } else { 1 };
        let _ = writeln!(
            s,
            r##"  <g class="{class}" data-state="{name}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="#f4f6fa" stroke="#334" stroke-width="{border}"/><text x="{}" y="{}" text-anchor="middle">{name}</text></g>"##,
            x + BOX_W / 2,
            y + BOX_H / 2 + 5,
            name = st.name,
        );
    }
    s.push_str("</svg>\n");
    Some(s)
}

fn arrows(sm: &StatusMachine) -> Vec<Arrow<'_>> {
    let mut out: Vec<Arrow<'_>> = sm
        .transitions
        .iter()
        .map(|t| Arrow { from: &t.from, to: &t.to, on: t.on.clone(), label: t.on.clone(), timeout: false })
        .collect();
    for st in &sm.states {
        if let Some(t) = &st.timeout {
            let label = format!("timeout {}", human(t.after_ms));
            out.push(Arrow { from: &st.name, to: &t.to, on: "timeout".into(), label, timeout: true });
        }
    }
    out
}

/// Each state's column: one right of the furthest state leading to it, ignoring arrows
/// that would close a cycle (relaxed as many times as there are states).
fn columns<'a>(sm: &'a StatusMachine, arrows: &[Arrow<'a>]) -> BTreeMap<&'a str, usize> {
    let mut column: BTreeMap<&str, usize> = sm.states.iter().map(|s| (s.name.as_str(), 0)).collect();
    let limit = sm.states.len();
    for _ in 0..limit {
        let mut changed = false;
        for a in arrows {
            if a.to == sm.initial || a.from == a.to {
                continue;
            }
            let want = column[a.from] + 1;
            if want > column[a.to] && want < limit {
                column.insert(a.to, want);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    column
}

fn human(ms: u64) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
