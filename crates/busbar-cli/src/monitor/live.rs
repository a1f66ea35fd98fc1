//! The live view of `busbar monitor` on a terminal: one screen, redrawn in place at each
//! report, busiest topics first, long topics shortened in the middle, and the many topics
//! that differ only by an id (reply inboxes, a client's or a goal's own topic, commlib's
//! per-call replies) folded into one row each.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Report;

/// Home, then clear to the end of the screen: the next frame replaces the last.
const REDRAW: &str = "\x1b[H\x1b[J";

/// One topic row (or several folded into one).
#[derive(Debug, Clone, PartialEq)]
struct Row {
    topic: String,
    /// How many topics the row stands for (1 unless folded).
    topics: usize,
    rate: f64,
    total: u64,
}

/// The terminal's size (columns, lines): `COLUMNS`/`LINES` when set, else what `stty`
/// says of the controlling terminal, else 80 x 24.
pub(super) fn terminal_size() -> (usize, usize) {
    let from_env = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse().ok());
    if let (Some(c), Some(l)) = (from_env("COLUMNS"), from_env("LINES")) {
        return (c, l);
    }
    let stty = std::fs::File::open("/dev/tty")
        .ok()
        .and_then(|tty| std::process::Command::new("stty").arg("size").stdin(tty).output().ok());
    let size = stty.and_then(|out| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut parts = text.split_whitespace().map(|p| p.parse::<usize>().ok());
        match (parts.next().flatten(), parts.next().flatten()) {
            (Some(lines), Some(cols)) if lines > 0 && cols > 0 => Some((cols, lines)),
            _ => None,
        }
    });
    size.unwrap_or((80, 24))
}

/// Whether a topic level is an id: 16 or more hex digits, dashes allowed (a UUID).
fn is_id(level: &str) -> bool {
    level.len() >= 16
        && level.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && level.chars().any(|c| c.is_ascii_digit())
}

/// The row a topic is counted in: its own, or its parent's `/*` when its last level is an
/// id, or follows `client`/`cancel` (an action's per-client and per-server topics).
pub(super) fn fold_key(topic: &str) -> String {
    match topic.rsplit_once('/') {
        Some((parent, last)) => {
            let by_role = parent.rsplit('/').next().is_some_and(|p| p == "client" || p == "cancel");
            if is_id(last) || by_role { format!("{parent}/*") } else { topic.to_owned() }
        }
        None if is_id(topic) => "*".to_owned(),
        None => topic.to_owned(),
    }
}

/// The report's topics folded and sorted, busiest first.
fn rows(report: &Report<'_>) -> Vec<Row> {
    let mut folded: BTreeMap<String, Row> = BTreeMap::new();
    for (topic, total) in report.totals {
        let rate = report.rates.get(topic.as_str()).copied().unwrap_or(0.0);
        let key = fold_key(topic);
        let row =
            folded.entry(key.clone()).or_insert(Row { topic: key, topics: 0, rate: 0.0, total: 0 });
        row.topics += 1;
        row.rate += rate;
        row.total += total;
    }
    let mut rows: Vec<Row> = folded.into_values().collect();
    rows.sort_by(|a, b| {
        b.rate.total_cmp(&a.rate).then(b.total.cmp(&a.total)).then(a.topic.cmp(&b.topic))
    });
    rows
}

/// `text` in at most `width` characters: the start and the end kept, `…` between.
fn shorten(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_owned();
    }
    if width < 2 {
        return "…".chars().take(width).collect();
    }
    let head = (width - 1) / 2;
    let tail = width - 1 - head;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(count - tail).collect();
    format!("{start}…{end}")
}

