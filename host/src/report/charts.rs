//! The report page's charts: inline SVG, no script. Spend over time and over
//! cycles (limit, thresholds, markers), cost by operation, tokens per call.

use super::log::{fmt_exact, Call, MarkerKind, Run, Totals};
use crate::budget::Nanos;
use std::fmt::Write;

const W: f64 = 880.0;
const H: f64 = 330.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 56.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 46.0;

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// About `n` round tick values covering `[lo, hi]`.
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw * (1.0 - 1e-9)).unwrap_or(10.0 * mag);
    if !(step.is_finite() && step > 0.0) {
        return vec![lo];
    }
    let first = (lo / step - 1e-9).ceil();
    let mut out = Vec::new();
    let mut k = 0;
    loop {
        let v = (first + k as f64) * step;
        if v > hi + step * 1e-9 || k > 1000 {
            break;
        }
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        k += 1;
    }
    out
}

pub(super) fn fmt_usd_tick(v: f64, step: f64) -> String {
    // Enough decimals to tell the ticks apart: 0.0025 needs four.
    let decimals = (0..9).find(|d| {
        let scaled = step * 10f64.powi(*d);
        (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
    });
    // Money reads as cents at least: $0.10, not $0.1.
    let decimals = decimals.unwrap_or(9).max(2) as usize;
    format!("${v:.decimals$}")
}

/// Seconds as a short axis label for a span of `span` seconds.
pub fn fmt_secs(s: f64, span: f64) -> String {
    if span < 2.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if span < 120.0 {
        let t = format!("{s:.1}");
        format!("{} s", t.strip_suffix(".0").unwrap_or(&t))
    } else if span < 7200.0 {
        format!("{}:{:02}", (s / 60.0).floor() as u64, (s % 60.0).floor() as u64)
    } else {
        format!("{}:{:02}h", (s / 3600.0).floor() as u64, ((s % 3600.0) / 60.0).floor() as u64)
    }
}

fn usd(n: Nanos) -> f64 {
    crate::budget::nanos_to_usd(n)
}

pub(super) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut o = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            o.push(',');
        }
        o.push(c);
    }
    o
}

/// A linear map from data to the plot area.
struct Scale {
    x0: f64,
    x1: f64,
    y1: f64,
}

