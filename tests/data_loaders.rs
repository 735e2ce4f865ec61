//! File-backed data sets: mini-ImageNet in its usual layout and an image folder, written by
//! the tests in the exact on-disk layout, plus the errors for malformed ones.

use candle_core::Device;
use lqae::data::batch::make_batch;
use lqae::data::{load_image_folder, load_mini_imagenet, mini_imagenet_class_name, Split};
use std::path::Path;

fn write_png(path: &Path, w: u32, h: u32, grey: bool, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if grey {
        image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([(x as u8).wrapping_mul(seed) ^ y as u8])
        })
        .save(path)
        .unwrap();
    } else {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, seed]))
            .save(path)
            .unwrap();
    }
}

fn mini_imagenet(root: &Path) {
    let wnids = ["n01532829", "n02110341", "n13133613"];
    let mut train = String::from("filename,label\n");
    let mut test = String::from("filename,label\n");
    for (c, w) in wnids.iter().enumerate() {
        for i in 0..3 {
            let name = format!("{w}{i:08}.jpg");
            let p = root.join("images").join(&name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            image::RgbImage::from_fn(84, 84, |x, y| {
                image::Rgb([x as u8, y as u8, (40 * c + i) as u8])
            })
            .save(&p)
            .unwrap();
            if i < 2 {
                train.push_str(&format!("{name},{w}\n"));
            } else {
                test.push_str(&format!("{name},{w}\n"));
            }
        }
    }
    std::fs::write(root.join("train.csv"), train).unwrap();
    std::fs::write(root.join("test.csv"), test).unwrap();
    std::fs::write(root.join("val.csv"), "filename,label\n").unwrap();
}

#[test]
fn mini_imagenet_layout_loads_with_class_names() {
    let d = tempfile::tempdir().unwrap();
    mini_imagenet(d.path());
    let train = load_mini_imagenet(d.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 6);
    assert_eq!(train.class_names, vec!["house finch", "dalmatian", "ear"]);
    assert_eq!(train.labels, vec![0, 0, 1, 1, 2, 2]);
    let test = load_mini_imagenet(d.path(), Split::Test).unwrap();
    assert_eq!(test.len(), 3);
    let b = make_batch(&test, &[0, 2], 32, None, &Device::Cpu).unwrap();
    assert_eq!(b.dims(), &[2, 3, 32, 32]);
    // Blue channel of the third class's test image is 40 * 2 + 2 = 82 everywhere (JPEG: nearly).
    let blue = b
        .get(1)
        .unwrap()
        .get(2)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((blue - 82.0 / 255.0).abs() < 0.03, "{blue}");
}

#[test]
fn mini_imagenet_class_table_has_the_100_classes() {
    let table = include_str!("../src/data/mini_imagenet_classes.tsv");
    let rows: Vec<(&str, &str)> = table
        .lines()
        .map(|l| l.split_once('\t').expect("wnid<TAB>name"))
        .collect();
    assert_eq!(rows.len(), 100);
    let mut ids: Vec<&str> = rows.iter().map(|r| r.0).collect();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    assert!(rows
        .iter()
        .all(|(w, n)| w.len() == 9 && w.starts_with('n') && !n.is_empty()));
    assert_eq!(mini_imagenet_class_name("n02110341"), Some("dalmatian"));
    assert_eq!(mini_imagenet_class_name("n00000000"), None);
}

#[test]
fn malformed_mini_imagenet_is_reported_with_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    mini_imagenet(d.path());
    let csv = d.path().join("train.csv");
    std::fs::write(&csv, "file,wnid\na.jpg,n01532829\n").unwrap();
    let e = load_mini_imagenet(d.path(), Split::Train)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("train.csv") && e.contains("filename,label"),
        "{e}"
    );
    std::fs::write(
        &csv,
        "filename,label\nn0153282900000000.jpg,n01532829\nmissing.jpg,n01532829\n",
    )
    .unwrap();
    let e = load_mini_imagenet(d.path(), Split::Train)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("line 3") && e.contains("missing.jpg") && e.contains("does not exist"),
        "{e}"
    );
    std::fs::write(&csv, "filename,label\njust-a-name\n").unwrap();
    let e = load_mini_imagenet(d.path(), Split::Train)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("line 2") && e.contains("not `filename,label`"),
        "{e}"
    );
    let e = load_mini_imagenet(&d.path().join("nope"), Split::Test)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("test.csv") && e.contains("images/"), "{e}");
    // A corrupt image is named when a batch needs it.
    std::fs::write(&csv, "filename,label\nn0153282900000000.jpg,n01532829\n").unwrap();
    std::fs::write(d.path().join("images/n0153282900000000.jpg"), b"not a jpeg").unwrap();
    let set = load_mini_imagenet(d.path(), Split::Train).unwrap();
    let e = make_batch(&set, &[0], 32, None, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("n0153282900000000.jpg") && e.contains("corrupt"),
        "{e}"
    );
}

#[test]
fn image_folder_sorts_classes_and_turns_grey_into_rgb() {
    let d = tempfile::tempdir().unwrap();
    write_png(&d.path().join("zebra/a.png"), 20, 30, true, 3);
    write_png(&d.path().join("apple/b.PNG"), 40, 40, false, 9);
    write_png(&d.path().join("apple/c.png"), 16, 16, false, 1);
    std::fs::write(d.path().join("apple/notes.txt"), "skip me").unwrap();
    let set = load_image_folder(d.path()).unwrap();
    assert_eq!(set.class_names, vec!["apple", "zebra"]);
    assert_eq!(set.labels, vec![0, 0, 1]);
    let b = make_batch(&set, &[2], 16, None, &Device::Cpu).unwrap();
    let ch: Vec<f32> = (0..3)
        .map(|c| {
            b.get(0)
                .unwrap()
                .get(c)
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .collect();
    assert!(
        (ch[0] - ch[1]).abs() < 1e-6 && (ch[1] - ch[2]).abs() < 1e-6,
        "grey must fill all channels: {ch:?}"
    );
    let empty = tempfile::tempdir().unwrap();
    let e = load_image_folder(empty.path()).err().unwrap().to_string();
    assert!(e.contains("no class sub-folders"), "{e}");
}

#[test]
fn mnist_5k_csv_splits_by_class_and_rejects_bad_rows() {
    let dir = lqae::assets::ensure(&lqae::assets::MNIST_5K).unwrap();
    let train = lqae::data::load_mnist_csv(&dir.join("mnist_5k.csv.gz"), Split::Train).unwrap();
    let test = lqae::data::load_mnist_csv(&dir.join("mnist_5k.csv.gz"), Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (4000, 1000));
    for d in 0..10u32 {
        assert_eq!(train.labels.iter().filter(|&&l| l == d).count(), 400);
        assert_eq!(test.labels.iter().filter(|&&l| l == d).count(), 100);
    }
    let b = make_batch(&test, &[0, 999], 28, None, &Device::Cpu).unwrap();
    let ink = b.mean_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(
        ink > 0.05 && ink < 0.4,
        "digits are white ink on black: mean {ink}"
    );
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.csv");
    std::fs::write(
        &bad,
        format!(
            "{}\n{},7\n",
            vec!["0"; 785].join(","),
            vec!["300"; 784].join(",")
        ),
    )
    .unwrap();
    let e = lqae::data::load_mnist_csv(&bad, Split::Train)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("bad.csv") && e.contains("line 2") && e.contains("300"),
        "{e}"
    );
    std::fs::write(&bad, "1,2,3\n").unwrap();
    let e = lqae::data::load_mnist_csv(&bad, Split::Train)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("line 1") && e.contains("784 pixels"), "{e}");
}
