//! Images to model input: grey -> 3 channels, bicubic resize, random resized crop and flip
//! (seeded), batched into `(b, 3, s, s)` tensors in [0, 1] (no mean/std normalisation, as the
//! paper trains).

use super::{ImageSource, LabelledImages};
use crate::error::{Error, Result};
use crate::rng::Rng;
use candle_core::{Device, Tensor};
use image::imageops::{self, FilterType};
use image::{ImageBuffer, Rgb};

pub type RgbF = ImageBuffer<Rgb<f32>, Vec<f32>>;

/// Image `i` as RGB floats in [0, 1] (grey repeated over the channels).
pub fn rgb(set: &LabelledImages, i: usize) -> Result<RgbF> {
    if i >= set.len() {
        return Err(Error::Msg(format!(
            "image index {i} is out of range ({} images)",
            set.len()
        )));
    }
    match &set.source {
        ImageSource::Grey(im) => {
            let px = im.image(i);
            Ok(ImageBuffer::from_fn(
                im.cols as u32,
                im.rows as u32,
                |x, y| {
                    let v = px[y as usize * im.cols + x as usize] as f32 / 255.0;
                    Rgb([v, v, v])
                },
            ))
        }
        ImageSource::Files(files) => {
            let p = &files[i];
            let img = image::ImageReader::open(p)
                .and_then(|r| r.with_guessed_format())
                .map_err(|e| Error::file(p, format!("cannot open image: {e}")))?
                .decode()
                .map_err(|e| Error::file(p, format!("corrupt or unsupported image: {e}")))?;
            Ok(img.to_rgb32f())
        }
    }
}

/// Evaluation transform: resize the shorter side to `size` (bicubic), then center crop.
pub fn resize_center_crop(img: &RgbF, size: u32) -> RgbF {
    let (w, h) = img.dimensions();
    let (nw, nh) = if w <= h {
        (size, (h as f64 * size as f64 / w as f64).round() as u32)
    } else {
        ((w as f64 * size as f64 / h as f64).round() as u32, size)
    };
    let r = if (nw, nh) == (w, h) {
        img.clone()
    } else {
        imageops::resize(img, nw, nh, FilterType::CatmullRom)
    };
    imageops::crop_imm(&r, (nw - size) / 2, (nh - size) / 2, size, size).to_image()
}

/// torchvision's RandomResizedCrop (scale 0.2-1.0, ratio 3/4-4/3, bicubic) then a horizontal
/// flip with probability 1/2.
pub fn random_resized_crop_flip(img: &RgbF, size: u32, rng: &mut Rng) -> RgbF {
    let (w, h) = img.dimensions();
    let area = (w * h) as f64;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    let mut crop = None;
    for _ in 0..10 {
        let target = area * (0.2 + 0.8 * rng.uniform());
        let ratio = (lo + (hi - lo) * rng.uniform()).exp();
        let cw = (target * ratio).sqrt().round() as u32;
        let ch = (target / ratio).sqrt().round() as u32;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let x = rng.below((w - cw + 1) as usize) as u32;
            let y = rng.below((h - ch + 1) as usize) as u32;
            crop = Some((x, y, cw, ch));
            break;
        }
    }
    let (x, y, cw, ch) = crop.unwrap_or_else(|| {
        let s = w.min(h);
        ((w - s) / 2, (h - s) / 2, s, s)
    });
    let c = imageops::crop_imm(img, x, y, cw, ch).to_image();
    let mut out = imageops::resize(&c, size, size, FilterType::CatmullRom);
    if rng.uniform() < 0.5 {
        imageops::flip_horizontal_in_place(&mut out);
    }
    out
}

/// A `(b, 3, size, size)` batch of images `indices`; `augment` = Some(rng) for training crops.
pub fn make_batch(
    set: &LabelledImages,
    indices: &[usize],
    size: u32,
    mut augment: Option<&mut Rng>,
    device: &Device,
) -> Result<Tensor> {
    let s = size as usize;
    let mut data = Vec::with_capacity(indices.len() * 3 * s * s);
    for &i in indices {
        let src = rgb(set, i)?;
        let img = match augment.as_deref_mut() {
            Some(rng) => random_resized_crop_flip(&src, size, rng),
            None => resize_center_crop(&src, size),
        };
        for c in 0..3 {
            data.extend(img.pixels().map(|p| p.0[c].clamp(0.0, 1.0)));
        }
    }
    Ok(Tensor::from_vec(data, (indices.len(), 3, s, s), device)?)
}

