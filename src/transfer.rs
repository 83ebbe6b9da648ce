//! `notes import` and `notes export`: notes as JSON lines, streamed, so 100,000 notes take
//! seconds and little memory. Import commits in batches; a bad line is reported with its line
//! number and skipped, and every good line is kept.
//!
//! A note's authors travel with it: `created_by` and `updated_by` are exported when known
//! and kept by import. A note moved with its version and times keeps exactly the authors its
//! line names, none included (unknown where it came from, so unknown here: crediting the
//! importer would rewrite its history). A new note is created by the line's `created_by`,
//! else by whoever imports it; its one version is by its `updated_by`, else its creator.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::store::{NewNote, Note, NoteStamp, Store, StoreError, UserName};
use crate::timefmt;

/// Notes per write transaction: large enough to amortise the commit, small enough that other
/// writers (instances serving requests) wait only milliseconds.
const BATCH: usize = 1000;

/// One line of an import file, as `export` writes it. `version`, `created_at` and `updated_at`
/// are kept when all three are given (a note moved from another store); a line without them
/// is a new note (version 1, made now).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: Option<String>,
    title: String,
    body: String,
    version: Option<i64>,
    created_at: Option<String>,
    updated_at: Option<String>,
    created_by: Option<String>,
    updated_by: Option<String>,
}

/// One line of an export: a note as `Line` reads it back. Its authors are left out when
/// unknown, so that a file of notes without any reads as it did before authors were kept.
#[derive(Serialize)]
struct ExportLine<'a> {
    key: &'a str,
    title: &'a str,
    body: &'a str,
    version: i64,
    #[serde(serialize_with = "timefmt::serialize_millis")]
    created_at: i64,
    #[serde(serialize_with = "timefmt::serialize_millis")]
    updated_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_by: Option<&'a str>,
}

impl<'a> From<&'a Note> for ExportLine<'a> {
    fn from(note: &'a Note) -> Self {
        Self {
            key: &note.key,
            title: &note.title,
            body: &note.body,
            version: note.version,
            created_at: note.created_at,
            updated_at: note.updated_at,
            created_by: note.created_by.as_deref(),
            updated_by: note.updated_by.as_deref(),
        }
    }
}

impl Line {
    fn stamp(&self) -> Result<Option<NoteStamp>, String> {
        let time = |name: &str, text: &str| {
            timefmt::parse_rfc3339(text).ok_or_else(|| {
                format!("{name} must be a UTC time like 2026-11-28T01:13:29.123Z, not {text:?}")
            })
        };
        match (&self.version, &self.created_at, &self.updated_at) {
            (None, None, None) => Ok(None),
            (Some(version), Some(created), Some(updated)) => NoteStamp::new(
                *version,
                time("created_at", created)?,
                time("updated_at", updated)?,
            )
            .map(Some),
            _ => Err("give version, created_at and updated_at together, or none of them".into()),
        }
    }

    /// The note's creator and last author (see the module's header). Each name a line gives
    /// must be a valid user name.
    fn authors(
        &self,
        stamped: bool,
        importer: Option<&str>,
    ) -> Result<(Option<String>, Option<String>), String> {
        let checked = |name: &Option<String>| -> Result<Option<String>, String> {
            match name {
                Some(name) => UserName::parse(name)
                    .map(|n| Some(n.as_str().to_owned()))
                    .map_err(|e| e.to_string()),
                None => Ok(None),
            }
        };
        let (created_by, updated_by) = (checked(&self.created_by)?, checked(&self.updated_by)?);
        if stamped {
            return Ok((created_by, updated_by));
        }
        let created_by = created_by.or_else(|| importer.map(str::to_owned));
        let updated_by = updated_by.or_else(|| created_by.clone());
        Ok((created_by, updated_by))
    }
}

/// What an import did (`notes import --json` prints it).
#[derive(serde::Serialize)]
pub struct ImportSummary {
    pub imported: u64,
    pub skipped: u64,
    /// How long it took, in seconds.
    pub seconds: f64,
}

