//! PNG plots for latentevo: the rounds of one latent search, diversity/fluency frontiers of
//! several methods, and per-prompt scatters.
//!
//! Plain data in, a PNG file out; nothing here depends on the other latentevo crates.
//!
//! - [`search_rounds_png`]: mean and max reward and diversity per round, next to the latents
//!   of every round projected on their first two principal components.
//! - [`frontier_png`]: lines and points per series (one per method), with optional
//!   per-point labels such as `T=0.7`.
//! - [`scatter_png`]: points only, e.g. one point per prompt per method.
//!
//! Text is drawn with an embedded copy of DejaVu Sans (through plotters' `ab_glyph` text
//! renderer), so no system font is looked up and the plots look the same on every machine.
//!
//! **Bad input.** Non-finite values (NaN, ±inf), and values beyond ±1e300 (which would
//! overflow the axis arithmetic), are skipped: a point with a non-finite
//! coordinate is not drawn (nor is its label), and a latent vector with a non-finite entry is
//! left out of the PCA and of the picture (the plot says how many were left out). Empty input
//! (no rounds, no series, no finite points) is not an error: the function writes the plot
//! with empty panels that say there is no data. Inconsistent input — latents for a different
//! number of rounds than the summaries, latent vectors of different dimensions, a label list
//! that is neither empty nor one per point — is a [`PlotError`].
//!
//! **Files.** Each PNG is encoded in memory, written to a temporary file in the target's
//! directory and renamed over the target, so a failure (for example a missing directory,
//! [`PlotError::CreateFile`]) leaves no file, partial or otherwise.
//!
//! ```no_run
//! use latentevo_plot::{frontier_png, FrontierPlot, Series};
//!
//! let plot = FrontierPlot {
//!     title: "diversity vs fluency".into(),
//!     x_label: "fluency".into(),
//!     y_label: "diversity".into(),
//!     series: vec![Series {
//!         name: "sampling".into(),
//!         points: vec![(0.9, 0.2), (0.8, 0.35), (0.6, 0.5)],
//!         labels: vec!["T=0.7".into(), "T=1.0".into(), "T=1.3".into()],
//!         connect: true,
//!     }],
//! };
//! frontier_png(std::path::Path::new("frontier.png"), &plot)?;
//! # Ok::<(), latentevo_plot::PlotError>(())
//! ```
#![warn(missing_docs)]

mod canvas;
mod draw;
mod error;
mod output;
mod pca;

use std::path::Path;

use plotters::prelude::*;

use draw::{
    axis_range, draw_legend_column, draw_legend_row, draw_note, draw_title, legend_width, place_labels,
    plottable, text, tick_label, truncate, LegendEntry, LineKind, Marker, Rect, AXIS_DESC_SIZE, CAPTION_SIZE,
    PALETTE, POINT_LABEL_SIZE, TICK_SIZE,
};
pub use error::{PlotError, Result};
use output::{render_png, DrawError, Root};
use pca::Projection;

/// Size in pixels (width, height) of every plot this crate writes.
pub const PLOT_SIZE: (u32, u32) = (900, 450);

/// Grid line colours: major lines, and the faint minor lines between them.
const BOLD_GRID: RGBColor = RGBColor(210, 210, 210);
const LIGHT_GRID: RGBColor = RGBColor(240, 240, 240);

/// Height in pixels of the title strip at the top of every plot.
const TITLE_H: u32 = 36;

/// Legend entries at most, in the PCA panel; with more rounds, evenly spaced rounds
/// (always the first and the last) are listed.
const MAX_ROUND_LEGEND: usize = 10;

/// Longest series name shown in a legend; longer names are cut with an ellipsis.
const MAX_NAME_CHARS: usize = 32;

/// Summary statistics of one round of the search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundSummary {
    /// The round's number, used for the x axis and the legend.
    pub round: usize,
    /// Mean reward of the round's population.
    pub mean_reward: f64,
    /// Best reward in the round's population.
    pub max_reward: f64,
    /// Diversity of the round's population (any scale; it gets its own axis).
    pub diversity: f64,
}

/// One named set of points.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Name shown in the legend.
    pub name: String,
    /// The points, `(x, y)`. Points with a non-finite coordinate are skipped.
    pub points: Vec<(f64, f64)>,
    /// Optional per-point labels (e.g. `"T=0.7"`, `"kl=0.05"`) drawn small next to the
    /// points: empty, or exactly one per point.
    pub labels: Vec<String>,
    /// Whether [`frontier_png`] joins the points with a line, in increasing x order.
    /// [`scatter_png`] ignores it.
    pub connect: bool,
}

