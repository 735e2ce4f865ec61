//! The grid of originals, reconstructions and per-pixel error, as a PNG.

use crate::error::{Error, Result};
use crate::util::fsx::write_atomic;
use std::path::Path;

/// Colour of a per-pixel error `e` in [0, 1] (of the error scale): black -> red -> yellow -> white.
pub fn error_colour(e: f32) -> [u8; 3] {
    let t = e.clamp(0.0, 1.0) * 3.0;
    let c = |x: f32| (x.clamp(0.0, 1.0) * 255.0).round() as u8;
    [c(t), c(t - 1.0), c(t - 2.0)]
}

/// One row of the grid: a label and images `(3, s, s)` in [0, 1], or error maps.
pub enum GridRow {
    Images {
        label: String,
        size: usize,
        images: Vec<Vec<f32>>,
    },
    Error {
        label: String,
        size: usize,
        originals: Vec<Vec<f32>>,
        recons: Vec<Vec<f32>>,
        scale: f32,
    },
}

impl GridRow {
    pub fn label(&self) -> &str {
        match self {
            GridRow::Images { label, .. } | GridRow::Error { label, .. } => label,
        }
    }
    fn size(&self) -> usize {
        match self {
            GridRow::Images { size, .. } | GridRow::Error { size, .. } => *size,
        }
    }
    fn len(&self) -> usize {
        match self {
            GridRow::Images { images, .. } => images.len(),
            GridRow::Error { originals, .. } => originals.len(),
        }
    }
    /// RGB of pixel (x, y) of image `i`.
    fn pixel(&self, i: usize, x: usize, y: usize) -> [u8; 3] {
        let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        match self {
            GridRow::Images { size, images, .. } => {
                let p = |c: usize| q(images[i][(c * size + y) * size + x]);
                [p(0), p(1), p(2)]
            }
            GridRow::Error {
                size,
                originals,
                recons,
                scale,
                ..
            } => {
                let e = (0..3)
                    .map(|c| {
                        let k = (c * size + y) * size + x;
                        (originals[i][k] - recons[i][k]).abs()
                    })
                    .sum::<f32>()
                    / 3.0;
                error_colour(e / scale)
            }
        }
    }
}

/// Write the grid PNG (see [`grid_png`]).
pub fn write_grid(rows: &[GridRow], scale: u32, path: &Path) -> Result<()> {
    let bytes = grid_png(rows, scale).map_err(|e| Error::file(path, e))?;
    write_atomic(path, &bytes)
}

/// The grid as PNG bytes: one row per `GridRow`, images magnified `scale` times (nearest), a
/// 2-pixel white gap between cells and a 6-pixel gap between rows.
pub fn grid_png(rows: &[GridRow], scale: u32) -> std::result::Result<Vec<u8>, String> {
    let scale = scale.max(1) as usize;
    let cols = rows.iter().map(GridRow::len).max().unwrap_or(0).max(1);
    let cell = rows.iter().map(GridRow::size).max().unwrap_or(1) * scale;
    let (gap, row_gap) = (2usize, 6usize);
    let width = cols * (cell + gap) - gap;
    let height = rows.len().max(1) * (cell + row_gap) - row_gap;
    let mut img =
        image::RgbImage::from_pixel(width as u32, height as u32, image::Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        let s = row.size();
        for i in 0..row.len() {
            let (x0, y0) = (i * (cell + gap), r * (cell + row_gap));
            for y in 0..s * scale {
                for x in 0..s * scale {
                    img.put_pixel(
                        (x0 + x) as u32,
                        (y0 + y) as u32,
                        image::Rgb(row.pixel(i, x / scale, y / scale)),
                    );
                }
            }
        }
    }
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| format!("cannot encode PNG: {e}"))?;
    Ok(bytes)
}
