//! Drawing helpers shared by the plots: colours, markers, axis ranges, legends.

use std::ops::Range;

use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendCoord, DrawingErrorKind};

use crate::output::{DrawError, FAMILY};

/// Ten distinguishable colours (the "tableau 10" palette).
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Font sizes, in pixels.
pub(crate) const TITLE_SIZE: f64 = 20.0;
pub(crate) const CAPTION_SIZE: f64 = 15.0;
pub(crate) const AXIS_DESC_SIZE: f64 = 14.0;
pub(crate) const TICK_SIZE: f64 = 12.0;
pub(crate) const LEGEND_SIZE: f64 = 13.0;
pub(crate) const POINT_LABEL_SIZE: f64 = 11.0;

/// A text style in the embedded font.
pub(crate) fn text(size: f64) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

/// Marker shapes, cycled through by series so that series differ without colour too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Marker {
    Circle,
    Square,
    Triangle,
    Diamond,
    Cross,
}

impl Marker {
    const ALL: [Marker; 5] = [
        Marker::Circle,
        Marker::Square,
        Marker::Triangle,
        Marker::Diamond,
        Marker::Cross,
    ];

    /// The marker of series `i`; with the colour `PALETTE[i % 10]` the pair repeats only
    /// after 50 series.
    pub(crate) fn nth(i: usize) -> Marker {
        Marker::ALL[(i + i / PALETTE.len()) % Marker::ALL.len()]
    }

    /// The marker drawn at `at`, about `size` pixels in radius.
    pub(crate) fn at<C>(self, at: C, size: i32, color: RGBColor) -> MarkerAt<C> {
        MarkerAt {
            at,
            kind: self,
            size,
            color,
        }
    }
}

/// A marker at one point: an element plotters can draw on a chart or a plain drawing area.
#[derive(Debug, Clone)]
pub(crate) struct MarkerAt<C> {
    at: C,
    kind: Marker,
    size: i32,
    color: RGBColor,
}

impl<'a, C: 'a> PointCollection<'a, C> for &'a MarkerAt<C> {
    type Point = &'a C;
    type IntoIter = std::iter::Once<&'a C>;
    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

impl<C, DB: DrawingBackend> Drawable<DB> for MarkerAt<C> {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut pos: I,
        backend: &mut DB,
        _parent_dim: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((x, y)) = pos.next() else {
            return Ok(());
        };
        let fill = self.color.filled();
        let s = self.size;
        match self.kind {
            Marker::Circle => backend.draw_circle((x, y), s.max(1) as u32, &fill, true),
            Marker::Square => {
                let s = (s - 1).max(1);
                backend.draw_rect((x - s, y - s), (x + s, y + s), &fill, true)
            }
            Marker::Triangle => {
                let s = s + 1;
                backend.fill_polygon(
                    [(x, y - s), (x + s, y + s * 3 / 4), (x - s, y + s * 3 / 4)],
                    &fill,
                )
            }
            Marker::Diamond => {
                let s = s + 1;
                backend.fill_polygon([(x, y - s), (x + s, y), (x, y + s), (x - s, y)], &fill)
            }
            Marker::Cross => {
                let stroke = self.color.stroke_width(2);
                backend.draw_path([(x - s, y - s), (x + s, y + s)], &stroke)?;
                backend.draw_path([(x - s, y + s), (x + s, y - s)], &stroke)
            }
        }
    }
}

/// Largest magnitude drawn: beyond it a value counts as non-finite (plotters' axis logic
/// overflows on spans near `f64::MAX`).
pub(crate) const MAX_MAGNITUDE: f64 = 1e300;

/// Whether `v` can be plotted: finite and at most [`MAX_MAGNITUDE`] in magnitude.
pub(crate) fn plottable(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_MAGNITUDE
}

/// The axis range covering the [`plottable`] `values` with a margin of `margin` (a fraction of the
/// span) on each side. No finite values gives `0..1`; a degenerate span (all values equal)
/// is widened to +-10% of the value (+-1 around 0).
pub(crate) fn axis_range(values: impl IntoIterator<Item = f64>, margin: f64) -> Range<f64> {
    let (lo, hi) = values
        .into_iter()
        .filter(|&v| plottable(v))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return 0.0..1.0;
    }
    let span = hi - lo;
    let magnitude = lo.abs().max(hi.abs());
    if span <= 1e-12 * magnitude || span == 0.0 {
        let centre = lo / 2.0 + hi / 2.0;
        let half = if magnitude == 0.0 { 1.0 } else { 0.1 * magnitude };
        return (centre - half)..(centre + half);
    }
    // Halve first so that spans near f64::MAX do not overflow.
    let pad = (hi / 2.0 - lo / 2.0) * 2.0 * margin;
    let (a, b) = (lo - pad, hi + pad);
    if a.is_finite() && b.is_finite() {
        a..b
    } else {
        lo..hi
    }
}