/// Imports `source` (a path, or "-" for standard input); `author` is recorded for the new
/// notes that name none.
pub async fn import(
    store: &Store,
    source: &str,
    author: Option<&str>,
) -> anyhow::Result<ImportSummary> {
    let started = Instant::now();
    let (reader, size): (Box<dyn Read>, Option<u64>) = if source == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let file = File::open(source).with_context(|| format!("cannot open {source}"))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let progress = progress_bar(size, "importing");
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let mut summary = ImportSummary {
        imported: 0,
        skipped: 0,
        seconds: 0.0,
    };
    let mut batch: Vec<(u64, NewNote)> = Vec::with_capacity(BATCH);
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("reading {source} after line {number}"))?;
        if read == 0 {
            break;
        }
        number += 1;
        progress.inc(read as u64);
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match parse_line(text, author) {
            Ok(note) => batch.push((number, note)),
            Err(reason) => {
                summary.skipped += 1;
                progress.suspend(|| eprintln!("{source}: line {number}: {reason}"));
            }
        }
        if batch.len() == BATCH {
            flush(store, &mut batch, &mut summary, source, &progress).await?;
        }
    }
    flush(store, &mut batch, &mut summary, source, &progress).await?;
    progress.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "imported {} notes from {source} in {:.1} s{}",
        summary.imported,
        summary.seconds,
        if summary.skipped > 0 {
            format!("; {} line(s) skipped (see above)", summary.skipped)
        } else {
            String::new()
        }
    );
    Ok(summary)
}

fn parse_line(text: &str, author: Option<&str>) -> Result<NewNote, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| {
        // serde_json reports a position within the line; the line number is ours.
        let message = e.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message);
        if e.is_data() {
            message.to_owned()
        } else {
            format!("not valid JSON ({message})")
        }
    })?;
    let mut note =
        NewNote::parse(line.key.as_deref(), &line.title, &line.body).map_err(|e| e.to_string())?;
    note.stamp = line.stamp()?;
    (note.created_by, note.updated_by) = line.authors(note.stamp.is_some(), author)?;
    Ok(note)
}

async fn flush(
    store: &Store,
    batch: &mut Vec<(u64, NewNote)>,
    summary: &mut ImportSummary,
    source: &str,
    progress: &ProgressBar,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let (numbers, notes): (Vec<u64>, Vec<NewNote>) = batch.drain(..).unzip();
    let results = store.create_many(notes).await?;
    for (number, result) in numbers.into_iter().zip(results) {
        match result {
            Ok(_) => summary.imported += 1,
            Err(e) => {
                summary.skipped += 1;
                progress.suspend(|| eprintln!("{source}: line {number}: {e}"));
            }
        }
    }
    Ok(())
}

/// Writes every note, oldest first, as JSON lines to `target` (a path, or "-").
pub async fn export(store: &Store, target: &str) -> anyhow::Result<u64> {
    let out: Box<dyn Write> = if target == "-" {
        Box::new(io::stdout().lock())
    } else {
        if Path::new(target).exists() {
            anyhow::bail!("{target} exists; choose another file or remove it first");
        }
        Box::new(File::create(target).with_context(|| format!("cannot create {target}"))?)
    };
    let mut out = BufWriter::with_capacity(256 * 1024, out);
    let progress = progress_bar(None, "exporting");
    let mut io_error = None;
    let written = store
        .for_each_note(&mut |note| {
            let result = serde_json::to_writer(&mut out, &ExportLine::from(&note))
                .map_err(io::Error::from)
                .and_then(|()| out.write_all(b"\n"));
            progress.inc(1);
            result.map_err(|e| {
                io_error = Some(e);
                // Stops the iteration; the real error is `io_error`.
                StoreError::NotFound(String::new())
            })
        })
        .await;
    if let Some(e) = io_error {
        return Err(e.into());
    }
    let written = written?;
    out.flush()?;
    progress.finish_and_clear();
    if target != "-" {
        eprintln!("exported {written} notes to {target}");
    }
    Ok(written)
}

/// A progress bar on standard error when it is a terminal; hidden otherwise.
fn progress_bar(bytes: Option<u64>, what: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match bytes {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {pos} notes ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    }
    .with_message(what.to_owned())
}
