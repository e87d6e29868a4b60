//! The drawing backend every plot draws on: plotters' bitmap backend, with text rasterised
//! from the embedded font by `ab_glyph` directly.
//!
//! plotters 0.3.7's own `ab_glyph` text path drops each glyph's left side bearing, so
//! characters such as `=` and `.` land a few pixels off (`T=0.7` reads as `T= 0. 7`). This
//! backend lays text out with the glyphs' positioned outlines instead; everything else is
//! delegated to [`BitMapBackend`] unchanged.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind};

/// The embedded font (DejaVu Sans, see `assets/fonts/README.md`).
pub(crate) static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// The embedded font, parsed once; `None` if it does not parse (it does: a unit test checks).
pub(crate) fn font() -> Option<&'static FontRef<'static>> {
    static PARSED: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    PARSED.get_or_init(|| FontRef::try_from_slice(FONT).ok()).as_ref()
}

/// Text laid out in one line: glyphs with their pen positions, and the line's box.
struct Layout {
    glyphs: Vec<ab_glyph::Glyph>,
    width: f32,
    height: f32,
}

/// Lays `text` out on one line at `size` pixels (the ascent-to-descent height, as plotters
/// sizes fonts), with kerning. The box's top is at y = 0, the baseline at the ascent.
fn layout(font: &FontRef<'static>, size: f64, text: &str) -> Layout {
    let scaled = font.as_scaled(PxScale::from(size as f32));
    let ascent = scaled.ascent();
    let mut caret = 0.0f32;
    let mut prev = None;
    let mut glyphs = Vec::with_capacity(text.len());
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            caret += scaled.kern(p, id);
        }
        glyphs.push(id.with_scale_and_position(scaled.scale(), ab_glyph::point(caret, ascent)));
        caret += scaled.h_advance(id);
        prev = Some(id);
    }
    Layout {
        glyphs,
        width: caret,
        height: scaled.ascent() - scaled.descent(),
    }
}

/// plotters' bitmap backend, with its own text rendering (see the module docs).
pub(crate) struct Canvas<'a> {
    inner: BitMapBackend<'a>,
}

impl<'a> Canvas<'a> {
    /// A canvas drawing into `buf`, an RGB buffer of `size.0 * size.1 * 3` bytes.
    pub(crate) fn with_buffer(buf: &'a mut [u8], size: (u32, u32)) -> Self {
        Canvas {
            inner: BitMapBackend::with_buffer(buf, size),
        }
    }
}

/// The bitmap backend's error type.
type BitmapError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

/// The error for a font that failed to parse.
#[derive(Debug)]
struct FontUnavailable;

impl std::fmt::Display for FontUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the embedded DejaVu Sans font could not be parsed")
    }
}

impl std::error::Error for FontUnavailable {}

impl DrawingBackend for Canvas<'_> {
    type ErrorType = BitmapError;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        let color = style.color();
        if color.alpha == 0.0 || text.is_empty() {
            return Ok(());
        }
        let font = font().ok_or_else(|| DrawingErrorKind::FontError(Box::new(FontUnavailable)))?;
        let line = layout(font, style.size(), text);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -line.width / 2.0,
            HPos::Right => -line.width,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0.0,
            VPos::Center => -line.height / 2.0,
            VPos::Bottom => -line.height,
        };
        let transform = style.transform();
        let mut result = Ok(());
        for glyph in line.glyphs {
            let Some(outline) = font.outline_glyph(glyph) else {
                continue; // e.g. a space
            };
            let bounds = outline.px_bounds();
            let (x0, y0) = (bounds.min.x + dx, bounds.min.y + dy);
            outline.draw(|gx, gy, coverage| {
                if result.is_err() || coverage <= 0.0 {
                    return;
                }
                let x = (x0 + gx as f32).round() as i32;
                let y = (y0 + gy as f32).round() as i32;
                let (x, y) = transform.transform(x, y);
                let pixel = BackendColor {
                    alpha: color.alpha * f64::from(coverage.min(1.0)),
                    rgb: color.rgb,
                };
                result = self.inner.draw_pixel((pos.0 + x, pos.1 + y), pixel);
            });
            if result.is_err() {
                break;
            }
        }
        result
    }

    fn estimate_text_size<TStyle: BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> Result<(u32, u32), DrawingErrorKind<BitmapError>> {
        let font = font().ok_or_else(|| DrawingErrorKind::FontError(Box::new(FontUnavailable)))?;
        let line = layout(font, style.size(), text);
        Ok((line.width.ceil() as u32, line.height.ceil() as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_font_parses_and_lays_out() {
        let font = font().expect("embedded font parses");
        let short = layout(font, 12.0, "T=0.7");
        let long = layout(font, 12.0, "T=0.7 and more");
        assert!(short.width > 15.0 && short.width < 45.0, "{}", short.width);
        assert!(long.width > short.width);
        assert!((short.height - 12.0).abs() < 0.5, "{}", short.height);
        assert_eq!(layout(font, 12.0, "").width, 0.0);
    }

    #[test]
    fn glyphs_keep_their_side_bearings() {
        // '=' has a wide left side bearing: its ink starts well after the pen position.
        let font = font().unwrap();
        let line = layout(font, 40.0, "T=");
        let eq = font.outline_glyph(line.glyphs[1].clone()).unwrap();
        assert!(eq.px_bounds().min.x > line.glyphs[1].position.x + 1.0);
    }

    #[test]
    fn text_is_drawn_at_its_anchor() {
        let (w, h) = (120u32, 40u32);
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let mut canvas = Canvas::with_buffer(&mut buf, (w, h));
            let style = TextStyle::from(("sans-serif", 20.0).into_font()).color(&BLACK);
            canvas.draw_text("Hi", &style, (10, 5)).unwrap();
            let (tw, th) = canvas.estimate_text_size("Hi", &style).unwrap();
            assert!((15..40).contains(&tw) && (18..23).contains(&th), "{tw}x{th}");
        }
        let dark = |x: u32, y: u32| buf[((y * w + x) * 3) as usize] < 128;
        let inked: Vec<(u32, u32)> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| dark(x, y))
            .collect();
        assert!(!inked.is_empty());
        // Ink lies right of and below the anchor (top-left anchoring), within the text box.
        assert!(inked
            .iter()
            .all(|&(x, y)| (10..45).contains(&x) && (5..27).contains(&y)));
    }
}