impl Scale {
    fn x(&self, v: f64) -> f64 {
        let span = (self.x1 - self.x0).max(f64::MIN_POSITIVE);
        LEFT + (v - self.x0) / span * (W - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        let span = self.y1.max(f64::MIN_POSITIVE);
        H - BOTTOM - v / span * (H - TOP - BOTTOM)
    }
}

/// One axis of a spend chart: how to place and label x.
enum XAxis {
    Time { span: f64 },
    Cycles,
}

struct Point {
    x: f64,
    spent: Nanos,
    title: String,
}

struct Mark {
    kind: MarkerKind,
    x: f64,
    spent: Nanos,
    title: String,
    label: String,
}

/// A cumulative spend chart: the spend as steps through the call points,
/// the limit and threshold lines as steps through the segments, markers.
#[allow(clippy::too_many_arguments)]
fn spend_chart(
    o: &mut String,
    id: &str,
    title: &str,
    axis: XAxis,
    (x0, x1): (f64, f64),
    origin: (f64, Nanos),
    points: &[Point],
    limits: &[(f64, Nanos)],
    thresholds: &[f64],
    marks: &[Mark],
) {
    let max_limit = limits.iter().map(|l| l.1).max().unwrap_or(0);
    let max_spent = points.iter().map(|p| p.spent).max().unwrap_or(0).max(marks.iter().map(|m| m.spent).max().unwrap_or(0));
    let top = usd(max_limit.max(max_spent)).max(1e-9) * 1.08;
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let s = Scale { x0, x1, y1: top };
    let _ = writeln!(o, r#"<figure class="chart-box"><figcaption>{}</figcaption>"#, esc(title));
    let _ = writeln!(
        o,
        r#"<svg class="chart" id="{id}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}">"#,
        esc(title)
    );
    let (pl, pr, pt, pb) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let _ = writeln!(o, r#"<rect class="plot" x="{pl}" y="{pt}" width="{:.1}" height="{:.1}"/>"#, pr - pl, pb - pt);
    // Y grid and labels.
    let yt = ticks(0.0, top, 6);
    let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { top };
    for v in &yt {
        let y = s.y(*v);
        let _ = writeln!(o, r#"<line class="grid" x1="{pl}" x2="{pr}" y1="{y:.1}" y2="{y:.1}"/><text class="ylab" x="{:.1}" y="{:.1}">{}</text>"#, pl - 6.0, y + 4.0, fmt_usd_tick(*v, ystep));
    }
    // X grid and labels.
    let xt: Vec<f64> = match axis {
        XAxis::Time { .. } => ticks(x0, x1, 7),
        XAxis::Cycles => {
            let span = (x1 - x0).max(1.0);
            let step = ticks(0.0, span, 10).get(1).copied().unwrap_or(1.0).max(1.0).round();
            let mut v = Vec::new();
            let mut c = x0.ceil();
            while c <= x1 + 1e-9 {
                v.push(c);
                c += step;
            }
            v
        }
    };
    for v in &xt {
        let x = s.x(*v);
        let label = match axis {
            XAxis::Time { span } => fmt_secs(*v, span),
            XAxis::Cycles => format!("{v:.0}"),
        };
        let _ = writeln!(o, r#"<line class="grid" x1="{x:.1}" x2="{x:.1}" y1="{pt}" y2="{pb}"/><text class="xlab" x="{x:.1}" y="{:.1}">{}</text>"#, pb + 16.0, esc(&label));
    }
    let xname = match axis {
        XAxis::Time { .. } => "time since the run started",
        XAxis::Cycles => "cycle",
    };
    let _ = writeln!(o, r#"<text class="axis-name" x="{:.1}" y="{:.1}">{xname}</text>"#, (pl + pr) / 2.0, H - 6.0);
    let _ = writeln!(o, r#"<text class="axis-name" transform="translate(14 {:.1}) rotate(-90)">spent (USD)</text>"#, (pt + pb) / 2.0);

    // Limit and thresholds: steps, one level per segment.
    let steps = |frac: f64| -> String {
        let mut d = String::new();
        for (i, (from, limit)) in limits.iter().enumerate() {
            let to = limits.get(i + 1).map(|l| l.0).unwrap_or(x1).max(*from);
            let y = s.y(usd(*limit) * frac);
            let _ = write!(d, "{}{:.1} {:.1} L{:.1} {:.1} ", if i == 0 { "M" } else { "L" }, s.x(*from), y, s.x(to), y);
        }
        d
    };
    if !limits.is_empty() {
        let last = limits.last().map(|l| l.1).unwrap_or(0);
        for t in thresholds {
            let y = s.y(usd(last) * t);
            let _ = writeln!(o, r#"<path class="threshold" d="{}"/><text class="tlab" x="{:.1}" y="{:.1}">{:.0}%</text>"#, steps(*t), pr + 4.0, y + 4.0, t * 100.0);
        }
        let _ = writeln!(o, r#"<path class="limit" d="{}"/><text class="llab" x="{:.1}" y="{:.1}">limit</text>"#, steps(1.0), pr + 4.0, s.y(usd(last)) + 4.0);
    }

    // The spend: a step after each call.
    let mut d = format!("M{:.1} {:.1}", s.x(origin.0), s.y(usd(origin.1)));
    let mut prev = origin.1;
    for p in points {
        let _ = write!(d, " L{:.1} {:.1} L{:.1} {:.1}", s.x(p.x), s.y(usd(prev)), s.x(p.x), s.y(usd(p.spent)));
        prev = p.spent;
    }
    let _ = writeln!(o, r#"<path class="spend" d="{d}"/>"#);

    // Markers: a line down the plot, a symbol at the spend, labels that do not overlap.
    // Each row of labels holds the spans it has used; a label takes the first row it fits.
    let mut rows: Vec<Vec<(f64, f64)>> = Vec::new();
    for m in marks {
        let x = s.x(m.x);
        let y = s.y(usd(m.spent));
        // Near the right edge the label goes left of its line, clear of the limit's.
        let (tx, anchor) = if x > pr - 48.0 { (x - 3.0, "end") } else { (x + 3.0, "start") };
        let width = m.label.chars().count() as f64 * 6.6;
        let span = if anchor == "end" { (tx - width - 3.0, tx + 3.0) } else { (tx - 3.0, tx + width + 3.0) };
        let fits = |used: &Vec<(f64, f64)>| used.iter().all(|(a, b)| span.1 <= *a || span.0 >= *b);
        let row = (0..).find(|r| rows.get(*r).is_none_or(fits)).unwrap_or(0);
        if rows.len() <= row {
            rows.resize(row + 1, Vec::new());
        }
        rows[row].push(span);
        let ly = pt + 12.0 + row as f64 * 14.0;
        let kind = m.kind.as_str();
        let symbol = match m.kind {
            MarkerKind::Warning => format!(r#"<path d="M{x:.1} {:.1} l5 9 h-10 z"/>"#, y - 6.0),
            MarkerKind::Checkpoint => format!(r#"<rect x="{:.1}" y="{:.1}" width="8" height="8"/>"#, x - 4.0, y - 4.0),
            MarkerKind::Interrupt => format!(r#"<path d="M{:.1} {:.1} l8 8 m0 -8 l-8 8"/>"#, x - 4.0, y - 4.0),
            MarkerKind::Resume => format!(r#"<path d="M{x:.1} {:.1} l5 5 l-5 5 l-5 -5 z"/>"#, y - 5.0),
        };
        let _ = writeln!(
            o,
            r#"<g class="marker {kind}" data-kind="{kind}"><title>{}</title><line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{pb}"/>{symbol}<text x="{tx:.1}" y="{ly:.1}" text-anchor="{anchor}">{}</text></g>"#,
            esc(&m.title),
            ly + 3.0,
            esc(&m.label)
        );
    }
    for p in points {
        let _ = writeln!(o, r#"<circle class="pt" cx="{:.1}" cy="{:.1}" r="3.5"><title>{}</title></circle>"#, s.x(p.x), s.y(usd(p.spent)), esc(&p.title));
    }
    let _ = writeln!(o, "</svg></figure>");
}

fn call_title(c: &Call) -> String {
    format!(
        "call {} · cycle {} · {}\ncost {} · spent {}\n{} in / {} out tokens",
        c.seq,
        c.cycle,
        c.operation,
        fmt_exact(c.cost_nanos),
        fmt_exact(c.spent_nanos),
        thousands(c.input_tokens),
        thousands(c.output_tokens)
    )
}

fn marker_title(m: &super::log::Marker) -> String {
    let mut t = format!("{}: {}", m.kind.as_str(), m.label);
    if !m.detail.is_empty() {
        let _ = write!(t, "\n{}", m.detail);
    }
    let _ = write!(t, "\n{} · spent {}", m.timestamp, fmt_exact(m.spent_nanos));
    t
}

fn short_label(m: &super::log::Marker) -> String {
    match m.kind {
        MarkerKind::Warning => m.label.clone(),
        MarkerKind::Checkpoint => "ckpt".into(),
        MarkerKind::Interrupt => "stop".into(),
        MarkerKind::Resume => "resume".into(),
    }
}

pub(super) fn over_time(o: &mut String, idx: usize, r: &Run) {
    let last_t = r
        .calls
        .iter()
        .filter_map(|c| c.t)
        .chain(r.markers.iter().filter_map(|m| m.t))
        .chain(r.segments.iter().filter_map(|s| s.t))
        .fold(0.0f64, f64::max);
    let span = if last_t > 0.0 { last_t } else { 0.001 };
    // A line without a time is placed at the one before it.
    let mut prev = 0.0;
    let points: Vec<Point> = r
        .calls
        .iter()
        .map(|c| {
            prev = c.t.unwrap_or(prev);
            Point { x: prev, spent: c.spent_nanos, title: call_title(c) }
        })
        .collect();
    let marks: Vec<Mark> = r
        .markers
        .iter()
        .map(|m| Mark { kind: m.kind, x: m.t.unwrap_or(span), spent: m.spent_nanos, title: marker_title(m), label: short_label(m) })
        .collect();
    let limits: Vec<(f64, Nanos)> = r.limit_steps().iter().enumerate().map(|(i, (t, _, l))| (if i == 0 { 0.0 } else { t.unwrap_or(0.0) }, *l)).collect();
    let thresholds = r.totals().thresholds;
    spend_chart(o, &format!("time-{idx}"), "Cumulative spend over time", XAxis::Time { span }, (0.0, span), (0.0, 0), &points, &limits, &thresholds, &marks);
}

pub(super) fn over_cycles(o: &mut String, idx: usize, r: &Run, t: &Totals) {
    let first = r.segments.first().map(|s| s.resumed_cycle.unwrap_or(0)).unwrap_or(0) as f64;
    let last = r
        .calls
        .iter()
        .map(|c| c.cycle)
        .chain(r.markers.iter().filter_map(|m| m.cycle))
        .chain(t.cycles_completed)
        .max()
        .unwrap_or(0) as f64;
    // Calls of one cycle share it: the k-th of n sits at cycle - 1 + k/n, the last at the cycle.
    let mut points = Vec::new();
    let mut i = 0;
    while i < r.calls.len() {
        let c = &r.calls[i];
        let n = r.calls[i..].iter().take_while(|d| d.cycle == c.cycle && d.segment == c.segment).count();
        for k in 0..n {
            let d = &r.calls[i + k];
            let x = d.cycle as f64 - 1.0 + (k + 1) as f64 / n as f64;
            points.push(Point { x: x.max(first), spent: d.spent_nanos, title: call_title(d) });
        }
        i += n;
    }
    let marks: Vec<Mark> = r
        .markers
        .iter()
        .map(|m| Mark { kind: m.kind, x: m.cycle.map(f64::from).unwrap_or(last), spent: m.spent_nanos, title: marker_title(m), label: short_label(m) })
        .collect();
    let limits: Vec<(f64, Nanos)> = r.limit_steps().iter().enumerate().map(|(i, (_, c, l))| (if i == 0 { first } else { c.map(f64::from).unwrap_or(first) }, *l)).collect();
    let origin = (first, 0);
    spend_chart(o, &format!("cycles-{idx}"), "Cumulative spend over cycles", XAxis::Cycles, (first, last.max(first + 1.0)), origin, &points, &limits, &t.thresholds, &marks);
}

pub(super) fn operations_chart(o: &mut String, idx: usize, t: &Totals) {
    let ops: Vec<(&String, Nanos)> = t.by_operation.iter().map(|(k, v)| (k, v.cost)).collect();
    let row = 24.0;
    let label_w = 210.0;
    let value_w = 150.0;
    let h = TOP + row * ops.len().max(1) as f64 + 12.0;
    let max = ops.iter().map(|o| o.1).max().unwrap_or(0).max(1) as f64;
    let _ = writeln!(o, r#"<figure class="chart-box"><figcaption>Cost by operation</figcaption>"#);
    let _ = writeln!(o, r#"<svg class="chart" id="ops-{idx}" viewBox="0 0 {W} {h:.0}" width="{W}" height="{h:.0}" role="img" aria-label="Cost by operation">"#);
    if ops.is_empty() {
        let _ = writeln!(o, r#"<text class="empty" x="{:.0}" y="{:.0}">no calls</text>"#, W / 2.0, TOP + 10.0);
    }
    for (i, (name, cost)) in ops.iter().enumerate() {
        let y = TOP / 2.0 + i as f64 * row;
        let w = (*cost as f64 / max) * (W - label_w - value_w - 20.0);
        let shown: String = if name.chars().count() > 30 { format!("{}…", name.chars().take(29).collect::<String>()) } else { name.to_string() };
        let pct = super::percent(*cost, t.spent_nanos);
        let _ = writeln!(
            o,
            r#"<g class="bar"><title>{}: {} ({pct:.1}%)</title><text class="oplab" x="{:.1}" y="{:.1}">{}</text><rect x="{label_w}" y="{:.1}" width="{:.1}" height="{:.1}"/><text class="val" x="{:.1}" y="{:.1}">{} ({pct:.1}%)</text></g>"#,
            esc(name),
            fmt_exact(*cost),
            label_w - 8.0,
            y + row * 0.62,
            esc(&shown),
            y + 3.0,
            w.max(1.0),
            row - 6.0,
            label_w + w + 6.0,
            y + row * 0.62,
            fmt_exact(*cost)
        );
    }
    let _ = writeln!(o, "</svg></figure>");
}

pub(super) fn tokens_chart(o: &mut String, idx: usize, r: &Run) {
    let max = r.calls.iter().map(|c| c.input_tokens.saturating_add(c.output_tokens)).max().unwrap_or(0).max(1) as f64 * 1.08;
    let n = r.calls.len().max(1) as f64;
    let s = Scale { x0: 0.0, x1: n, y1: max };
    let slot = (W - LEFT - RIGHT) / n;
    let bw = (slot * 0.7).clamp(1.0, 40.0);
    let _ = writeln!(o, r#"<figure class="chart-box"><figcaption>Tokens per call</figcaption>"#);
    let _ = writeln!(o, r#"<svg class="chart" id="tokens-{idx}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="Tokens per call">"#);
    let (pl, pr, pt, pb) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let _ = writeln!(o, r#"<rect class="plot" x="{pl}" y="{pt}" width="{:.1}" height="{:.1}"/>"#, pr - pl, pb - pt);
    for v in ticks(0.0, max, 5) {
        let y = s.y(v);
        let _ = writeln!(o, r#"<line class="grid" x1="{pl}" x2="{pr}" y1="{y:.1}" y2="{y:.1}"/><text class="ylab" x="{:.1}" y="{:.1}">{}</text>"#, pl - 6.0, y + 4.0, thousands(v as u64));
    }
    let every = ((r.calls.len() as f64 / 20.0).ceil() as usize).max(1);
    for c in &r.calls {
        let cx = s.x(c.seq as f64 - 0.5);
        let x = cx - bw / 2.0;
        let fresh = c.input_tokens.saturating_sub(c.cached_tokens);
        let (y_in, y_cached, y_out) = (s.y(fresh as f64), s.y(fresh.saturating_add(c.cached_tokens) as f64), s.y(c.input_tokens.saturating_add(c.output_tokens) as f64));
        let _ = write!(o, r#"<g class="bar tok"><title>call {} · {}: {} in ({} cached) / {} out</title>"#, c.seq, esc(&c.operation), thousands(c.input_tokens), thousands(c.cached_tokens), thousands(c.output_tokens));
        let _ = write!(o, r#"<rect class="in" x="{x:.1}" y="{y_in:.1}" width="{bw:.1}" height="{:.1}"/>"#, pb - y_in);
        if c.cached_tokens > 0 {
            let _ = write!(o, r#"<rect class="cached" x="{x:.1}" y="{y_cached:.1}" width="{bw:.1}" height="{:.1}"/>"#, y_in - y_cached);
        }
        let _ = write!(o, r#"<rect class="out" x="{x:.1}" y="{y_out:.1}" width="{bw:.1}" height="{:.1}"/>"#, y_cached - y_out);
        let _ = writeln!(o, "</g>");
        if (c.seq - 1) % every == 0 {
            let _ = writeln!(o, r#"<text class="xlab" x="{cx:.1}" y="{:.1}">{}</text>"#, pb + 16.0, c.seq);
        }
    }
    let _ = writeln!(o, r#"<text class="axis-name" x="{:.1}" y="{:.1}">call</text>"#, (pl + pr) / 2.0, H - 6.0);
    let _ = writeln!(o, r#"<text class="axis-name" transform="translate(14 {:.1}) rotate(-90)">tokens</text>"#, (pt + pb) / 2.0);
    let _ = writeln!(o, "</svg>");
    let _ = writeln!(o, r#"<div class="legend"><span class="sw in"></span>input <span class="sw cached"></span>cached input <span class="sw out"></span>output</div></figure>"#);
}

