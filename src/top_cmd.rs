//! `notesctl top`: the running cluster's figures (`cluster::top`), asked of the supervisor
//! once a second. On a terminal the view is redrawn in place in raw mode (q or Ctrl-C quits),
//! and the terminal is given back as it was on any exit, an error or a panic included;
//! otherwise each refresh is printed as a block of plain lines. `--json` prints one report.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use crossterm::{cursor, execute, terminal};

use crate::cluster::client::request_top;
use crate::cluster::top::format;

const REFRESH: Duration = Duration::from_secs(1);

pub fn run(socket: &Path, json: bool) -> anyhow::Result<ExitCode> {
    // The first answer says whether a cluster runs at all, before the screen is touched.
    let first = request_top(socket)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&first)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !std::io::stdout().is_terminal() {
        let mut report = first;
        loop {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{}",
                crate::timefmt::rfc3339(crate::timefmt::now_millis())
            )?;
            write!(out, "{}", format(&report))?;
            writeln!(out)?;
            out.flush()?;
            drop(out);
            std::thread::sleep(REFRESH);
            report = request_top(socket)?;
        }
    }
    let _screen = Screen::enter()?;
    let mut report = first;
    loop {
        draw(&format(&report))?;
        let next = Instant::now() + REFRESH;
        while let Some(wait) = next.checked_duration_since(Instant::now()) {
            if event::poll(wait)? && quits(&event::read()?) {
                return Ok(ExitCode::SUCCESS);
            }
        }
        report = request_top(socket)?;
    }
}

fn quits(event: &Event) -> bool {
    matches!(
        event,
        Event::Key(KeyEvent {
            code: KeyCode::Char('q'),
            ..
        }) | Event::Key(KeyEvent {
            code: KeyCode::Esc,
            ..
        })
    ) || matches!(
        event,
        Event::Key(KeyEvent { code: KeyCode::Char('c'), modifiers, .. })
            if modifiers.contains(KeyModifiers::CONTROL)
    )
}

fn draw(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    execute!(
        out,
        cursor::MoveTo(0, 0),
        terminal::Clear(terminal::ClearType::All)
    )?;
    // Raw mode does not turn "\n" into a carriage return and a line feed.
    write!(out, "notesctl top  (q quits)\r\n\r\n")?;
    for line in text.lines() {
        write!(out, "{line}\r\n")?;
    }
    out.flush()
}

/// Raw mode and the alternate screen while alive; dropping it (or a panic) restores both.
struct Screen;

impl Screen {
    fn enter() -> std::io::Result<Self> {
        terminal::enable_raw_mode()?;
        let screen = Screen;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )?;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        Ok(screen)
    }
}

fn restore() {
    let _ = execute!(
        std::io::stdout(),
        cursor::Show,
        terminal::LeaveAlternateScreen
    );
    let _ = terminal::disable_raw_mode();
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}