/// A tick-label formatter that prints short numbers: up to 4 significant digits, scientific
/// notation for very large or very small magnitudes, and no `-0`.
pub(crate) fn tick_label(v: &f64) -> String {
    let v = *v;
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// How a legend entry shows its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    None,
    Solid,
    Dashed,
}

/// One legend entry.
#[derive(Debug, Clone)]
pub(crate) struct LegendEntry {
    pub color: RGBColor,
    pub marker: Option<Marker>,
    pub line: LineKind,
    pub label: String,
}

/// Width in pixels of the sample (line and marker) before a legend label.
const SAMPLE_W: i32 = 28;
/// Height in pixels of one legend row.
const ROW_H: i32 = 20;

/// Width in pixels `text` takes in the legend font.
pub(crate) fn legend_text_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    label: &str,
) -> Result<u32, DrawError> {
    let (w, _) = area.estimate_text_size(label, &text(LEGEND_SIZE))?;
    Ok(w)
}

/// The width a vertical legend with these labels needs.
pub(crate) fn legend_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[LegendEntry],
) -> Result<u32, DrawError> {
    let mut widest = 0;
    for e in entries {
        widest = widest.max(legend_text_width(area, &e.label)?);
    }
    Ok(widest + SAMPLE_W as u32 + 20)
}

/// Draws `entries` one per row from the top of `area`, starting `top` pixels down.
pub(crate) fn draw_legend_column<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[LegendEntry],
    top: i32,
) -> Result<(), DrawError> {
    for (i, e) in entries.iter().enumerate() {
        draw_entry(area, e, (4, top + i as i32 * ROW_H))?;
    }
    Ok(())
}

/// Draws `entries` side by side, centred horizontally in `area`, vertically centred.
pub(crate) fn draw_legend_row<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[LegendEntry],
) -> Result<(), DrawError> {
    const GAP: i32 = 22;
    let mut widths = Vec::with_capacity(entries.len());
    for e in entries {
        widths.push(SAMPLE_W + 6 + legend_text_width(area, &e.label)? as i32);
    }
    let total: i32 = widths.iter().sum::<i32>() + GAP * (entries.len() as i32 - 1).max(0);
    let (w, h) = area.dim_in_pixel();
    let mut x = ((w as i32 - total) / 2).max(0);
    let y = (h as i32 - ROW_H) / 2;
    for (e, width) in entries.iter().zip(widths) {
        draw_entry(area, e, (x, y))?;
        x += width + GAP;
    }
    Ok(())
}

/// Draws one legend entry with its top-left corner at `(x, y)`.
fn draw_entry<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    e: &LegendEntry,
    (x, y): (i32, i32),
) -> Result<(), DrawError> {
    let mid = y + ROW_H / 2;
    let style = e.color.stroke_width(2);
    match e.line {
        LineKind::None => {}
        LineKind::Solid => {
            area.draw(&PathElement::new(vec![(x, mid), (x + SAMPLE_W, mid)], style))?;
        }
        LineKind::Dashed => {
            for k in 0..3 {
                let x0 = x + k * 10;
                area.draw(&PathElement::new(vec![(x0, mid), (x0 + 6, mid)], style))?;
            }
        }
    }
    if let Some(m) = e.marker {
        area.draw(&m.at((x + SAMPLE_W / 2, mid), 4, e.color))?;
    }
    let label_style = text(LEGEND_SIZE).pos(Pos::new(HPos::Left, VPos::Center));
    area.draw(&Text::new(e.label.clone(), (x + SAMPLE_W + 6, mid), label_style))?;
    Ok(())
}

/// Writes `note` (e.g. "no finite data") in the middle of `area`, in grey.
pub(crate) fn draw_note<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    note: &str,
) -> Result<(), DrawError> {
    let (w, h) = area.dim_in_pixel();
    let style = text(CAPTION_SIZE)
        .color(&RGBColor(110, 110, 110))
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(note.to_string(), (w as i32 / 2, h as i32 / 2), style))?;
    Ok(())
}

/// Draws `title` centred in `area`.
pub(crate) fn draw_title<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
) -> Result<(), DrawError> {
    let (w, h) = area.dim_in_pixel();
    let style = text(TITLE_SIZE).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(title.to_string(), (w as i32 / 2, h as i32 / 2), style))?;
    Ok(())
}

