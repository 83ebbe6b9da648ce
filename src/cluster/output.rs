//! The cluster's log stream: every instance's output line-prefixed and coloured by instance
//! (`3001 | ...`), and the supervisor's own events (`cluster | ...`) in the same stream, on
//! standard output. While start-up spinners are on screen, lines are printed above them.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::MultiProgress;

const COLORS: [&str; 6] = ["36", "33", "35", "32", "34", "31"];

pub struct Output {
    color: bool,
    progress: Mutex<Option<MultiProgress>>,
}

impl Output {
    pub fn new() -> Self {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self {
            color,
            progress: Mutex::new(None),
        }
    }

    /// Spinners are shown only when both streams are a terminal; otherwise plain lines.
    pub fn wants_spinners(&self) -> bool {
        std::io::stderr().is_terminal() && std::io::stdout().is_terminal()
    }

    pub fn set_progress(&self, progress: Option<MultiProgress>) {
        *self.progress.lock().unwrap_or_else(|p| p.into_inner()) = progress;
    }

    /// Lines of an instance's own output, written together.
    pub fn instance_lines(&self, port: u16, index: usize, lines: &[&str]) {
        let color = COLORS[index % COLORS.len()];
        self.emit_all(&format!("{port:<7}"), color, lines);
    }

    /// A supervisor event.
    pub fn event(&self, text: &str) {
        self.emit("cluster", "1", text);
    }

    fn emit(&self, label: &str, color: &str, text: &str) {
        self.emit_all(label, color, &[text]);
    }

    fn emit_all(&self, label: &str, color: &str, lines: &[&str]) {
        let mut block = String::new();
        for text in lines {
            if self.color {
                block.push_str(&format!("\x1b[{color}m{label} |\x1b[0m {text}\n"));
            } else {
                block.push_str(&format!("{label} | {text}\n"));
            }
        }
        let progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mp) = progress.as_ref()
            && mp.println(block.trim_end()).is_ok()
        {
            return;
        }
        // A closed stdout must not stop the supervisor: the instances keep serving.
        let _ = std::io::stdout().lock().write_all(block.as_bytes());
    }
}

impl Default for Output {
    fn default() -> Self {
        Self::new()
    }
}

/// "85 ms", "5.2 s", "3m 4s", "2h 5m": a duration for people.
pub fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m {}s", ms / 60_000, ms / 1000 % 60)
    } else {
        format!("{}h {}m", ms / 3_600_000, ms / 60_000 % 60)
    }
}
