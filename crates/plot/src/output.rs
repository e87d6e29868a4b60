//! Rendering into an in-memory RGB buffer and writing it as a PNG, atomically.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::canvas::{Canvas, FONT};
use crate::error::{PlotError, Result};

/// The family name the embedded font is registered under; plotters' default family.
pub(crate) const FAMILY: &str = "sans-serif";

/// A drawing failure, before it is tied to an output path.
#[derive(Debug)]
pub(crate) struct DrawError(pub(crate) String);

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for DrawError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        DrawError(e.to_string())
    }
}

/// The root drawing area every plot draws on.
pub(crate) type Root<'a> = DrawingArea<Canvas<'a>, plotters::coord::Shift>;

/// Registers the embedded font with plotters, once per process. [`Canvas`] draws and measures
/// text itself, but plotters measures multi-line text through its own font table.
pub(crate) fn ensure_font() -> Result<(), DrawError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(DrawError(
            "the embedded DejaVu Sans font could not be parsed".into(),
        ))
    }
}

/// Draws with `draw` on a white `width` x `height` canvas, then writes it to `path` as an
/// 8-bit RGB PNG: encoded in memory, written to a temporary file in `path`'s directory,
/// then renamed over `path`, so that a failure leaves no partial file.
pub(crate) fn render_png<F>(path: &Path, (width, height): (u32, u32), draw: F) -> Result<()>
where
    F: FnOnce(&Root<'_>) -> Result<(), DrawError>,
{
    let draw_err = |e: DrawError| PlotError::Draw {
        path: path.to_path_buf(),
        message: e.0,
    };
    ensure_font().map_err(draw_err)?;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = Canvas::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(DrawError::from)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(DrawError::from));
        drawn.map_err(draw_err)?;
    }
    let encoded = encode(&rgb, width, height).map_err(|message| PlotError::Encode {
        path: path.to_path_buf(),
        message,
    })?;
    write_atomic(path, &encoded)
}

/// Encodes an RGB buffer as a PNG in memory.
fn encode(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it to `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".latentevo-plot-").suffix(".tmp");
    // Temporary files are private (0600) by default; the PNG gets the usual 0644 less umask.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(|source| PlotError::CreateFile {
        path: path.to_path_buf(),
        source,
    })?;
    let write_err = |source| PlotError::WriteFile {
        path: path.to_path_buf(),
        source,
    };
    tmp.write_all(bytes).map_err(write_err)?;
    tmp.flush().map_err(write_err)?;
    // On failure the temporary file is removed when `PersistError` is dropped.
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(())
}
