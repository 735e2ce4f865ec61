//! `lqae-eval encode` / `decode` on a folder of the test's own images (mixed PNG and JPEG of
//! several sizes, one in a subfolder): the tokens file's format, decode = the model's
//! reconstruction from those tokens, shards that concatenate to a whole run, resume after a torn
//! line, and bad images named (or recorded with --skip-bad).

mod common;

use candle_core::Device;
use lqae::eval::codec::{self, EncodeArgs, Images};
use std::path::Path;
use std::process::Command;

fn write_images(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let pattern = |w: u32, h: u32, k: u32| {
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                ((x * 7 + k * 30) % 256) as u8,
                ((y * 5 + x) % 256) as u8,
                ((x ^ y) * 3 % 256) as u8,
            ])
        })
    };
    pattern(40, 30, 0).save(dir.join("a.png")).unwrap();
    pattern(64, 48, 1).save(dir.join("b.jpg")).unwrap();
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y) % 256) as u8]))
        .save(dir.join("c.png"))
        .unwrap();
    pattern(17, 23, 2).save(dir.join("sub/d.jpeg")).unwrap();
    pattern(16, 16, 3).save(dir.join("sub/e.png")).unwrap();
}

fn image_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("lqae_tokens").is_none())
        .collect()
}

#[test]
fn encode_decode_shards_resume_and_bad_images() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::train_tiny_lqae(dir.path(), 3);
    let model = run.display().to_string();
    let imgs = dir.path().join("imgs");
    write_images(&imgs);
    let zoo = lqae::eval::Zoo::new(&Device::Cpu, false);
    let args = |out: &Path, shard| EncodeArgs {
        model: model.clone(),
        images: Images::Folder(imgs.clone()),
        out: out.to_path_buf(),
        shard,
        skip_bad: false,
        batch: 2,
    };
    let whole = dir.path().join("whole.jsonl");
    let s = codec::encode(&zoo, &args(&whole, None), &mut |_, _| {}).unwrap();
    assert_eq!(
        (s.images, s.encoded, s.skipped, s.resumed_after),
        (5, 5, 0, 0)
    );

    // Format: a header naming the model and its hash, then one line per image, sorted by path.
    let text = std::fs::read_to_string(&whole).unwrap();
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let t = zoo.load(&model).unwrap();
    assert_eq!(header["model_sha256"], t.sha256.as_str());
    assert_eq!(header["tokens_per_image"], 16);
    assert!(header["transform"]
        .as_str()
        .unwrap()
        .contains("center crop 16x16"));
    let lines = image_lines(&whole);
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a.png", "b.jpg", "c.png", "sub/d.jpeg", "sub/e.png"]);
    assert_eq!(
        (lines[1]["width"].as_u64(), lines[1]["height"].as_u64()),
        (Some(64), Some(48))
    );
    for l in &lines {
        assert_eq!(l["ids"].as_array().unwrap().len(), 16);
        assert_eq!(l["text"].as_array().unwrap().len(), 16);
        assert_eq!(l["pixels_sha256"].as_str().unwrap().len(), 64);
    }
    // The pixel hash is of the decoded image: the grey PNG hashes as its RGB8 repetition.
    let grey = image::open(imgs.join("c.png")).unwrap().to_rgb32f();
    assert_eq!(
        lines[2]["pixels_sha256"],
        lqae::eval::tokens_file::pixels_sha256(&grey).as_str()
    );

    // The ids are the model's own encoding, and decode is its reconstruction from them.
    let set = lqae::data::LabelledImages {
        source: lqae::data::ImageSource::Files(vec![imgs.join("b.jpg")]),
        labels: vec![0],
        class_names: vec!["?".into()],
    };
    let x = lqae::data::batch::make_batch(&set, &[0], 16, None, &Device::Cpu).unwrap();
    let fwd = t.model.forward(&x, None).unwrap();
    let want_ids: Vec<Vec<u32>> = fwd.ids.to_vec2().unwrap();
    let got_ids: Vec<u32> = serde_json::from_value(lines[1]["ids"].clone()).unwrap();
    assert_eq!(got_ids, want_ids[0]);
    let out = dir.path().join("decoded");
    let bin = env!("CARGO_BIN_EXE_lqae-eval");
    let o = Command::new(bin)
        .arg("decode")
        .arg(&whole)
        .args(["--model", &model, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = image::open(out.join("b.png")).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (16, 16));
    let recon: Vec<f32> = fwd
        .recon
        .clamp(0f32, 1f32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (i, p) in png.pixels().enumerate() {
        for c in 0..3 {
            let want = (recon[c * 256 + i] * 255.0).round();
            assert!((p.0[c] as f32 - want).abs() <= 1.0, "pixel {i} channel {c}");
        }
    }
    assert!(out.join("sub/d.png").is_file() && out.join("sub/e.png").is_file());
    // `reconstruct --model` is encode + decode: the same tokens file and the same PNGs.
    let rec = dir.path().join("reconstructed");
    let o = Command::new(bin)
        .args(["reconstruct", "--model", &model, "--batch", "2", "--images"])
        .arg(&imgs)
        .arg("--out")
        .arg(&rec)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(image_lines(&rec.join("tokens.jsonl")), lines);
    for f in ["a.png", "b.png", "c.png", "sub/d.png", "sub/e.png"] {
        assert_eq!(
            std::fs::read(rec.join(f)).unwrap(),
            std::fs::read(out.join(f)).unwrap(),
            "{f}"
        );
    }

    // Two shards, their image lines concatenated in order = the whole run's.
    let (s1, s2) = (dir.path().join("s1.jsonl"), dir.path().join("s2.jsonl"));
    codec::encode(&zoo, &args(&s1, Some((1, 2))), &mut |_, _| {}).unwrap();
    codec::encode(&zoo, &args(&s2, Some((2, 2))), &mut |_, _| {}).unwrap();
    let mut cat = image_lines(&s1);
    assert_eq!(cat.len(), 2);
    cat.extend(image_lines(&s2));
    assert_eq!(cat, lines);
    // Concatenated shard files read as one tokens file (repeated, agreeing headers).
    let both = dir.path().join("both.jsonl");
    let joined = std::fs::read_to_string(&s1).unwrap() + &std::fs::read_to_string(&s2).unwrap();
    std::fs::write(&both, joined).unwrap();
    assert_eq!(
        lqae::eval::tokens_file::TokensFile::read(&both)
            .unwrap()
            .images
            .len(),
        5
    );

    // Resume: cut the file in the middle of its fourth line; the rerun completes it exactly.
    let cut = dir.path().join("cut.jsonl");
    let keep: usize = text.lines().take(3).map(|l| l.len() + 1).sum::<usize>() + 20;
    std::fs::write(&cut, &text.as_bytes()[..keep]).unwrap();
    let s = codec::encode(&zoo, &args(&cut, None), &mut |_, _| {}).unwrap();
    assert_eq!((s.resumed_after, s.encoded), (2, 3));
    assert_eq!(std::fs::read_to_string(&cut).unwrap(), text);
    // Another model on the same output is refused, naming the file.
    let e = codec::encode(&zoo, &args(&s1, None), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("s1.jsonl") && e.contains("another header"),
        "{e}"
    );

    // A broken image: an error naming it, or with --skip-bad a recorded skip.
    std::fs::write(imgs.join("broken.png"), b"not a png").unwrap();
    let bad = dir.path().join("bad.jsonl");
    let e = codec::encode(&zoo, &args(&bad, None), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.png") && e.contains("--skip-bad"), "{e}");
    std::fs::remove_file(&bad).unwrap();
    let o = Command::new(bin)
        .args(["encode", "--model", &model, "--images"])
        .arg(&imgs)
        .arg("--out")
        .arg(&bad)
        .arg("--skip-bad")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("5 encoded")
            && String::from_utf8_lossy(&o.stdout).contains("1 skipped")
    );
    let skipped: Vec<_> = image_lines(&bad)
        .into_iter()
        .filter(|l| l.get("skipped").is_some())
        .collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["id"], "broken.png");
}