/// A PNG grid: images in chunks of `per_row` columns; for each chunk one row per tensor in
/// `rows` (e.g. originals above reconstructions). Values are clamped to [0, 1].
pub fn write_grid(rows: &[&Tensor], per_row: usize, path: &std::path::Path) -> Result<()> {
    let (b, _c, h, w) = rows[0].dims4()?;
    let per_row = per_row.clamp(1, b.max(1));
    let chunks = b.div_ceil(per_row);
    let gap = 2;
    let mut out = image::RgbImage::from_pixel(
        (per_row * w) as u32,
        (chunks * (rows.len() * h + gap)) as u32,
        Rgb([255, 255, 255]),
    );
    for (r, t) in rows.iter().enumerate() {
        let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
        for i in 0..b {
            let (col, chunk) = (i % per_row, i / per_row);
            let y0 = chunk * (rows.len() * h + gap) + r * h;
            for y in 0..h {
                for x in 0..w {
                    let px = |c: usize| {
                        (v[((i * 3 + c) * h + y) * w + x].clamp(0.0, 1.0) * 255.0).round() as u8
                    };
                    out.put_pixel(
                        (col * w + x) as u32,
                        (y0 + y) as u32,
                        Rgb([px(0), px(1), px(2)]),
                    );
                }
            }
        }
    }
    let tmp = path.with_extension("png.tmp");
    out.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| Error::file(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::GreyImages;

    fn set() -> LabelledImages {
        let px: Vec<u8> = (0..2 * 28 * 28).map(|i| (i % 256) as u8).collect();
        LabelledImages {
            source: ImageSource::Grey(GreyImages {
                n: 2,
                rows: 28,
                cols: 28,
                pixels: px,
            }),
            labels: vec![0, 1],
            class_names: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn batches_are_in_unit_range_and_reproducible() {
        let s = set();
        let b = make_batch(&s, &[1, 0], 32, None, &Device::Cpu).unwrap();
        assert_eq!(b.dims(), &[2, 3, 32, 32]);
        let v: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
        let a1 = make_batch(&s, &[0, 1], 32, Some(&mut Rng::new(5)), &Device::Cpu).unwrap();
        let a2 = make_batch(&s, &[0, 1], 32, Some(&mut Rng::new(5)), &Device::Cpu).unwrap();
        let a3 = make_batch(&s, &[0, 1], 32, Some(&mut Rng::new(6)), &Device::Cpu).unwrap();
        let d = |x: &Tensor, y: &Tensor| {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert_eq!(d(&a1, &a2), 0.0);
        assert!(d(&a1, &a3) > 0.0);
        // Same size in and out: the eval transform is the identity.
        let e = make_batch(&s, &[0], 28, None, &Device::Cpu).unwrap();
        let first: Vec<f32> = e
            .flatten_all()
            .unwrap()
            .narrow(0, 0, 3)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(first, vec![0.0, 1.0 / 255.0, 2.0 / 255.0]);
    }

    #[test]
    fn grid_wraps_rows_and_keeps_pixels() {
        let a = Tensor::ones((3, 3, 4, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros((3, 3, 4, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("g.png");
        write_grid(&[&a, &b], 2, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        // 2 columns of width 5; 2 chunks of (2 rows of height 4 + a 2-pixel gap).
        assert_eq!(img.dimensions(), (10, 20));
        assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255]); // original (ones)
        assert_eq!(img.get_pixel(0, 4).0, [0, 0, 0]); // reconstruction (zeros)
        assert_eq!(img.get_pixel(0, 10).0, [255, 255, 255]); // third image, second chunk
        assert_eq!(img.get_pixel(7, 14).0, [255, 255, 255]); // empty slot stays background
        assert!(!d.path().join("g.png.tmp").exists());
    }
}
