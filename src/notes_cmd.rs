//! `notesctl notes ...`: the same notes from the command line, through the same store API the
//! web app uses. Output meant for scripts (a key, JSON) goes to standard output; messages go to
//! standard error; `--json` puts what a command did on standard output as JSON instead. A
//! missing note is a message and its own exit code (`exit::NOT_FOUND`).

use std::io::{self, Read, Write};
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::NotesCommand;
use crate::store::{
    ListPosition, ListQuery, NewNote, Note, NoteContent, NoteUpdate, NoteWrite, Store,
};
use crate::timefmt;

pub async fn run(store: &Store, command: NotesCommand) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match command {
        NotesCommand::Add {
            title,
            body,
            key,
            json,
            author,
        } => {
            let body = read_body_arg(body)?;
            let note = NewNote::parse(key.as_deref(), &title, &body)?
                .with_author(crate::author::resolve(author));
            let created = store.write(NoteWrite::Create(note)).await?;
            if json {
                write_json(&mut out, &created)?;
            } else {
                writeln!(out, "{}", created.key)?;
            }
        }
        NotesCommand::List { json, limit } => {
            let page = store
                .list(ListQuery {
                    limit,
                    position: ListPosition::Page(1),
                })
                .await?;
            if json {
                write_json(&mut out, &page.notes)?;
            } else {
                write_table(&mut out, &page.notes)?;
                let shown = page.notes.len() as u64;
                if shown < page.total {
                    eprintln!(
                        "(showing {shown} of {} notes; use --limit N for more)",
                        page.total
                    );
                }
            }
        }
        NotesCommand::Show { key, json } => {
            let note = store.get(&key).await?;
            if json {
                write_json(&mut out, &note)?;
            } else {
                write_note(&mut out, &note)?;
            }
        }
        NotesCommand::Edit {
            key,
            title,
            body,
            json,
            author,
        } => {
            let current = store.get(&key).await?;
            let title = title.unwrap_or_else(|| current.title.clone());
            let body = match body {
                Some(b) => read_body_arg(b)?,
                None => current.body.clone(),
            };
            let update = NoteUpdate {
                content: NoteContent::new(&title, &body)?,
                // Detects an edit made elsewhere between our read and our write.
                expected_version: Some(current.version),
                author: crate::author::resolve(author),
            };
            let updated = store.write(NoteWrite::Update(key, update)).await?;
            if json {
                write_json(&mut out, &updated)?;
            } else {
                eprintln!("updated {:?} (version {})", updated.key, updated.version);
            }
        }
        NotesCommand::Rm { key, json } => {
            let deleted = store.write(NoteWrite::Delete(key)).await?;
            if json {
                write_json(&mut out, &deleted)?;
            } else {
                eprintln!("deleted {:?} ({})", deleted.key, deleted.title);
            }
        }
        NotesCommand::Import { file, json, author } => {
            drop(out);
            let author = crate::author::resolve(author);
            let summary = crate::transfer::import(store, &file, author.as_deref()).await?;
            if json {
                let mut out = io::stdout().lock();
                write_json(&mut out, &summary)?;
                out.flush()?;
            }
            // The good lines are saved either way; the exit code tells scripts some were not.
            return Ok(if summary.skipped > 0 {
                ExitCode::from(crate::exit::DATA_ERROR)
            } else {
                ExitCode::SUCCESS
            });
        }
        NotesCommand::Export { file } => {
            drop(out);
            crate::transfer::export(store, &file).await?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `value` as indented JSON and a line break: what `--json` prints.
fn write_json(out: &mut impl Write, value: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A body argument of "-" means: read standard input.
fn read_body_arg(body: String) -> anyhow::Result<String> {
    if body != "-" {
        return Ok(body);
    }
    let mut text = String::new();
    io::stdin()
        .read_to_string(&mut text)
        .context("reading the body from standard input")?;
    Ok(text)
}

fn write_table(out: &mut impl Write, notes: &[Note]) -> io::Result<()> {
    if notes.is_empty() {
        eprintln!("no notes yet; add one with: notesctl notes add \"title\" \"body\"");
        return Ok(());
    }
    let key_width = notes
        .iter()
        .map(|n| display_width(&n.key, 40))
        .max()
        .unwrap_or(3)
        .max(3);
    writeln!(
        out,
        "{:<key_width$}  {:<20}  {:>3}  TITLE",
        "KEY", "UPDATED", "VER"
    )?;
    for n in notes {
        writeln!(
            out,
            "{:<key_width$}  {:<20}  {:>3}  {}",
            truncate(&n.key, 40),
            timefmt::human(n.updated_at),
            n.version,
            truncate(&n.title, 60)
        )?;
    }
    Ok(())
}

fn write_note(out: &mut impl Write, n: &Note) -> io::Result<()> {
    writeln!(out, "{}", n.title)?;
    writeln!(
        out,
        "key: {}  version: {}  created: {}  updated: {}",
        n.key,
        n.version,
        timefmt::human(n.created_at),
        timefmt::human(n.updated_at)
    )?;
    // Only when known: notes written before authors were recorded have none.
    match (&n.created_by, &n.updated_by) {
        (None, None) => {}
        (created, updated) => writeln!(
            out,
            "created by: {}  updated by: {}",
            created.as_deref().unwrap_or("(unknown)"),
            updated.as_deref().unwrap_or("(unknown)")
        )?,
    }
    writeln!(out)?;
    writeln!(out, "{}", terminal_safe(&n.body))
}

/// The body as text for a terminal: control characters other than line breaks and tabs (an
/// escape sequence could rewrite the screen) are shown as `\u{..}`. `--json` prints it as is.
fn terminal_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn display_width(s: &str, max: usize) -> usize {
    s.chars().count().min(max)
}

/// At most `max` characters, ending in "…" when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_sequences_do_not_reach_the_terminal() {
        assert_eq!(super::terminal_safe("a\x1b[2Jb\n\tc"), "a\\u{1b}[2Jb\n\tc");
    }
}
