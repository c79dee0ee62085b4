//! Printing: tables, JSON/YAML documents, per-node results with progress and the summary line.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use serde::Serialize;
use tonic::Streaming;
use xcat3_proto::pb;

use crate::args::Format;

/// Prints rows under headers, columns padded to their widest cell (buffered: a 100,000-row
/// table is a few large writes, not a write per line).
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let _ = write_row(&mut out, headers.iter().copied(), &widths);
    for row in rows {
        let _ = write_row(&mut out, row.iter().map(String::as_str), &widths);
    }
    let _ = out.flush();
}

/// One line of a table: cells padded to their column's width, two spaces apart, no trailing
/// blanks.
fn write_row<'a>(
    out: &mut impl Write,
    cells: impl Iterator<Item = &'a str>,
    widths: &[usize],
) -> std::io::Result<()> {
    let cells: Vec<&str> = cells.collect();
    // Cells after the last non-empty one are left out, so the line has no trailing blanks.
    let end = cells
        .iter()
        .rposition(|c| !c.is_empty())
        .map_or(0, |i| i + 1);
    for (i, (cell, w)) in cells[..end].iter().zip(widths).enumerate() {
        if i > 0 {
            out.write_all(b"  ")?;
        }
        if i + 1 == end {
            out.write_all(cell.as_bytes())?;
        } else {
            write!(out, "{cell:<w$}")?;
        }
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod table_tests {
    #[test]
    fn rows_are_padded_without_trailing_blanks() {
        let mut out = Vec::new();
        super::write_row(&mut out, ["a", "bb", ""].into_iter(), &[3, 4, 2]).unwrap();
        super::write_row(&mut out, ["", "x", "y"].into_iter(), &[3, 4, 2]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a    bb\n     x     y\n");
    }
}

/// Prints `value` as JSON or YAML.
pub fn document<T: Serialize>(format: Format, value: &T) -> anyhow::Result<()> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(value)? + "\n",
        Format::Yaml | Format::Table => serde_yaml::to_string(value)?,
    };
    print!("{text}");
    Ok(())
}

/// Prints records as a table (one row each, from `row`) or as a JSON/YAML document.
pub fn records<D: Serialize>(
    format: Format,
    headers: &[&str],
    docs: &[D],
    row: impl Fn(&D) -> Vec<String>,
) -> anyhow::Result<()> {
    if format == Format::Table {
        table(headers, &docs.iter().map(row).collect::<Vec<_>>());
        Ok(())
    } else {
        document(format, &docs)
    }
}

/// The message of an error, with the gRPC code when the api refused the request.
pub fn describe_error(e: &anyhow::Error) -> String {
    if let Some(status) = e.downcast_ref::<tonic::Status>() {
        return format!("{:?}: {}", status.code(), status.message());
    }
    format!("{e:#}")
}

/// Which successes [`results`] prints (failures are always printed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowOk {
    /// Every node's result (power and boot-device states are the answer).
    All,
    /// Only when the request named at most 20 nodes.
    Few,
}

/// Per-node results in the order of the request: each carries its node's place (`index`), and
/// a result is released as soon as every place before it has one. A result whose place was
/// released already (a server that sets no places) is released at once.
#[derive(Default)]
struct InOrder {
    next: u32,
    held: BTreeMap<u32, pb::NodeResult>,
}

impl InOrder {
    fn push(&mut self, r: pb::NodeResult, ready: &mut Vec<pb::NodeResult>) {
        if r.index < self.next || self.held.contains_key(&r.index) {
            ready.push(r);
            return;
        }
        self.held.insert(r.index, r);
        while let Some(r) = self.held.remove(&self.next) {
            ready.push(r);
            self.next += 1;
        }
    }

    /// What is still held (places before it never got a result), in order.
    fn finish(self) -> impl Iterator<Item = pb::NodeResult> {
        self.held.into_values()
    }
}

/// Reads a stream of per-node results, printing failures (and successes per `show`) in the
/// order of the request as they become ready, progress on a terminal, and
/// `Success: X Total: Y`. Exit status 1 if any node failed.
pub async fn results(
    mut stream: Streaming<pb::NodeResults>,
    verb: &str,
    show: ShowOk,
) -> anyhow::Result<ExitCode> {
    let tty = std::io::stderr().is_terminal();
    let (mut total, mut done, mut ok) = (0u64, 0u64, 0u64);
    // Buffered, and flushed after each message: streaming, without a write per line.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut in_order = InOrder::default();
    let mut ready = Vec::new();
    while let Some(msg) = stream.message().await? {
        if msg.total > 0 {
            total = msg.total;
        }
        for r in msg.results {
            done += 1;
            in_order.push(r, &mut ready);
        }
        for r in ready.drain(..) {
            ok += print_result(&mut out, r, show == ShowOk::All || total <= 20) as u64;
        }
        let _ = out.flush();
        if tty && total > 100 {
            eprint!("\r{verb} {done}/{total}");
        }
    }
    for r in in_order.finish() {
        ok += print_result(&mut out, r, show == ShowOk::All || total <= 20) as u64;
    }
    if tty && total > 100 {
        eprintln!();
    }
    let _ = writeln!(out, "Success: {ok} Total: {done}");
    let _ = out.flush();
    Ok(if ok == done {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints one node's result (a success only if `show_ok`); whether it succeeded.
fn print_result(out: &mut impl Write, r: pb::NodeResult, show_ok: bool) -> bool {
    match r.outcome {
        Some(pb::node_result::Outcome::Ok(what)) => {
            if show_ok {
                let _ = writeln!(out, "{}: {what}", r.name);
            }
            true
        }
        Some(pb::node_result::Outcome::Error(e)) => {
            let field = if e.field.is_empty() {
                String::new()
            } else {
                format!("{}: ", e.field)
            };
            let _ = writeln!(out, "{}: Error: {field}{}", r.name, e.reason);
            false
        }
        None => {
            let _ = writeln!(out, "{}: Error: no result", r.name);
            false
        }
    }
}

#[cfg(test)]
mod in_order_tests {
    use super::*;

    fn result(name: &str, index: u32) -> pb::NodeResult {
        pb::NodeResult {
            name: name.into(),
            index,
            outcome: Some(pb::node_result::Outcome::Ok("on".into())),
        }
    }

    fn names(v: &[pb::NodeResult]) -> Vec<&str> {
        v.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn results_print_in_request_order_as_soon_as_they_can() {
        let mut o = InOrder::default();
        let mut ready = Vec::new();
        o.push(result("n3", 2), &mut ready);
        o.push(result("n2", 1), &mut ready);
        assert!(ready.is_empty());
        o.push(result("n1", 0), &mut ready);
        assert_eq!(names(&ready), ["n1", "n2", "n3"]);
        ready.clear();
        o.push(result("n5", 4), &mut ready);
        assert!(ready.is_empty());
        assert_eq!(names(&o.finish().collect::<Vec<_>>()), ["n5"]);
    }

    #[test]
    fn results_without_places_print_as_they_come() {
        let mut o = InOrder::default();
        let mut ready = Vec::new();
        for n in ["b", "a", "c"] {
            o.push(result(n, 0), &mut ready);
        }
        assert_eq!(names(&ready), ["b", "a", "c"]);
    }
}
