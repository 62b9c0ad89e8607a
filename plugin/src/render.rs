//! The views as text (pure): `status` draws the nodes with the services whose schemas each
//! holds (sizes as bars to one scale, load, pins and isolation marked), the job with a progress
//! bar, and the conditions that are not as they should be, fitted to the terminal's width.

use crate::style::{bar, Style, Tone};
use crate::view::{ClusterView, JobView, NodeView, ServiceView};

/// Bars are at most this wide, and at least `MIN_BAR` where they are drawn.
const MAX_BAR: usize = 24;
const MIN_BAR: usize = 8;

fn human_size(bytes: Option<i64>) -> String {
    bytes
        .map(tessera::units::human_size)
        .unwrap_or_else(|| "-".to_string())
}

fn shards(count: i64) -> String {
    match count {
        1 => "1 shard".to_string(),
        n => format!("{n} shards"),
    }
}

/// "1m20s", "2h03m", "45s".
pub fn duration(seconds: i64) -> String {
    match seconds {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

fn state_tone(state: &str) -> Tone {
    match state {
        "Active" => Tone::Good,
        "Joining" | "Pending" | "Draining" | "Leaving" => Tone::Busy,
        _ => Tone::Bad,
    }
}

/// `text` cut to `width` characters, with an ellipsis where cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn pad(text: &str, width: usize) -> String {
    format!("{text:<width$}")
}

pub fn status(view: &ClusterView, style: &Style) -> String {
    let mut out = Vec::new();
    let versions = match (&view.citus_version, &view.postgres_version) {
        (Some(citus), Some(pg)) => format!("Citus {citus}, PostgreSQL {pg}"),
        (None, Some(pg)) => format!("PostgreSQL {pg} (no Citus)"),
        _ => "not reached yet".to_string(),
    };
    let ready_tone = if view.ready.starts_with("True") {
        Tone::Good
    } else {
        Tone::Bad
    };
    out.push(format!(
        "{}  Ready {}",
        style.paint(Tone::Strong, &format!("{}/{}", view.namespace, view.name)),
        style.paint(ready_tone, &fit(&view.ready, style.width.saturating_sub(9))),
    ));
    out.push(fit(
        &format!(
            "workers {}  {}  {versions}",
            view.workers,
            shards(view.shards)
        ),
        style.width,
    ));
    out.push(String::new());
    let every_service = view
        .nodes
        .iter()
        .flat_map(|n| n.services.iter())
        .chain(view.elsewhere.iter());
    let largest = every_service
        .clone()
        .filter_map(|s| s.size_bytes)
        .max()
        .unwrap_or(0);
    let name_width = every_service
        .map(|s| s.microservice.chars().count())
        .chain(
            view.nodes
                .iter()
                .map(|n| n.name.chars().count().saturating_sub(2)),
        )
        .max()
        .unwrap_or(0);
    // Room for a node's state, shards and size, or a service's size and marks.
    let name_width = name_width.min(style.width.saturating_sub(36)).max(8);
    let node_width = name_width + 2;
    // name, bar, size (10), load (18), marks (30)
    let bar_width = style
        .width
        .saturating_sub(2 + name_width + 2 + 10 + 2 + 18 + 2 + 30)
        .min(MAX_BAR);
    let bars = (!style.is_narrow() && bar_width >= MIN_BAR).then_some(bar_width);
    let services = |list: &[ServiceView], out: &mut Vec<String>| {
        for service in list {
            out.push(service_line(service, name_width, largest, bars, style));
        }
    };
    for node in &view.nodes {
        out.push(node_line(node, node_width, style));
        services(&node.services, &mut out);
        if node.services.is_empty() {
            out.push(format!(
                "  {}",
                style.paint(Tone::Faint, "(no service's schema)")
            ));
        }
    }
    if !view.elsewhere.is_empty() {
        out.push(style.paint(
            Tone::Faint,
            "on no node listed (not distributed or not created yet):",
        ));
        services(&view.elsewhere, &mut out);
    }
    if let Some(job) = &view.job {
        out.push(String::new());
        out.extend(job_lines(job, style));
    }
    if !view.problems.is_empty() {
        out.push(String::new());
        out.push(style.paint(Tone::Bad, "not as it should be:"));
        for problem in &view.problems {
            out.push(format!("  {}", fit(problem, style.width.saturating_sub(2))));
        }
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

fn node_line(node: &NodeView, width: usize, style: &Style) -> String {
    let role = match (node.coordinator, style.is_narrow()) {
        (_, true) => String::new(),
        (true, false) => format!("{}  ", pad("coordinator", 11)),
        (false, false) => format!("{}  ", pad("worker", 11)),
    };
    let mut line = format!(
        "{}  {role}{}  {}",
        style.paint(Tone::Strong, &pad(&fit(&node.name, width), width)),
        style.paint(state_tone(&node.state), &pad(&node.state, 8)),
        shards(node.shards)
    );
    if node.size_bytes.is_some() {
        line.push_str(&format!("  {}", human_size(node.size_bytes)));
    }
    line
}

fn service_line(
    service: &ServiceView,
    width: usize,
    largest: i64,
    bar_width: Option<usize>,
    style: &Style,
) -> String {
    let mut line = format!("  {}", pad(&fit(&service.microservice, width), width));
    if let Some(cells) = bar_width {
        let fraction = match (service.size_bytes, largest) {
            (Some(size), largest) if largest > 0 => size as f64 / largest as f64,
            _ => 0.0,
        };
        line.push_str(&format!(
            "  {}",
            style.paint(Tone::Good, &bar(fraction, cells))
        ));
    }
    line.push_str(&format!("  {:>10}", human_size(service.size_bytes)));
    if !style.is_narrow() {
        line.push_str(&format!("  {:<18}", service.load.as_deref().unwrap_or("")));
    }
    let mut marks = Vec::new();
    if let Some(worker) = &service.pinned {
        marks.push(format!("pin: {worker}"));
    }
    if service.isolated {
        marks.push("isolated".to_string());
    }
    if let Some(state) = service.placement.as_deref().filter(|s| *s != "Placed") {
        marks.push(state.to_string());
    }
    if !marks.is_empty() {
        let tone = if service.placement.as_deref().is_none_or(|s| s == "Placed") {
            Tone::Strong
        } else {
            Tone::Busy
        };
        // What is left of the width after the name, the bar, the size and the load.
        let used = 2
            + width
            + bar_width.map(|cells| cells + 2).unwrap_or(0)
            + 12
            + if style.is_narrow() { 0 } else { 20 };
        let room = style.width.saturating_sub(used + 2);
        line.push_str(&format!(
            "  {}",
            style.paint(tone, &fit(&marks.join(", "), room))
        ));
    }
    line.trim_end().to_string()
}

/// The job as `rebalance --watch` follows it: the progress line, its trigger, Citus's message.
pub fn job(job: &JobView, style: &Style) -> String {
    job_lines(job, style).join("\n") + "\n"
}

/// What a rebalance or drain would move, as `rebalance --plan` shows it.
pub fn plan(plan: &tessera::crd::cituscluster::MovePlan, style: &Style) -> String {
    let mut lines = vec![fit(
        &format!(
            "plan {}: {} shard moves, {} ({}, strategy {})",
            plan.kind, plan.shard_moves, plan.size, plan.reason, plan.strategy
        ),
        style.width,
    )];
    if plan.moves.is_empty() {
        lines.push(format!(
            "  {}",
            style.paint(Tone::Faint, "nothing would move")
        ));
    }
    let schema_width = plan
        .moves
        .iter()
        .map(|m| m.schema.chars().count())
        .max()
        .unwrap_or(0)
        .min(style.width / 4);
    for planned in &plan.moves {
        let shards = if planned.shards == 1 {
            String::new()
        } else {
            format!(" ({} shards)", planned.shards)
        };
        lines.push(fit(
            &format!(
                "  {}  {:>9}  {} → {}{shards}",
                pad(&fit(&planned.schema, schema_width), schema_width),
                planned.size,
                tessera::cituscluster::naming::short_node(&planned.from),
                tessera::cituscluster::naming::short_node(&planned.to),
            ),
            style.width,
        ));
    }
    lines.join("\n") + "\n"
}

fn job_lines(job: &JobView, style: &Style) -> Vec<String> {
    let tone = match job.state.as_str() {
        "finished" | "NotNeeded" => Tone::Good,
        "failed" | "failing" | "cancelled" => Tone::Bad,
        _ => Tone::Busy,
    };
    let cells = if style.is_narrow() { 10 } else { 20 };
    let fraction = if job.moves_total > 0 {
        job.moves_done as f64 / job.moves_total as f64
    } else {
        0.0
    };
    let mut line = format!(
        "{} {}  [{}] {}/{} moves",
        style.paint(Tone::Strong, &job.kind),
        style.paint(tone, &job.state),
        bar(fraction, cells),
        job.moves_done,
        job.moves_total
    );
    if let Some(seconds) = job.elapsed_seconds {
        line.push_str(&format!("  {}", duration(seconds)));
    }
    let mut lines = vec![line];
    if !job.trigger.is_empty() {
        lines.push(format!(
            "  {}",
            fit(&job.trigger, style.width.saturating_sub(2))
        ));
    }
    if let Some(message) = &job.message {
        lines.push(format!(
            "  {}",
            style.paint(
                Tone::Bad,
                &fit(&format!("Citus: {message}"), style.width.saturating_sub(2))
            )
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(80), "1m20s");
        assert_eq!(duration(7_380), "2h03m");
    }

    #[test]
    fn long_lines_are_cut_with_an_ellipsis() {
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
    }
}
