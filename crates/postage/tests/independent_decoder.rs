//! Our PNG labels decode byte-for-byte with an independent decoder: ZXingReader (zxing-cpp).
//! Needs `zxing-cpp-tools`; run `.ci/postage-deps.sh` to install it.

mod common;

use std::process::Command;

use common::{day, letter, operator_and_device};
use netbill_postage::barcode;

fn zxing_reader_bytes(path: &std::path::Path) -> Vec<u8> {
    let out = match Command::new("ZXingReader")
        .args(["-bytes", "-format", "PDF417"])
        .arg(path)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!(
            "ZXingReader (package zxing-cpp-tools) is required for this test and could not be run ({e}); \
             install it with `bash .ci/postage-deps.sh`"
        ),
    };
    assert!(
        out.status.success(),
        "ZXingReader failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn zxing_cpp_reads_our_labels_byte_for_byte() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_op, mut dev) = operator_and_device(tmp.path(), "psd", 100_000_000);
    let today = day("2026-11-23");
    for (i, postage) in [580u64, 1, 16_777_215, 73_450, 999].into_iter().enumerate() {
        let ind = dev.print(&letter(today, postage)).expect("print");
        let data = ind.to_bytes();
        let path = tmp.path().join(format!("label-{i}.png"));
        std::fs::write(&path, barcode::render_png(&data).expect("png")).expect("write");
        assert_eq!(zxing_reader_bytes(&path), data.to_vec(), "label {i}");
    }
    // Payloads with every byte value, including the ones that are control characters in Latin-1.
    let all: Vec<u8> = (0..=255u8).collect();
    for chunk in all.chunks(107) {
        let path = tmp.path().join("bytes.png");
        std::fs::write(&path, barcode::render_png(chunk).expect("png")).expect("write");
        assert_eq!(zxing_reader_bytes(&path), chunk.to_vec());
    }
}

#[test]
fn svg_labels_rasterise_and_decode_byte_for_byte() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_op, mut dev) = operator_and_device(tmp.path(), "psd", 10_000);
    let ind = dev.print(&letter(day("2026-11-23"), 580)).expect("print");
    let data = ind.to_bytes().to_vec();
    let svg =
        barcode::render_svg(&[(data.clone(), vec!["USD:0.58 LETTER".into()])], 1).expect("svg");
    let svg_path = tmp.path().join("label.svg");
    let png_path = tmp.path().join("label-from-svg.png");
    std::fs::write(&svg_path, svg).expect("write");
    let out = Command::new("rsvg-convert")
        .args(["-z", "3", "-o"])
        .arg(&png_path)
        .arg(&svg_path)
        .output()
        .unwrap_or_else(|e| {
            panic!("rsvg-convert (librsvg2-bin) is required ({e}); install it with `bash .ci/postage-deps.sh`")
        });
    assert!(
        out.status.success(),
        "rsvg-convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(zxing_reader_bytes(&png_path), data);
    let png = std::fs::read(&png_path).expect("read");
    assert_eq!(barcode::decode_image(&png).expect("our decoder"), data);
}

#[test]
fn damaged_label_is_corrected_by_error_correction() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_op, mut dev) = operator_and_device(tmp.path(), "psd", 10_000);
    let data = dev
        .print(&letter(day("2026-11-23"), 580))
        .expect("print")
        .to_bytes()
        .to_vec();
    let png = barcode::render_png(&data).expect("png");
    let mut img = image::load_from_memory(&png).expect("load").to_luma8();
    // Smudge: a white blot over about two data codewords in each of three rows.
    let (w, h) = img.dimensions();
    for y in h / 2 - 12..h / 2 + 12 {
        for x in w / 2 - 34..w / 2 + 34 {
            img.put_pixel(x, y, image::Luma([255]));
        }
    }
    let path = tmp.path().join("smudged.png");
    img.save(&path).expect("save");
    assert_eq!(
        zxing_reader_bytes(&path),
        data,
        "ZXingReader corrects the damage"
    );
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(
        barcode::decode_image(&bytes).expect("our decoder corrects the damage"),
        data
    );
}