/// A frontier plot: lines and points per series, e.g. diversity against fluency per method.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrontierPlot {
    /// Title above the plot.
    pub title: String,
    /// Description of the x axis.
    pub x_label: String,
    /// Description of the y axis.
    pub y_label: String,
    /// The series, each in its own colour and marker shape.
    pub series: Vec<Series>,
}

/// A scatter plot: points only, e.g. one point per prompt per method.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScatterPlot {
    /// Title above the plot.
    pub title: String,
    /// Description of the x axis.
    pub x_label: String,
    /// Description of the y axis.
    pub y_label: String,
    /// The series, each in its own colour and marker shape; `connect` is ignored.
    pub series: Vec<Series>,
}

/// Writes a PNG ([`PLOT_SIZE`]) of a search's rounds to `path`.
///
/// Left panel: mean and max reward per round (left y axis) and diversity per round (dashed,
/// right y axis). Right panel: the latents `latents[r][i]` (member `i` of round `r`) projected
/// on their first two principal components. The PCA is fitted on all rounds pooled and
/// centred; its axes say how much of the variance each component explains. Each round has
/// its own colour, from light (first) to dark (last).
///
/// `latents` is empty (no PCA panel content) or has one population per entry of `rounds`.
/// One round, one member, identical members or dimension 1 are fine: missing variance shows
/// as a component of 0. Non-finite reward or diversity values are skipped from their line;
/// members with a non-finite entry are left out of the PCA and counted in the legend. With no
/// rounds at all, both panels are drawn empty with a note.
///
/// # Errors
///
/// [`PlotError::RoundCount`] if `latents` is non-empty and its length differs from
/// `rounds.len()`; [`PlotError::LatentDimension`] if the latent vectors do not all have the
/// same length; otherwise the I/O, encoding and drawing errors of [`PlotError`].
pub fn search_rounds_png(
    path: &Path,
    rounds: &[RoundSummary],
    latents: &[Vec<Vec<f64>>],
    title: &str,
) -> Result<()> {
    if !latents.is_empty() && latents.len() != rounds.len() {
        return Err(PlotError::RoundCount {
            path: path.to_path_buf(),
            rounds: rounds.len(),
            latents: latents.len(),
        });
    }
    let mut dim = None;
    for (round, members) in latents.iter().enumerate() {
        for (member, v) in members.iter().enumerate() {
            match dim {
                None => dim = Some(v.len()),
                Some(expected) if expected != v.len() => {
                    return Err(PlotError::LatentDimension {
                        path: path.to_path_buf(),
                        round,
                        member,
                        expected,
                        found: v.len(),
                    })
                }
                Some(_) => {}
            }
        }
    }
    let projection = pca::project(latents);
    render_png(path, PLOT_SIZE, |root| {
        let (title_area, body) = root.split_vertically(TITLE_H);
        draw_title(&title_area, title)?;
        let (left, right) = body.split_horizontally(PLOT_SIZE.0 / 2);
        draw_rewards(&left, rounds)?;
        draw_latents(&right, rounds, &projection)
    })
}

/// Writes a PNG ([`PLOT_SIZE`]) of a frontier to `path`: per series, its points (one colour and
/// marker shape per series), joined by a line in increasing x order when `connect` is set,
/// with its per-point labels drawn small beside the points, and a legend on the right.
///
/// Axis ranges cover the finite points with a small margin (more on the right when there are
/// labels); an axis whose values are all equal is widened around them. Points with a
/// non-finite coordinate are skipped with their labels. With no finite point at all the plot
/// is written with an empty panel that says so.
///
/// # Errors
///
/// [`PlotError::LabelCount`] if a series' `labels` is neither empty nor one per point;
/// otherwise the I/O, encoding and drawing errors of [`PlotError`].
pub fn frontier_png(path: &Path, plot: &FrontierPlot) -> Result<()> {
    xy_png(
        path,
        &plot.title,
        &plot.x_label,
        &plot.y_label,
        &plot.series,
        true,
    )
}

/// Writes a PNG ([`PLOT_SIZE`]) of a scatter plot to `path`: the points of each series in
/// their own colour and marker shape, never joined, with a legend on the right. Labels, if a
/// series has them, are drawn as in [`frontier_png`], and so are axis ranges and the handling
/// of non-finite points and of empty input.
///
/// # Errors
///
/// As [`frontier_png`].
pub fn scatter_png(path: &Path, plot: &ScatterPlot) -> Result<()> {
    xy_png(
        path,
        &plot.title,
        &plot.x_label,
        &plot.y_label,
        &plot.series,
        false,
    )
}

