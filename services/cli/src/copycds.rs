//! `xcat3-copycds [create] [-n NAME] ISO`: checks the ISO's SHA-256 locally, asks the image
//! service whether it has it, and if not streams it in 1 MiB chunks with a progress line; the
//! service recognises, extracts and records it as an osimage.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Parser;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use xcat3_proto::pb;

use crate::args::ConnArgs;
use crate::client::Connection;

const CHUNK: usize = 1 << 20;

#[derive(Parser, Debug)]
#[command(
    name = "xcat3-copycds",
    version,
    about = "Import an OS installation ISO as an osimage"
)]
pub struct CopycdsArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The osimage name [default: <distro><version>-<arch>-install-compute].
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// The ISO is readable by the image service at this same path: do not upload it.
    #[arg(long)]
    pub server_path: bool,
    /// `create` (the prototype's sub-command, optional), then the ISO file.
    #[arg(value_name = "[create] ISO", required = true, num_args = 1..=2)]
    pub args: Vec<String>,
}

/// A progress line on standard error: redrawn in place on a terminal, every 10 % otherwise.
struct ProgressLine {
    tty: bool,
    last_decile: u64,
    started: Instant,
    stage: &'static str,
}

impl ProgressLine {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last_decile: u64::MAX,
            started: Instant::now(),
            stage: "",
        }
    }

    fn show(&mut self, stage: &'static str, done: u64, total: u64) {
        if stage != self.stage {
            self.stage = stage;
            self.last_decile = u64::MAX;
            self.started = Instant::now();
        }
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        let mib = done as f64 / (1 << 20) as f64;
        let rate = mib / self.started.elapsed().as_secs_f64().max(0.001);
        let bar: String = (0..30)
            .map(|i| if i * 100 / 30 < pct { '#' } else { ' ' })
            .collect();
        let line = format!(
            "{stage:<10} [{bar}] {pct:>3}% {mib:>8.1} of {:.1} MiB {rate:>7.1} MiB/s",
            total as f64 / (1 << 20) as f64
        );
        if self.tty {
            eprint!("\r{line}");
            if done >= total {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        } else if pct / 10 != self.last_decile {
            self.last_decile = pct / 10;
            eprintln!("{line}");
        }
    }
}

fn sha256_of(path: &std::path::Path, progress: &mut ProgressLine) -> anyhow::Result<(String, u64)> {
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let total = file.metadata()?.len();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        progress.show("checksum", done, total);
    }
    if total == 0 {
        bail!("{} is empty", path.display());
    }
    Ok((xcat3_types::hex(&hasher.finalize()), total))
}

pub fn main() -> ExitCode {
    let args = CopycdsArgs::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xcat3-copycds: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", crate::output::describe_error(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: CopycdsArgs) -> anyhow::Result<ExitCode> {
    let iso = match args.args.as_slice() {
        [iso] | [_, iso] => PathBuf::from(iso),
        _ => bail!("give the ISO file"),
    };
    if args.args.len() == 2 && args.args[0] != "create" {
        bail!(
            "unknown sub-command {:?}; use: xcat3-copycds [create] [-n NAME] ISO",
            args.args[0]
        );
    }
    let conn = Connection::from_args(&args.conn)?;
    let mut progress = ProgressLine::new();
    let file_name = iso
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut header = pb::ImportHeader {
        file_name,
        name: args.name.clone().unwrap_or_default(),
        ..Default::default()
    };
    if args.server_path {
        let path = std::path::absolute(&iso).with_context(|| format!("{}", iso.display()))?;
        header.server_path = path.to_string_lossy().into_owned();
    } else {
        let path = iso.clone();
        let (sha, size, line) = tokio::task::spawn_blocking(move || {
            let mut line = ProgressLine::new();
            sha256_of(&path, &mut line).map(|(sha, size)| (sha, size, line))
        })
        .await??;
        progress = line;
        header.sha256 = sha;
        header.size = size;
    }
    let (tx, rx) = mpsc::channel::<pb::ImportIsoRequest>(4);
    tx.send(pb::ImportIsoRequest {
        part: Some(pb::import_iso_request::Part::Header(header)),
    })
    .await?;
    let mut client = conn.images().await?;
    let mut events = client
        .import_iso(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut tx = Some(tx);
    let mut uploader = None;
    use pb::import_iso_progress::Event;
    while let Some(msg) = events.message().await? {
        match msg.event {
            Some(Event::Upload(_)) => {
                let Some(tx) = tx.take() else { continue };
                let iso = iso.clone();
                uploader = Some(tokio::task::spawn_blocking(
                    move || -> anyhow::Result<()> {
                        let mut file = std::fs::File::open(&iso)?;
                        loop {
                            let mut buf = vec![0u8; CHUNK];
                            let n = file.read(&mut buf)?;
                            if n == 0 {
                                return Ok(());
                            }
                            buf.truncate(n);
                            let chunk = pb::ImportIsoRequest {
                                part: Some(pb::import_iso_request::Part::Chunk(buf)),
                            };
                            if tx.blocking_send(chunk).is_err() {
                                return Ok(()); // the service ended the call; its status says why
                            }
                        }
                    },
                ));
            }
            Some(Event::Received(b)) => {
                let stage = if args.server_path {
                    "reading"
                } else {
                    "uploading"
                };
                progress.show(stage, b.done, b.total)
            }
            Some(Event::Extracted(b)) => progress.show("extracting", b.done, b.total),
            Some(Event::Done(done)) => {
                if done.already_imported {
                    println!("Already imported: {}", done.detected);
                } else {
                    println!("Imported: {}", done.detected);
                }
                for image in done.osimages {
                    println!(
                        "osimage {} ({} {} {}, {})",
                        image.name, image.distro, image.version, image.arch, image.install_method
                    );
                }
                drop(tx);
                if let Some(u) = uploader {
                    u.await??;
                }
                return Ok(ExitCode::SUCCESS);
            }
            None => {}
        }
    }
    bail!("the image service ended the import without a result")
}