/// One frame of the live view for a `columns` x `lines` terminal, starting with the
/// sequence that redraws it in place.
pub(super) fn frame(report: &Report<'_>, now: &str, columns: usize, lines: usize) -> String {
    let columns = columns.max(40);
    let mut screen = Screen { out: String::from(REDRAW), used: 0, columns };
    let server =
        report.server.as_deref().map(|s| format!("  connected to {s}")).unwrap_or_default();
    screen.line(format!("busbar monitor  {now}{server}  (Ctrl-C stops)"));
    screen.line(format!("nodes ({}):", report.nodes.len()));
    for (node, state) in report.nodes {
        let via = report.servers.get(node).map(|s| format!("  via {s}")).unwrap_or_default();
        screen.line(format!("  {node:<30} {state:<20}{via}"));
    }
    let rows = rows(report);
    screen.line(format!(
        "{:<w$} {:>9} {:>9}",
        "topics, busiest first",
        "msg/s",
        "total",
        w = columns - 20
    ));
    // The lines left (the terminal's last stays free, or it would scroll); when the rows do
    // not fit, the last of them says how many more there are.
    let room = lines.saturating_sub(1).saturating_sub(screen.used).max(1);
    let shown = if rows.len() > room { room - 1 } else { rows.len() };
    let width = columns - 22;
    for row in &rows[..shown] {
        let name = if row.topics > 1 {
            format!("{} ({} topics)", row.topic, row.topics)
        } else {
            row.topic.clone()
        };
        screen.line(format!(
            "  {:<width$} {:>9.1} {:>9}",
            shorten(&name, width),
            row.rate,
            row.total
        ));
    }
    if shown < rows.len() {
        screen.line(format!("  … {} more", rows.len() - shown));
    }
    screen.out
}

/// A frame being written: its text, the lines used, the width of a line.
struct Screen {
    out: String,
    used: usize,
    columns: usize,
}

impl Screen {
    fn line(&mut self, text: String) {
        let _ = writeln!(self.out, "{}", shorten(&text, self.columns));
        self.used += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report<'a>(
        nodes: &'a BTreeMap<String, String>,
        totals: &'a BTreeMap<String, u64>,
        rates: &[(&'a str, f64)],
    ) -> Report<'a> {
        Report {
            server: Some("127.0.0.1:1883".into()),
            nodes,
            servers: BTreeMap::new(),
            rates: rates.iter().copied().collect(),
            totals,
        }
    }

    #[test]
    fn topics_are_folded_sorted_and_shortened() {
        let nodes = BTreeMap::from([("pump".to_owned(), "up".to_owned())]);
        let totals: BTreeMap<String, u64> = [
            ("plant/quiet", 5),
            ("plant/busy", 100),
            ("_busbar/inbox/0123456789abcdef0123456789abcdef", 1),
            ("_busbar/inbox/fedcba9876543210fedcba9876543210", 1),
            ("fill/client/c1", 3),
            ("fill/client/c2", 4),
            ("a/very/long/topic/name/that/goes/on/and/on/and/on/until/it/does/not/fit/at/all", 1),
        ]
        .into_iter()
        .map(|(t, n)| (t.to_owned(), n))
        .collect();
        let rates = [("plant/busy", 50.0), ("plant/quiet", 1.0), ("fill/client/c1", 2.0)];
        let r = report(&nodes, &totals, &rates);
        let text = frame(&r, "12:00:00", 60, 24);
        assert!(text.starts_with(REDRAW), "redrawn in place");
        let lines: Vec<&str> = text[REDRAW.len()..].lines().collect();
        assert!(lines[0].contains("127.0.0.1:1883"), "{text}");
        assert!(lines[2].contains("pump") && lines[2].contains("up"), "{text}");
        // Busiest first; the inboxes and the action's client topics folded.
        assert!(lines[4].trim_start().starts_with("plant/busy"), "{text}");
        assert!(lines[5].trim_start().starts_with("fill/client/* (2 topics)"), "{text}");
        assert!(lines[6].trim_start().starts_with("plant/quiet"), "{text}");
        assert!(text.contains("_busbar/inbox/* (2 topics)"), "{text}");
        assert!(lines.iter().all(|l| l.chars().count() <= 60), "{text}");
        assert!(
            lines
                .iter()
                .any(|l| l.trim_start().starts_with("a/very/long/topic/") && l.contains('…')),
            "{text}"
        );
        // A short terminal: what does not fit is counted, and the last line stays free.
        let text = frame(&r, "12:00:00", 60, 7);
        assert_eq!(text.lines().count(), 6, "{text}");
        assert!(text.contains("… 4 more"), "{text}");
    }

    #[test]
    fn ids_are_told_from_names() {
        assert_eq!(fold_key("svc/reply/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"), "svc/reply/*");
        assert_eq!(fold_key("plant/boiler/temperature"), "plant/boiler/temperature");
        assert_eq!(fold_key("fill/cancel/server-1"), "fill/cancel/*");
        // A word of hex letters alone is a name.
        assert_eq!(fold_key("x/deadbeefdeadbeefcafe"), "x/deadbeefdeadbeefcafe");
        assert_eq!(shorten("abcdefghij", 5), "ab…ij");
        assert_eq!(shorten("abc", 5), "abc");
    }
}