/// Integer tick labels for the round axis; other ticks are left blank.
fn round_tick(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

/// Points of `values` whose value is finite, paired with their round numbers.
fn round_points(rounds: &[RoundSummary], value: fn(&RoundSummary) -> f64) -> Vec<(f64, f64)> {
    rounds
        .iter()
        .map(|r| (r.round as f64, value(r)))
        .filter(|p| plottable(p.1))
        .collect()
}

/// The left panel of [`search_rounds_png`].
fn draw_rewards(area: &Root<'_>, rounds: &[RoundSummary]) -> Result<(), DrawError> {
    const LEGEND_H: u32 = 30;
    let (_, h) = area.dim_in_pixel();
    let (chart_area, legend_area) = area.split_vertically(h.saturating_sub(LEGEND_H));

    let mean = round_points(rounds, |r| r.mean_reward);
    let max = round_points(rounds, |r| r.max_reward);
    let diversity = round_points(rounds, |r| r.diversity);
    let x_range = axis_range(rounds.iter().map(|r| r.round as f64), 0.06);
    let y_range = axis_range(mean.iter().chain(&max).map(|p| p.1), 0.08);
    let y2_range = axis_range(diversity.iter().map(|p| p.1), 0.08);
    let (mean_c, max_c, div_c) = (PALETTE[1], PALETTE[3], PALETTE[2]);

    let mut chart = ChartBuilder::on(&chart_area)
        .caption("reward and diversity per round", text(CAPTION_SIZE))
        .margin(8)
        .x_label_area_size(38)
        .y_label_area_size(58)
        .right_y_label_area_size(58)
        .build_cartesian_2d(x_range.clone(), y_range)?
        .set_secondary_coord(x_range, y2_range);
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("reward")
        .x_labels(rounds.len().clamp(2, 10))
        .x_label_formatter(&round_tick)
        .y_label_formatter(&tick_label)
        .label_style(text(TICK_SIZE))
        .axis_desc_style(text(AXIS_DESC_SIZE))
        .bold_line_style(BOLD_GRID)
        .light_line_style(LIGHT_GRID)
        .max_light_lines(4)
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("diversity")
        .y_label_formatter(&tick_label)
        .label_style(text(TICK_SIZE))
        .axis_desc_style(text(AXIS_DESC_SIZE))
        .draw()?;

    for (points, color, marker) in [(&mean, mean_c, Marker::Circle), (&max, max_c, Marker::Square)] {
        chart.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?;
        chart.draw_series(points.iter().map(|&p| marker.at(p, 4, color)))?;
    }
    chart.draw_secondary_series(DashedLineSeries::new(
        diversity.iter().copied(),
        7,
        5,
        div_c.stroke_width(2),
    ))?;
    chart.draw_secondary_series(diversity.iter().map(|&p| Marker::Diamond.at(p, 4, div_c)))?;

    if mean.is_empty() && max.is_empty() && diversity.is_empty() {
        draw_note(&chart_area, "no finite data")?;
    }
    draw_legend_row(
        &legend_area,
        &[
            LegendEntry {
                color: mean_c,
                marker: Some(Marker::Circle),
                line: LineKind::Solid,
                label: "mean reward".into(),
            },
            LegendEntry {
                color: max_c,
                marker: Some(Marker::Square),
                line: LineKind::Solid,
                label: "max reward".into(),
            },
            LegendEntry {
                color: div_c,
                marker: Some(Marker::Diamond),
                line: LineKind::Dashed,
                label: "diversity (right axis)".into(),
            },
        ],
    )
}

/// The colour of round `i` of `n`: light blue for the first, dark blue for the last.
fn round_color(i: usize, n: usize) -> RGBColor {
    const LIGHT: (f64, f64, f64) = (158.0, 202.0, 225.0);
    const DARK: (f64, f64, f64) = (8.0, 48.0, 107.0);
    let t = if n <= 1 { 1.0 } else { i as f64 / (n - 1) as f64 };
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(mix(LIGHT.0, DARK.0), mix(LIGHT.1, DARK.1), mix(LIGHT.2, DARK.2))
}

/// Which rounds the PCA legend lists: all of them, or evenly spaced ones including the first
/// and the last.
fn legend_rounds(n: usize) -> Vec<usize> {
    if n <= MAX_ROUND_LEGEND {
        return (0..n).collect();
    }
    let mut picked: Vec<usize> = (0..MAX_ROUND_LEGEND)
        .map(|k| ((k * (n - 1)) as f64 / (MAX_ROUND_LEGEND - 1) as f64).round() as usize)
        .collect();
    picked.dedup();
    picked
}

/// Axis description of principal component `k` (1 or 2).
fn pc_desc(k: usize, explained: Option<(f64, f64)>) -> String {
    match explained {
        Some((a, b)) => {
            let f = if k == 1 { a } else { b };
            format!("PC{k} ({:.0}% of variance)", 100.0 * f)
        }
        None => format!("PC{k}"),
    }
}

/// The right panel of [`search_rounds_png`].
fn draw_latents(area: &Root<'_>, rounds: &[RoundSummary], projection: &Projection) -> Result<(), DrawError> {
    let n = rounds.len();
    let entries: Vec<LegendEntry> = if projection.points.is_empty() {
        Vec::new()
    } else {
        legend_rounds(n)
            .into_iter()
            .map(|i| LegendEntry {
                color: round_color(i, n),
                marker: Some(Marker::Circle),
                line: LineKind::None,
                label: format!("round {}", rounds[i].round),
            })
            .collect()
    };
    let skipped_note = (projection.skipped > 0).then(|| {
        [
            format!("{} left out", projection.skipped),
            "(non-finite)".to_string(),
        ]
    });
    let (w, _) = area.dim_in_pixel();
    let mut legend_w = legend_width(area, &entries)?;
    if let Some(note) = &skipped_note {
        for line in note {
            legend_w = legend_w.max(draw::legend_text_width(area, line)? + 12);
        }
    }
    let legend_w = legend_w.min(w / 3);
    let (chart_area, legend_area) = area.split_horizontally(w - legend_w);

    let x_range = axis_range(projection.points.iter().map(|p| p.1), 0.06);
    let y_range = axis_range(projection.points.iter().map(|p| p.2), 0.06);
    let mut chart = ChartBuilder::on(&chart_area)
        .caption("latents, PCA of all rounds", text(CAPTION_SIZE))
        .margin(8)
        .x_label_area_size(38)
        .y_label_area_size(58)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .x_desc(pc_desc(1, projection.explained))
        .y_desc(pc_desc(2, projection.explained))
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
        .label_style(text(TICK_SIZE))
        .axis_desc_style(text(AXIS_DESC_SIZE))
        .bold_line_style(BOLD_GRID)
        .light_line_style(LIGHT_GRID)
        .max_light_lines(4)
        .draw()?;
    // Rounds in order, so the later (darker) rounds are drawn on top.
    for r in 0..n {
        let color = round_color(r, n);
        chart.draw_series(
            projection
                .points
                .iter()
                .filter(|p| p.0 == r)
                .map(|p| Marker::Circle.at((p.1, p.2), 3, color)),
        )?;
    }
    if projection.points.is_empty() {
        draw_note(&chart_area, "no finite latents")?;
    }

    let top = 34;
    draw_legend_column(&legend_area, &entries, top)?;
    if let Some(note) = skipped_note {
        let y = top + 20 * entries.len() as i32 + 10;
        for (k, line) in note.into_iter().enumerate() {
            legend_area.draw(&Text::new(
                line,
                (6, y + 16 * k as i32),
                text(POINT_LABEL_SIZE).color(&RGBColor(110, 110, 110)),
            ))?;
        }
    }
    Ok(())
}

/// The one code path of [`frontier_png`] and [`scatter_png`]; `lines` says whether series with
/// `connect` set are joined.
fn xy_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    lines: bool,
) -> Result<()> {
    for s in series {
        if !s.labels.is_empty() && s.labels.len() != s.points.len() {
            return Err(PlotError::LabelCount {
                path: path.to_path_buf(),
                series: s.name.clone(),
                labels: s.labels.len(),
                points: s.points.len(),
            });
        }
    }
    let finite = |p: &(f64, f64)| plottable(p.0) && plottable(p.1);
    let all = || series.iter().flat_map(|s| s.points.iter()).filter(|p| finite(p));
    let any_points = all().next().is_some();
    let has_labels = series.iter().any(|s| !s.labels.is_empty());
    let mut x_range = axis_range(all().map(|p| p.0), 0.05);
    if has_labels {
        // Room for the labels of the rightmost points.
        x_range.end += 0.08 * (x_range.end - x_range.start);
    }
    let y_range = axis_range(all().map(|p| p.1), 0.07);

    render_png(path, PLOT_SIZE, |root| {
        let (title_area, body) = root.split_vertically(TITLE_H);
        draw_title(&title_area, title)?;
        let entries: Vec<LegendEntry> = series
            .iter()
            .enumerate()
            .map(|(i, s)| LegendEntry {
                color: PALETTE[i % PALETTE.len()],
                marker: Some(Marker::nth(i)),
                line: if lines && s.connect {
                    LineKind::Solid
                } else {
                    LineKind::None
                },
                label: truncate(&s.name, MAX_NAME_CHARS),
            })
            .collect();
        let (w, _) = body.dim_in_pixel();
        let legend_w = if entries.is_empty() {
            0
        } else {
            legend_width(&body, &entries)?.min(w * 2 / 5)
        };
        let (chart_area, legend_area) = body.split_horizontally(w - legend_w);
        let mut chart = ChartBuilder::on(&chart_area)
            .margin(10)
            .margin_right(16)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(x_range.clone(), y_range.clone())?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&tick_label)
            .y_label_formatter(&tick_label)
            .label_style(text(TICK_SIZE))
            .axis_desc_style(text(AXIS_DESC_SIZE))
            .bold_line_style(BOLD_GRID)
            .light_line_style(LIGHT_GRID)
            .max_light_lines(4)
            .draw()?;

        let mut labels: Vec<(String, (i32, i32))> = Vec::new();
        let mut markers: Vec<Rect> = Vec::new();
        for (i, (s, entry)) in series.iter().zip(&entries).enumerate() {
            let marker = Marker::nth(i);
            let points: Vec<(usize, (f64, f64))> = s
                .points
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, p)| finite(p))
                .collect();
            if lines && s.connect {
                let mut line: Vec<(f64, f64)> = points.iter().map(|&(_, p)| p).collect();
                line.sort_by(|a, b| a.0.total_cmp(&b.0));
                chart.draw_series(LineSeries::new(line, entry.color.stroke_width(2)))?;
            }
            chart.draw_series(points.iter().map(|&(_, p)| marker.at(p, 4, entry.color)))?;
            for &(k, p) in &points {
                let (x, y) = chart.backend_coord(&p);
                markers.push((x - 5, x + 6, y - 5, y + 6));
                if let Some(label) = s.labels.get(k) {
                    labels.push((label.clone(), (x, y)));
                }
            }
        }
        if !labels.is_empty() {
            draw_point_labels(root, &chart.plotting_area().get_pixel_range(), &labels, &markers)?;
        }
        if !any_points {
            draw_note(&chart_area, "no finite data")?;
        }
        draw_legend_column(&legend_area, &entries, 12)
    })
}

