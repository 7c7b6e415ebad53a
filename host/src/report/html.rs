//! The report page: one self-contained HTML file (inline CSS, inline SVG, a
//! few lines of inline script for sorting; no external script, font or
//! image), readable offline and without JavaScript.
//!
//! Per run: the key figures; cumulative spend over time and over cycles with
//! the limit and threshold lines and markers for warnings, interrupts,
//! checkpoints and resumes; cost by operation; tokens per call; every call
//! in a table; the events; and the notes the reader raised.

use super::charts::*;
use super::log::{fmt_exact, Log, Run, Totals};
use std::fmt::Write;

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_default()
}

fn calls_table(o: &mut String, r: &Run) {
    let _ = writeln!(o, r#"<h3>Every call</h3><div class="scroll"><table class="calls"><thead><tr>"#);
    for h in ["#", "time", "cycle", "operation", "model", "input", "cached", "output", "max", "reserved", "cost", "spent", "limit", "latency", "finish", "fuel"] {
        let _ = write!(o, "<th>{h}</th>");
    }
    let _ = writeln!(o, "</tr></thead><tbody>");
    for c in &r.calls {
        let num = |v: Option<u64>| match v {
            Some(n) => format!(r#"<td class="n" data-v="{n}">{}</td>"#, thousands(n)),
            None => r#"<td class="n" data-v="-1"></td>"#.to_string(),
        };
        let money = |v: Option<u64>| match v {
            Some(n) => format!(r#"<td class="n" data-v="{n}">{}</td>"#, fmt_exact(n)),
            None => r#"<td class="n" data-v="-1"></td>"#.to_string(),
        };
        let failed = if c.kind == super::log::CallKind::Failed { r#" class="failed""# } else { "" };
        let finish = match (&c.error, &c.finish_reason) {
            (Some(e), _) => format!("failed: {e}"),
            (None, f) => opt(f),
        };
        let _ = writeln!(
            o,
            r#"<tr{failed}><td class="n" data-v="{}">{}</td><td data-v="{}">{}</td>{}<td>{}</td><td>{}</td>{}{}{}{}{}{}{}{}{}<td>{}</td>{}</tr>"#,
            c.seq,
            c.seq,
            c.t.unwrap_or(0.0),
            c.t.map(|t| format!("+{t:.3} s")).unwrap_or_default(),
            num(Some(c.cycle as u64)),
            esc(&c.operation),
            esc(&c.model),
            num(Some(c.input_tokens)),
            num(Some(c.cached_tokens)),
            num(Some(c.output_tokens)),
            num(c.max_tokens),
            money(c.reserved_nanos),
            money(Some(c.cost_nanos)),
            money(Some(c.spent_nanos)),
            money(c.limit_nanos),
            num(c.latency_ms).replace("</td>", if c.latency_ms.is_some() { " ms</td>" } else { "</td>" }),
            esc(&finish),
            num(c.fuel),
        );
    }
    let _ = writeln!(o, "</tbody></table></div>");
}

fn events_table(o: &mut String, r: &Run) {
    if r.markers.is_empty() {
        return;
    }
    let _ = writeln!(o, r#"<h3>Events</h3><table class="events"><thead><tr><th>time</th><th>cycle</th><th>event</th><th></th><th>spent</th><th>detail</th></tr></thead><tbody>"#);
    for m in &r.markers {
        let _ = writeln!(
            o,
            r#"<tr class="{k}"><td>{}</td><td class="n">{}</td><td><span class="dot {k}"></span>{k}</td><td>{}</td><td class="n">{}</td><td>{}</td></tr>"#,
            m.t.map(|t| format!("+{t:.3} s")).unwrap_or_default(),
            opt(&m.cycle),
            esc(&m.label),
            fmt_exact(m.spent_nanos),
            esc(&m.detail),
            k = m.kind.as_str()
        );
    }
    let _ = writeln!(o, "</tbody></table>");
}

fn cards(o: &mut String, r: &Run, t: &Totals) {
    let remaining = t.limit_nanos.saturating_sub(t.spent_nanos);
    let status = match (&t.status, &t.stop_source) {
        (Some(s), Some(src)) => format!("{s} ({src})"),
        (Some(s), None) => s.clone(),
        _ => "unknown".into(),
    };
    let resumes = r.segments.iter().filter(|s| s.resumed_from.is_some()).count();
    let cards = [
        ("Spent", fmt_exact(t.spent_nanos), format!("{} nano-USD", thousands(t.spent_nanos))),
        ("Limit", fmt_exact(t.limit_nanos), format!("remaining {}", fmt_exact(remaining))),
        ("Budget used", format!("{:.1}%", super::percent(t.spent_nanos, t.limit_nanos)), format!("warnings at {}", t.thresholds.iter().map(|x| format!("{:.0}%", x * 100.0)).collect::<Vec<_>>().join(", "))),
        ("Calls", t.calls.to_string(), format!("avg {} · {} refused", fmt_exact(if t.calls == 0 { 0 } else { t.spent_nanos / t.calls as u64 }), r.refused)),
        ("Tokens", thousands(t.input_tokens.saturating_add(t.output_tokens)), format!("{} in ({} cached) · {} out", thousands(t.input_tokens), thousands(t.cached_tokens), thousands(t.output_tokens))),
        ("Cycles", opt(&t.cycles_completed), format!("{status}{}", if resumes > 0 { format!(" · {resumes} resume{}", if resumes == 1 { "" } else { "s" }) } else { String::new() })),
    ];
    let _ = writeln!(o, r#"<div class="cards">"#);
    for (k, v, sub) in cards {
        let _ = writeln!(o, r#"<div class="card"><div class="k">{k}</div><div class="v">{}</div><div class="sub">{}</div></div>"#, esc(&v), esc(&sub));
    }
    let _ = writeln!(o, "</div>");
}

const CSS: &str = include_str!("page.css");

/// Sorting by column; and a mark of how many points each chart really drew
/// (their rendered boxes), which the end-to-end test reads back.
const SCRIPT: &str = include_str!("page.js");

/// The whole page.
pub fn page(log: &Log) -> String {
    let mut o = String::new();
    let title = match log.runs.as_slice() {
        [r] => format!("Cost report · {}", r.run_id),
        runs => format!("Cost report · {} runs", runs.len()),
    };
    let _ = writeln!(o, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    let _ = writeln!(o, r#"<meta name="viewport" content="width=device-width, initial-scale=1"><title>{}</title>"#, esc(&title));
    let _ = writeln!(o, "<style>{CSS}</style></head><body>");
    let _ = writeln!(o, "<h1>{}</h1>", esc(&title));
    let _ = writeln!(
        o,
        r#"<div class="meta">From <code>{}</code> · {} lines · generated {} by host {}</div>"#,
        esc(&log.path.display().to_string()),
        log.lines,
        esc(&crate::audit::timestamp()[..19]),
        env!("CARGO_PKG_VERSION")
    );
    if let Some(n) = log.skipped_note() {
        let _ = writeln!(o, r#"<ul class="notes"><li>{}</li></ul>"#, esc(n.trim_start_matches("note: ")));
    }
    if log.runs.len() > 1 {
        let _ = writeln!(o, r#"<h2>All runs</h2><table class="runs"><thead><tr><th>run</th><th>agent</th><th>status</th><th>calls</th><th>spent</th><th>limit</th><th>used</th></tr></thead><tbody>"#);
        let mut total = 0;
        for (i, r) in log.runs.iter().enumerate() {
            let t = r.totals();
            total = t.spent_nanos.saturating_add(total);
            let _ = writeln!(
                o,
                r##"<tr><td><a href="#run-{i}">{}</a></td><td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{:.1}%</td></tr>"##,
                esc(&r.run_id),
                esc(&r.agent_id),
                esc(&opt(&t.status)),
                t.calls,
                fmt_exact(t.spent_nanos),
                fmt_exact(t.limit_nanos),
                super::percent(t.spent_nanos, t.limit_nanos)
            );
        }
        let _ = writeln!(o, r#"<tr><th>total</th><th></th><th></th><th></th><th class="n">{}</th><th></th><th></th></tr></tbody></table>"#, fmt_exact(total));
    }
    for (i, r) in log.runs.iter().enumerate() {
        let t = r.totals();
        let _ = writeln!(o, r#"<section class="run" id="run-{i}">"#);
        let _ = writeln!(o, "<h2>{}</h2>", esc(&r.run_id));
        let what: Vec<String> = [Some(format!("agent {}", r.agent_id)), r.agent.clone(), match (&r.provider, &r.model) {
            (Some(p), Some(m)) => Some(format!("{p}/{m}")),
            (None, Some(m)) => Some(m.clone()),
            _ => None,
        }]
        .into_iter()
        .flatten()
        .collect();
        let _ = writeln!(o, r#"<div class="meta">{} · started {}</div>"#, esc(&what.join(" · ")), esc(&r.first_timestamp));
        cards(&mut o, r, &t);
        if !t.notes.is_empty() {
            let _ = writeln!(o, r#"<ul class="notes">"#);
            for n in &t.notes {
                let _ = writeln!(o, "<li>{}</li>", esc(n));
            }
            let _ = writeln!(o, "</ul>");
        }
        let _ = writeln!(
            o,
            r#"<div class="legend"><span class="sw spend"></span>spend (a point per call) <span class="sw limit"></span>limit <span class="sw thr"></span>warning thresholds <span class="dot warning"></span>warning <span class="dot checkpoint"></span>checkpoint <span class="dot interrupt"></span>interrupt <span class="dot resume"></span>resume</div>"#
        );
        over_time(&mut o, i, r);
        over_cycles(&mut o, i, r, &t);
        operations_chart(&mut o, i, &t);
        tokens_chart(&mut o, i, r);
        calls_table(&mut o, r);
        events_table(&mut o, r);
        let _ = writeln!(o, "</section>");
    }
    let _ = writeln!(o, "<script>{SCRIPT}</script>\n</body></html>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.0, 0.1, 5);
        assert_eq!(t.len(), 6, "{t:?}");
        assert!((t[5] - 0.1).abs() < 1e-12, "{t:?}");
        let t = ticks(0.0, 0.108, 5);
        assert_eq!(t.len(), 5, "{t:?}");
        assert!((t[1] - 0.025).abs() < 1e-12, "{t:?}");
        assert_eq!(ticks(0.0, 10.0, 10), (0..=10).map(f64::from).collect::<Vec<_>>());
        assert_eq!(ticks(1.0, 1.0, 5), vec![1.0]);
        assert_eq!(fmt_usd_tick(0.04, 0.02), "$0.04");
        assert_eq!(fmt_usd_tick(0.1, 0.1), "$0.10");
        assert_eq!(fmt_usd_tick(2.0, 1.0), "$2.00");
        assert_eq!(fmt_usd_tick(0.0025, 0.0025), "$0.0025");
    }

    #[test]
    fn seconds_read_well_at_every_span() {
        assert_eq!(fmt_secs(0.012, 0.05), "12 ms");
        assert_eq!(fmt_secs(3.0, 10.0), "3 s");
        assert_eq!(fmt_secs(2.5, 10.0), "2.5 s");
        assert_eq!(fmt_secs(150.0, 600.0), "2:30");
        assert_eq!(fmt_secs(7260.0, 9000.0), "2:01h");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc(r#"<b>"x" & 'y'</b>"#), "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;");
    }
}
