//! The bench's charts: one run's figures drawn as SVG files with plotters.
//!
//! The bench collects what it measured into a [`ChartData`] and calls [`draw`]; nothing here
//! measures, and nothing here is a number of its own. Every chart is horizontal bars on rows
//! (long row labels stay readable on the left), with its legend in a strip below the plot
//! (never over a bar) and the machine under it. The background is painted white: an SVG
//! without one shows black text on a black page in a dark-mode viewer.
//!
//! Also compiled by `tests/bench_charts.rs`, where its tests run (`cargo test` runs no test of
//! an example).

use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// What the charts show, all from one run of the bench.
pub struct ChartData {
    /// The machine, as the bench prints it; under every chart.
    pub machine: String,
    /// Which run: its date and commit; under every chart.
    pub run: String,
    /// Requests/s and latency of each page measured with a ceiling (or without one).
    pub pages: Vec<PageFigure>,
    /// Latency of a page at 1,000 against 100,000 notes.
    pub notes: Vec<NotesPair>,
    /// `kill -9` of an instance until it is ready again, one per run.
    pub crashes: Vec<CrashTimeline>,
    /// A reload of a cluster, each instance replaced in turn.
    pub reload: Option<ReloadTimeline>,
}

/// One page under one load: "GET / · 1 instance · 1k notes".
pub struct PageFigure {
    pub label: String,
    pub rps: f64,
    /// The best run of its ceiling, measured beside it.
    pub ceiling: Option<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// p50 and p99 latency in milliseconds.
#[derive(Clone, Copy)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One page at 1,000 notes (`small`) and at 100,000 (`large`).
pub struct NotesPair {
    pub page: String,
    pub small: Latency,
    pub large: Latency,
}

/// Milliseconds from the `kill -9` of an instance.
pub struct CrashTimeline {
    /// The killed process is gone.
    pub gone_ms: f64,
    /// Its port answers `GET /healthz` 200 again (a sibling serves it meanwhile).
    pub port_answers_ms: f64,
    /// The supervisor reports a new process on that port ready.
    pub ready_ms: f64,
}

/// Milliseconds from the reload request.
pub struct ReloadTimeline {
    pub instances: Vec<ReloadStep>,
    /// The supervisor answered the request.
    pub done_ms: f64,
}

/// One instance during a reload.
pub struct ReloadStep {
    pub port: u16,
    /// First seen being replaced.
    pub began_ms: f64,
    /// First seen ready with a new process.
    pub ready_ms: f64,
}

/// The chart files, by name.
pub const PAGES: &str = "pages.svg";
pub const LATENCY: &str = "latency.svg";
pub const NOTES: &str = "notes-1k-vs-100k.svg";
pub const RECOVERY: &str = "recovery.svg";

/// Writes into `dir` each chart that `data` has figures for; returns the files written.
pub fn draw(data: &ChartData, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let footnote = format!("{} · {}", data.machine, data.run);
    let mut charts = Vec::new();
    if !data.pages.is_empty() {
        charts.push((PAGES, pages_chart(&data.pages)));
        charts.push((LATENCY, latency_chart(&data.pages)));
    }
    if !data.notes.is_empty() {
        charts.push((NOTES, notes_chart(&data.notes)));
    }
    if !data.crashes.is_empty() || data.reload.is_some() {
        charts.push((
            RECOVERY,
            recovery_chart(&data.crashes, data.reload.as_ref()),
        ));
    }
    let mut written = Vec::new();
    for (name, chart) in charts {
        let path = dir.join(name);
        render(&chart, &footnote, &path).with_context(|| format!("drawing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

// ---- the charts ------------------------------------------------------------------------------

// Okabe–Ito colours: told apart with the common colour-vision deficiencies, and dark enough
// on white.
const BLUE: RGBColor = RGBColor(0, 114, 178);
const SKY: RGBColor = RGBColor(86, 180, 233);
const ORANGE: RGBColor = RGBColor(230, 159, 0);
const VERMILLION: RGBColor = RGBColor(213, 94, 0);
const GREEN: RGBColor = RGBColor(0, 158, 115);
const PURPLE: RGBColor = RGBColor(204, 121, 167);
const GREY: RGBColor = RGBColor(170, 170, 170);
const TEXT: RGBColor = RGBColor(34, 34, 34);

fn thousands(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

fn pages_chart(pages: &[PageFigure]) -> Chart {
    let mut panel = Panel::new(
        "Requests/s of each page, beside the ceiling measured with it",
        "requests per second (ceiling: rows/s of raw inserts for POST)",
        Scale::Linear,
        2,
    );
    for (row, p) in pages.iter().enumerate() {
        panel.rows.push(p.label.clone());
        let ratio = p
            .ceiling
            .filter(|c| *c > 0.0)
            .map_or(" (no ceiling run)".into(), |c| {
                format!(" ({:.0}% of the ceiling)", (p.rps / c * 100.0).floor())
            });
        panel.bar(
            row,
            0,
            0,
            0.0,
            p.rps,
            format!("{}{ratio}", thousands(p.rps)),
        );
        if let Some(c) = p.ceiling {
            panel.bar(row, 1, 1, 0.0, c, thousands(c));
        }
    }
    Chart {
        title: "notesctl: requests per second".into(),
        panels: vec![panel],
        legend: vec![
            ("notesctl (req/s)".into(), BLUE),
            (
                "ceiling run beside it: a bare axum server with a body of the same size (GET), raw single-row SQLite inserts (POST)".into(),
                GREY,
            ),
        ],
    }
}

fn latency_chart(pages: &[PageFigure]) -> Chart {
    let mut panel = Panel::new(
        "p50 and p99 latency of each page under load",
        "latency in milliseconds (log scale)",
        Scale::Log,
        2,
    );
    for (row, p) in pages.iter().enumerate() {
        panel.rows.push(p.label.clone());
        panel.bar(row, 0, 0, 0.0, p.p50_ms, ms(p.p50_ms));
        panel.bar(row, 1, 1, 0.0, p.p99_ms, ms(p.p99_ms));
    }
    Chart {
        title: "notesctl: latency under load".into(),
        panels: vec![panel],
        legend: vec![("p50".into(), SKY), ("p99".into(), VERMILLION)],
    }
}

fn notes_chart(notes: &[NotesPair]) -> Chart {
    let mut panel = Panel::new(
        "p50 and p99 latency of each page at 1,000 and at 100,000 notes",
        "latency in milliseconds",
        Scale::Linear,
        4,
    );
    for (row, n) in notes.iter().enumerate() {
        panel.rows.push(n.page.clone());
        let bars = [
            n.small.p50_ms,
            n.large.p50_ms,
            n.small.p99_ms,
            n.large.p99_ms,
        ];
        for (slot, v) in bars.into_iter().enumerate() {
            panel.bar(row, slot, slot, 0.0, v, ms(v));
        }
    }
    Chart {
        title: "notesctl: latency at 1,000 vs 100,000 notes".into(),
        panels: vec![panel],
        legend: vec![
            ("p50 at 1,000 notes".into(), SKY),
            ("p50 at 100,000 notes".into(), BLUE),
            ("p99 at 1,000 notes".into(), ORANGE),
            ("p99 at 100,000 notes".into(), VERMILLION),
        ],
    }
}

fn recovery_chart(crashes: &[CrashTimeline], reload: Option<&ReloadTimeline>) -> Chart {
    let mut panels = Vec::new();
    if !crashes.is_empty() {
        let mut panel = Panel::new(
            "kill -9 of an instance until it is ready again (a fresh 2-instance cluster each run)",
            "milliseconds since the kill",
            Scale::Linear,
            1,
        );
        for (row, c) in crashes.iter().enumerate() {
            panel.rows.push(format!("run {}", row + 1));
            panel.bar(row, 0, 0, 0.0, c.gone_ms, String::new());
            panel.bar(row, 0, 1, c.gone_ms, c.port_answers_ms, String::new());
            panel.bar(
                row,
                0,
                2,
                c.port_answers_ms,
                c.ready_ms,
                format!("ready after {}", ms(c.ready_ms)),
            );
        }
        panels.push(panel);
    }
    if let Some(r) = reload {
        let mut panel = Panel::new(
            "reload of a 2-instance cluster: each instance replaced in turn",
            "milliseconds since the reload request",
            Scale::Linear,
            1,
        );
        for (row, i) in r.instances.iter().enumerate() {
            panel.rows.push(format!("instance on port {}", i.port));
            panel.bar(row, 0, 3, 0.0, i.began_ms, String::new());
            panel.bar(
                row,
                0,
                4,
                i.began_ms,
                i.ready_ms,
                format!("new process ready after {}", ms(i.ready_ms)),
            );
        }
        let row = r.instances.len();
        panel.rows.push("the reload command".into());
        panel.bar(
            row,
            0,
            5,
            0.0,
            r.done_ms,
            format!("answered after {}", ms(r.done_ms)),
        );
        panels.push(panel);
    }
    Chart {
        title: "notesctl: recovery and reload timelines".into(),
        panels,
        legend: vec![
            ("kill -9 until the process is gone".into(), VERMILLION),
            (
                "until its port answers GET /healthz 200 (a sibling serves it)".into(),
                ORANGE,
            ),
            (
                "until the supervisor reports a new process ready".into(),
                GREEN,
            ),
            ("waiting for its turn".into(), GREY),
            (
                "being replaced: the new process starting until it is ready".into(),
                BLUE,
            ),
            ("reload request to the supervisor's answer".into(), PURPLE),
        ],
    }
}

// ---- drawing ---------------------------------------------------------------------------------

struct Chart {
    title: String,
    panels: Vec<Panel>,
    /// Series names and colours; a bar's `series` indexes it. Only the series some bar uses
    /// are shown.
    legend: Vec<(String, RGBColor)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    Log,
}

/// One plot: rows top to bottom, each with `slots` bars side by side (a timeline has one
/// slot, its segments one after another).
struct Panel {
    caption: String,
    x_desc: String,
    scale: Scale,
    slots: usize,
    rows: Vec<String>,
    bars: Vec<Bar>,
}

struct Bar {
    row: usize,
    slot: usize,
    series: usize,
    from: f64,
    to: f64,
    /// Written after the bar's end.
    text: String,
}

impl Panel {
    fn new(caption: &str, x_desc: &str, scale: Scale, slots: usize) -> Self {
        Self {
            caption: caption.into(),
            x_desc: x_desc.into(),
            scale,
            slots,
            rows: Vec::new(),
            bars: Vec::new(),
        }
    }

    fn bar(&mut self, row: usize, slot: usize, series: usize, from: f64, to: f64, text: String) {
        self.bars.push(Bar {
            row,
            slot,
            series,
            from,
            to,
            text,
        });
    }

    fn row_height(&self) -> u32 {
        (self.slots as u32 * 13 + 12).max(30)
    }

    fn height(&self) -> u32 {
        // Caption, plot, the x axis with its labels and description.
        36 + self.rows.len() as u32 * self.row_height() + 64
    }

    /// The axis: its range and tick values, in plot units (log10 of the value on a log scale).
    fn axis(&self) -> (std::ops::Range<f64>, Vec<f64>) {
        let values = self.bars.iter().map(|b| b.to).filter(|v| v.is_finite());
        let max = values.clone().fold(0.0, f64::max);
        match self.scale {
            Scale::Linear => {
                let step = nice_step(max.max(1e-9) / 6.0);
                let ticks: Vec<f64> = (0..)
                    .map(|i| i as f64 * step)
                    .take_while(|t| *t <= max * 1.05)
                    .collect();
                // Room on the right for the text after the longest bar.
                (0.0..max.max(1e-9) * 1.45, ticks)
            }
            Scale::Log => {
                let min = values.filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
                let (lo, hi) = if min.is_finite() {
                    ((min / 1.5).log10().floor(), max.log10())
                } else {
                    (-1.0, 1.0)
                };
                let top = hi + (hi - lo).max(1.0) * 0.45;
                let ticks = (lo as i32..=hi.ceil() as i32)
                    .flat_map(|e| [1.0, 2.0, 5.0].map(|m| (m * 10f64.powi(e)).log10()))
                    .filter(|t| *t >= lo && *t <= hi + 0.01)
                    .collect();
                (lo..top, ticks)
            }
        }
    }

    fn to_plot(&self, v: f64, axis_start: f64) -> f64 {
        match self.scale {
            Scale::Linear => v,
            Scale::Log if v > 0.0 => v.log10().max(axis_start),
            Scale::Log => axis_start,
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power)
}

fn tick_label(value: f64, scale: Scale) -> String {
    let v = match scale {
        Scale::Linear => value,
        Scale::Log => 10f64.powf(value),
    };
    if v == 0.0 {
        "0".into()
    } else if v >= 1000.0 {
        format!("{}k", (v / 100.0).round() / 10.0)
    } else if v >= 1.0 {
        format!("{}", (v * 10.0).round() / 10.0)
    } else {
        format!("{}", (v * 1000.0).round() / 1000.0)
    }
}

/// A linear axis with the tick marks given: plotters' own `with_key_points` cannot be used
/// with a label formatter on f64 axes, and the rows' labels need one.
struct Axis {
    range: std::ops::Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, (from, to): (i32, i32)) -> i32 {
        let share = (value - self.range.start) / (self.range.end - self.range.start);
        from + (share * f64::from(to - from)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold lines only: no lighter ones between the ticks.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

const WIDTH: u32 = 1100;
const FONT: &str = "sans-serif";
/// About the width of a character of the legend's text, in pixels: the SVG names a font
/// family, not a font, so the viewer's font decides; this errs on the wide side.
const LEGEND_CHAR_W: u32 = 8;

/// The legend's lines: items left to right, wrapped at the width.
fn legend_lines(items: &[(String, RGBColor)]) -> Vec<Vec<(String, RGBColor)>> {
    let mut lines: Vec<Vec<(String, RGBColor)>> = vec![Vec::new()];
    let mut used = 0;
    for (name, colour) in items {
        let width = name.chars().count() as u32 * LEGEND_CHAR_W + 40;
        if used + width > WIDTH - 40 && used > 0 {
            lines.push(Vec::new());
            used = 0;
        }
        used += width;
        lines
            .last_mut()
            .expect("a line")
            .push((name.clone(), *colour));
    }
    lines
}

fn render(chart: &Chart, footnote: &str, path: &Path) -> anyhow::Result<()> {
    let used: Vec<usize> = chart
        .panels
        .iter()
        .flat_map(|p| p.bars.iter().map(|b| b.series))
        .collect();
    let legend: Vec<(String, RGBColor)> = chart
        .legend
        .iter()
        .enumerate()
        .filter(|(i, _)| used.contains(i))
        .map(|(_, l)| l.clone())
        .collect();
    let lines = legend_lines(&legend);
    let title_h = 44;
    let legend_h = 12 + lines.len() as u32 * 22;
    let foot_h = 30;
    let panels_h: u32 = chart.panels.iter().map(Panel::height).sum();
    let height = title_h + panels_h + legend_h + foot_h;

    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let body = root.titled(
        &chart.title,
        TextStyle::from((FONT, 28).into_font().style(FontStyle::Bold)).color(&TEXT),
    )?;
    let (plots, rest) = body.split_vertically(panels_h);
    let (legend_area, foot) = rest.split_vertically(legend_h);

    // One width of row labels for all panels, so that their plots line up.
    let longest = chart
        .panels
        .iter()
        .flat_map(|p| p.rows.iter().map(|r| r.chars().count()))
        .max()
        .unwrap_or(0);
    let labels_w = (longest as u32 * 8 + 20).clamp(90, 460);
    let mut area = plots;
    for panel in &chart.panels {
        let (this, below) = area.split_vertically(panel.height());
        draw_panel(&this, panel, &chart.legend, labels_w)?;
        area = below;
    }

    for (i, line) in lines.iter().enumerate() {
        let y = 10 + i as i32 * 22;
        let mut x = 40;
        for (name, colour) in line {
            legend_area.draw(&Rectangle::new(
                [(x, y + 2), (x + 16, y + 14)],
                colour.filled(),
            ))?;
            legend_area.draw(&Text::new(
                name.clone(),
                (x + 22, y),
                TextStyle::from((FONT, 17)).color(&TEXT),
            ))?;
            x += (name.chars().count() as u32 * LEGEND_CHAR_W + 40) as i32;
        }
    }
    foot.draw(&Text::new(
        footnote.to_owned(),
        (10, 8),
        TextStyle::from((FONT, 15)).color(&RGBColor(90, 90, 90)),
    ))?;
    root.present()?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Panel,
    colours: &[(String, RGBColor)],
    labels_w: u32,
) -> anyhow::Result<()> {
    let (range, ticks) = panel.axis();
    let n = panel.rows.len();
    // Row i spans [n-1-i, n-i] on the y axis, so the first row is at the top; its label sits
    // at the row's centre.
    let centres: Vec<f64> = (0..n).map(|i| (n - 1 - i) as f64 + 0.5).collect();
    let label_of = |y: &f64| -> String {
        let i = n as f64 - 1.0 - (y - 0.5);
        panel
            .rows
            .get(i.round().max(0.0) as usize)
            .cloned()
            .unwrap_or_default()
    };
    let x_label = |x: &f64| tick_label(*x, panel.scale);
    let start = range.start;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.caption, TextStyle::from((FONT, 20)).color(&TEXT))
        .margin_right(20)
        .margin_top(4)
        .x_label_area_size(48)
        .y_label_area_size(labels_w)
        .build_cartesian_2d(
            Axis { range, ticks },
            Axis {
                range: 0.0..n as f64,
                ticks: centres,
            },
        )?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(&panel.x_desc)
        .x_label_formatter(&x_label)
        .y_label_formatter(&label_of)
        .label_style(TextStyle::from((FONT, 16)).color(&TEXT))
        .axis_desc_style(TextStyle::from((FONT, 17)).color(&TEXT))
        .bold_line_style(RGBColor(225, 225, 225))
        .axis_style(RGBColor(120, 120, 120))
        .draw()?;

    let slot_h = 0.8 / panel.slots as f64;
    let geometry = |b: &Bar| {
        let top = (n - b.row) as f64 - 0.1 - b.slot as f64 * slot_h;
        let (x0, x1) = (panel.to_plot(b.from, start), panel.to_plot(b.to, start));
        (x0, x1, top, top - slot_h)
    };
    chart.draw_series(panel.bars.iter().map(|b| {
        let (x0, x1, top, bottom) = geometry(b);
        let colour = colours.get(b.series).map_or(GREY, |c| c.1);
        Rectangle::new(
            [(x0, top - slot_h * 0.08), (x1, bottom + slot_h * 0.08)],
            colour.filled(),
        )
    }))?;
    let text = TextStyle::from((FONT, 15))
        .color(&TEXT)
        .pos(Pos::new(HPos::Left, VPos::Center));
    chart.draw_series(panel.bars.iter().filter(|b| !b.text.is_empty()).map(|b| {
        let (_, x1, top, bottom) = geometry(b);
        EmptyElement::at((x1, (top + bottom) / 2.0))
            + Text::new(b.text.clone(), (5, 0), text.clone())
    }))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChartData {
        let page = |label: &str, rps: f64, ceiling: Option<f64>| PageFigure {
            label: label.into(),
            rps,
            ceiling,
            p50_ms: 32.0 / rps * 1000.0,
            p99_ms: 32.0 / rps * 2500.0,
        };
        let latency = |p50_ms: f64| Latency {
            p50_ms,
            p99_ms: p50_ms * 2.2,
        };
        ChartData {
            machine: "2 CPUs (nproc), Sample CPU, 1.0 GiB RAM, Linux 0.0".into(),
            run: "sample run".into(),
            pages: vec![
                page("GET / · 1 instance · 1k notes", 30_000.0, Some(50_000.0)),
                page(
                    "GET /notes/view · 2 instances · 100k notes",
                    25_000.0,
                    Some(52_000.0),
                ),
                page(
                    "POST /notes/save · 2 instances · 100k notes",
                    6_000.0,
                    Some(13_000.0),
                ),
                page(
                    "GET / · 2 instances · 1k notes · PostgreSQL",
                    20_000.0,
                    None,
                ),
            ],
            notes: vec![
                NotesPair {
                    page: "GET / · 1 instance".into(),
                    small: latency(1.0),
                    large: latency(1.2),
                },
                NotesPair {
                    page: "GET /?after=21 · 1 instance".into(),
                    small: latency(0.9),
                    large: latency(0.95),
                },
            ],
            crashes: vec![
                CrashTimeline {
                    gone_ms: 0.3,
                    port_answers_ms: 1.3,
                    ready_ms: 14.8,
                },
                CrashTimeline {
                    gone_ms: 0.2,
                    port_answers_ms: 1.1,
                    ready_ms: 16.0,
                },
            ],
            reload: Some(ReloadTimeline {
                instances: vec![
                    ReloadStep {
                        port: 8001,
                        began_ms: 2.0,
                        ready_ms: 40.0,
                    },
                    ReloadStep {
                        port: 8002,
                        began_ms: 60.0,
                        ready_ms: 95.0,
                    },
                ],
                done_ms: 120.0,
            }),
        }
    }

    /// Well-formed XML, as far as these files go: one root element, every tag closed in order,
    /// attribute values quoted, `&` only in entities. (No XML parser is among the
    /// dependencies; this reads what plotters writes.)
    fn check_well_formed(svg: &str) -> Result<(), String> {
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open])?;
            let after = &rest[open + 1..];
            let close = after.find('>').ok_or("a tag is never closed")?;
            let tag = &after[..close];
            rest = &after[close + 1..];
            if tag.starts_with('?') || tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
                if top != name.trim() {
                    return Err(format!("</{name}> closes <{top}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag.split_whitespace().next().ok_or("an empty tag")?;
            check_attributes(&tag[name.len()..])?;
            if stack.is_empty() {
                roots += 1;
                if name != "svg" {
                    return Err(format!("the root element is <{name}>"));
                }
            }
            if !self_closing {
                stack.push(name);
            }
        }
        check_text(rest)?;
        match (roots, stack.last()) {
            (1, None) => Ok(()),
            (_, Some(open)) => Err(format!("<{open}> is never closed")),
            (n, None) => Err(format!("{n} root elements")),
        }
    }

    fn check_text(text: &str) -> Result<(), String> {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            let end = entity.find(';').ok_or(format!("a bare & in {text:?}"))?;
            let name = &entity[1..end];
            let known =
                ["lt", "gt", "amp", "quot", "apos"].contains(&name) || name.starts_with('#');
            if !known {
                return Err(format!("unknown entity &{name};"));
            }
        }
        Ok(())
    }

    fn check_attributes(mut attrs: &str) -> Result<(), String> {
        loop {
            attrs = attrs.trim_start();
            if attrs.is_empty() {
                return Ok(());
            }
            let eq = attrs
                .find('=')
                .ok_or(format!("an attribute without a value: {attrs}"))?;
            let value = attrs[eq + 1..]
                .strip_prefix('"')
                .ok_or(format!("an unquoted attribute: {attrs}"))?;
            let end = value
                .find('"')
                .ok_or("an attribute value is never closed")?;
            check_text(&value[..end])?;
            attrs = &value[end + 1..];
        }
    }

    #[test]
    fn every_chart_is_drawn_from_sample_data() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample();
        let written = draw(&data, dir.path()).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, [PAGES, LATENCY, NOTES, RECOVERY]);
        let expect: [(&str, &[&str]); 4] = [
            (
                PAGES,
                &[
                    "notesctl: requests per second",
                    "requests per second",
                    "notesctl (req/s)",
                    "ceiling run beside it",
                    "GET / · 1 instance · 1k notes",
                    "30.0k (60% of the ceiling)",
                    "GET / · 2 instances · 1k notes · PostgreSQL",
                    "20.0k (no ceiling run)",
                ],
            ),
            (
                LATENCY,
                &[
                    "notesctl: latency under load",
                    "latency in milliseconds",
                    ">\np50\n<",
                    ">\np99\n<",
                ],
            ),
            (
                NOTES,
                &[
                    "notesctl: latency at 1,000 vs 100,000 notes",
                    "p50 at 1,000 notes",
                    "p99 at 100,000 notes",
                    "GET /?after=21 · 1 instance",
                ],
            ),
            (
                RECOVERY,
                &[
                    "notesctl: recovery and reload timelines",
                    "milliseconds since the kill",
                    "milliseconds since the reload request",
                    "kill -9 until the process is gone",
                    "until the supervisor reports a new process ready",
                    "instance on port 8002",
                    "answered after 120 ms",
                    "run 2",
                ],
            ),
        ];
        for (name, needles) in expect {
            let svg = std::fs::read_to_string(dir.path().join(name)).unwrap();
            if let Err(e) = check_well_formed(&svg) {
                panic!("{name} is not well-formed XML: {e}");
            }
            assert!(
                svg.contains("<rect x=\"0\" y=\"0\""),
                "{name}: no background"
            );
            assert!(
                svg.contains("fill=\"#FFFFFF\""),
                "{name}: the background is not white"
            );
            assert!(svg.contains("Sample CPU"), "{name}: no machine under it");
            for needle in needles {
                assert!(svg.contains(needle), "{name} lacks {needle:?}");
            }
        }
    }

    #[test]
    fn a_partial_run_draws_only_what_it_measured() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = sample();
        data.pages.clear();
        data.crashes.clear();
        data.reload = None;
        let written = draw(&data, dir.path()).unwrap();
        assert_eq!(written, [dir.path().join(NOTES)]);
    }

    #[test]
    fn the_checker_refuses_broken_xml() {
        assert!(check_well_formed("<svg><g></svg>").is_err());
        assert!(check_well_formed("<svg>a & b</svg>").is_err());
        assert!(check_well_formed("<svg a=b></svg>").is_err());
        assert!(check_well_formed("<svg></svg><svg></svg>").is_err());
        assert!(check_well_formed("<svg x=\"1\"><rect/>&amp;</svg>").is_ok());
    }
}