/// Shortens `s` to at most `max` characters, ending in an ellipsis when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_range_margins_and_degenerate_cases() {
        let r = axis_range([0.0, 10.0, f64::NAN, f64::INFINITY], 0.05);
        assert_eq!(r, -0.5..10.5);
        assert_eq!(axis_range([], 0.05), 0.0..1.0);
        assert_eq!(axis_range([f64::NAN], 0.05), 0.0..1.0);
        assert_eq!(axis_range([0.0, 0.0], 0.05), -1.0..1.0);
        let r = axis_range([5.0], 0.05);
        assert!((r.start - 4.5).abs() < 1e-12 && (r.end - 5.5).abs() < 1e-12);
        let r = axis_range([-1e300, 1e300], 0.05);
        assert!(r.start.is_finite() && r.end.is_finite() && r.start < r.end);
        assert!((r.end - r.start).is_finite());
        assert_eq!(axis_range([-1e308, 1e308], 0.05), 0.0..1.0);
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(&0.0), "0");
        assert_eq!(tick_label(&-0.0), "0");
        assert_eq!(tick_label(&0.30000000000000004), "0.3");
        assert_eq!(tick_label(&2.0), "2");
        assert_eq!(tick_label(&-1.25), "-1.25");
        assert_eq!(tick_label(&1234.5678), "1235");
        assert_eq!(tick_label(&0.012346), "0.01235");
        assert_eq!(tick_label(&1.5e7), "1.50e7");
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdefgh", 5), "abcd…");
    }

    #[test]
    fn markers_cycle_without_repeating_colour_pairs() {
        let pairs: std::collections::HashSet<(usize, Marker)> =
            (0..50).map(|i| (i % PALETTE.len(), Marker::nth(i))).collect();
        assert_eq!(pairs.len(), 50);
    }
}

/// A pixel rectangle `[x0, x1) x [y0, y1)`.
pub(crate) type Rect = (i32, i32, i32, i32);

/// A label to place: its point and its size `(w, h)`, both in pixels.
pub(crate) type LabelBox = ((i32, i32), (i32, i32));

/// The area two rectangles share, in square pixels.
fn overlap(a: Rect, b: Rect) -> i64 {
    let w = (a.1.min(b.1) - a.0.max(b.0)).max(0) as i64;
    let h = (a.3.min(b.3) - a.2.max(b.2)).max(0) as i64;
    w * h
}

/// Chooses where to put each point label: to the upper right, lower right, upper left or
/// lower left of its point (`(x, y)` in pixels, label `(w, h)` in pixels), taking the first
/// place that stays inside `bounds` and overlaps neither `obstacles` (markers) nor the labels
/// placed before it; when none is free, the place with the least overlap. Returns each
/// label's top-left corner.
pub(crate) fn place_labels(labels: &[LabelBox], obstacles: &[Rect], bounds: Rect) -> Vec<(i32, i32)> {
    const GAP: i32 = 5;
    let mut placed: Vec<Rect> = Vec::with_capacity(labels.len());
    let mut corners = Vec::with_capacity(labels.len());
    for &((x, y), (w, h)) in labels {
        let candidates = [
            (x + GAP, y - GAP - h),
            (x + GAP, y + GAP),
            (x - GAP - w, y - GAP - h),
            (x - GAP - w, y + GAP),
        ];
        let cost = |&(cx, cy): &(i32, i32)| -> i64 {
            let r = (cx, cx + w, cy, cy + h);
            let outside = w as i64 * h as i64 - overlap(r, bounds);
            let hits: i64 = obstacles.iter().chain(&placed).map(|&o| overlap(r, o)).sum();
            // Leaving the plot is worse than covering another label.
            4 * outside + hits
        };
        let best = candidates
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|(i, c)| (cost(c), *i))
            .map_or((x + GAP, y - GAP - h), |(_, c)| c);
        placed.push((best.0, best.0 + w, best.1, best.1 + h));
        corners.push(best);
    }
    corners
}

#[cfg(test)]
mod placement_tests {
    use super::*;

    #[test]
    fn labels_prefer_upper_right_and_avoid_each_other() {
        let bounds = (0, 200, 0, 200);
        // A lone label goes to the upper right.
        assert_eq!(
            place_labels(&[((100, 100), (30, 10))], &[], bounds),
            vec![(105, 85)]
        );
        // Two labels for nearly the same point do not overlap.
        let c = place_labels(&[((100, 100), (30, 10)), ((102, 100), (30, 10))], &[], bounds);
        let r = |(x, y): (i32, i32)| (x, x + 30, y, y + 10);
        assert_eq!(overlap(r(c[0]), r(c[1])), 0);
        // A point at the right edge gets its label on the left, inside the plot.
        let c = place_labels(&[((195, 100), (30, 10))], &[], bounds);
        assert!(c[0].0 >= 0 && c[0].0 + 30 <= 200, "{c:?}");
        // A marker in the upper right pushes the label elsewhere.
        let c = place_labels(&[((100, 100), (30, 10))], &[(104, 140, 80, 96)], bounds);
        assert_ne!(c[0], (105, 85));
    }
}