/// Draws point labels (text, point in pixels) small beside their points, placed by
/// [`place_labels`] so that they avoid markers and each other and stay in the plot.
fn draw_point_labels(
    root: &Root<'_>,
    (xs, ys): &(std::ops::Range<i32>, std::ops::Range<i32>),
    labels: &[(String, (i32, i32))],
    markers: &[Rect],
) -> Result<(), DrawError> {
    let style = text(POINT_LABEL_SIZE).color(&RGBColor(60, 60, 60));
    let mut boxes = Vec::with_capacity(labels.len());
    for (label, at) in labels {
        let (w, h) = root.estimate_text_size(label, &style)?;
        boxes.push((*at, (w as i32, h as i32)));
    }
    let corners = place_labels(&boxes, markers, (xs.start, xs.end, ys.start, ys.end));
    for ((label, _), corner) in labels.iter().zip(corners) {
        root.draw(&Text::new(label.clone(), corner, style.clone()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_colours_go_from_light_to_dark() {
        let brightness = |c: RGBColor| c.0 as u32 + c.1 as u32 + c.2 as u32;
        let cs: Vec<RGBColor> = (0..5).map(|i| round_color(i, 5)).collect();
        assert!(cs.windows(2).all(|w| brightness(w[0]) > brightness(w[1])));
        assert_eq!(round_color(0, 1), round_color(4, 5));
    }

    #[test]
    fn legend_rounds_keep_first_and_last() {
        assert_eq!(legend_rounds(0), Vec::<usize>::new());
        assert_eq!(legend_rounds(3), vec![0, 1, 2]);
        let picked = legend_rounds(40);
        assert_eq!(picked.len(), MAX_ROUND_LEGEND);
        assert_eq!(picked.first(), Some(&0));
        assert_eq!(picked.last(), Some(&39));
        assert!(picked.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn round_ticks_are_integers_only() {
        assert_eq!(round_tick(&3.0), "3");
        assert_eq!(round_tick(&2.5), "");
        assert_eq!(round_tick(&-0.0), "0");
    }

    #[test]
    fn pc_descriptions() {
        assert_eq!(pc_desc(1, Some((0.63, 0.25))), "PC1 (63% of variance)");
        assert_eq!(pc_desc(2, Some((0.63, 0.25))), "PC2 (25% of variance)");
        assert_eq!(pc_desc(2, None), "PC2");
    }
}
