//! Printing: tables, JSON/YAML documents, per-node results with progress and the summary line.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use serde::Serialize;
use tonic::Streaming;
use xcat3_proto::pb;

use crate::args::Format;

/// Prints rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        text.join("  ").trim_end().to_owned()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line(headers.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
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

/// Reads a stream of per-node results, printing failures (and successes per `show`), progress on
/// a terminal, and `Success: X Total: Y`. Exit status 1 if any node failed.
pub async fn results(
    mut stream: Streaming<pb::NodeResults>,
    verb: &str,
    show: ShowOk,
) -> anyhow::Result<ExitCode> {
    let tty = std::io::stderr().is_terminal();
    let (mut total, mut done, mut ok) = (0u64, 0u64, 0u64);
    let mut out = std::io::stdout().lock();
    while let Some(msg) = stream.message().await? {
        if msg.total > 0 {
            total = msg.total;
        }
        for r in msg.results {
            done += 1;
            match r.outcome {
                Some(pb::node_result::Outcome::Ok(what)) => {
                    ok += 1;
                    if show == ShowOk::All || total <= 20 {
                        let _ = writeln!(out, "{}: {what}", r.name);
                    }
                }
                Some(pb::node_result::Outcome::Error(e)) => {
                    let field = if e.field.is_empty() {
                        String::new()
                    } else {
                        format!("{}: ", e.field)
                    };
                    let _ = writeln!(out, "{}: Error: {field}{}", r.name, e.reason);
                }
                None => {
                    let _ = writeln!(out, "{}: Error: no result", r.name);
                }
            }
        }
        if tty && total > 100 {
            eprint!("\r{verb} {done}/{total}");
        }
    }
    if tty && total > 100 {
        eprintln!();
    }
    let _ = writeln!(out, "Success: {ok} Total: {done}");
    Ok(if ok == done {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
