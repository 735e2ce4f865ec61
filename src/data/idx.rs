//! The IDX format of (Fashion-)MNIST: a big-endian header (`0 0 type ndims`, then each
//! dimension as u32) and the raw bytes. Files may be gzipped.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// `n` grey images of `rows x cols` bytes each, row-major, one after another.
#[derive(Debug, Clone)]
pub struct GreyImages {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

impl GreyImages {
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.rows * self.cols;
        &self.pixels[i * s..(i + 1) * s]
    }
}

/// Largest IDX file after gzip (4 GiB: ImageNet-sized grey images fit).
const MAX_UNPACKED: u64 = 4 << 30;

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // Bounded: a few kilobytes of gzip can claim gigabytes.
        flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_UNPACKED + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::file(path, format!("corrupt gzip data: {e}")))?;
        if out.len() as u64 > MAX_UNPACKED {
            return Err(Error::file(
                path,
                format!(
                    "unpacks to more than {MAX_UNPACKED} bytes; not an IDX file this reader takes"
                ),
            ));
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn parse(path: &Path, want_dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = read_maybe_gz(path)?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::file(path, "not an IDX file (bad magic number)"));
    }
    if bytes[2] != 0x08 {
        return Err(Error::file(
            path,
            format!(
                "IDX element type 0x{:02x} is not unsigned bytes (0x08)",
                bytes[2]
            ),
        ));
    }
    let nd = bytes[3] as usize;
    if nd != want_dims {
        return Err(Error::file(
            path,
            format!("IDX file has {nd} dimensions, expected {want_dims}"),
        ));
    }
    let header = 4 + 4 * nd;
    if bytes.len() < header {
        return Err(Error::file(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let want = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::file(path, format!("IDX dimensions {dims:?} overflow")))?;
    let have = bytes.len() - header;
    if have != want {
        return Err(Error::file(
            path,
            format!("IDX header promises {dims:?} = {want} bytes of data, the file has {have}"),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

pub fn read_idx_images(path: &Path) -> Result<GreyImages> {
    let (dims, pixels) = parse(path, 3)?;
    Ok(GreyImages {
        n: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels,
    })
}

pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    Ok(parse(path, 1)?.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn reads_plain_and_gzipped_and_rejects_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let plain = dir.path().join("img");
        std::fs::write(&plain, idx_bytes(&[2, 3, 4], &data)).unwrap();
        let gz = dir.path().join("img.gz");
        let mut enc =
            flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), Default::default());
        enc.write_all(&idx_bytes(&[2, 3, 4], &data)).unwrap();
        enc.finish().unwrap();
        for p in [&plain, &gz] {
            let im = read_idx_images(p).unwrap();
            assert_eq!((im.n, im.rows, im.cols), (2, 3, 4));
            assert_eq!(im.image(1), &data[12..24]);
        }
        let bad = dir.path().join("bad");
        std::fs::write(&bad, idx_bytes(&[2, 3, 4], &data[..20])).unwrap();
        let e = read_idx_images(&bad).unwrap_err().to_string();
        assert!(e.contains("bad") && e.contains("24 bytes"), "{e}");
        let e = read_idx_labels(&plain).unwrap_err().to_string();
        assert!(e.contains("3 dimensions, expected 1"), "{e}");
    }
}
