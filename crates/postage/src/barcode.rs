//! PDF417 barcodes: encode indicium bytes (byte compaction, Latin-1 transport through rxing),
//! render PNG and SVG labels and sheets, and decode images back to the exact bytes.

use std::io::Cursor;

use image::{GrayImage, ImageFormat, ImageReader, Luma};
use rxing::common::BitMatrix;
use rxing::pdf417::encoder::Dimensions;
use rxing::{BarcodeFormat, DecodeHints, EncodeHints, MultiFormatWriter, Writer};

/// PDF417 error-correction level (0–8); level 5 adds 64 error-correction codewords.
pub const EC_LEVEL: u32 = 5;
/// Data columns of the symbol.
pub const COLUMNS: usize = 6;
/// Pixels per module (narrowest bar) in PNG output.
pub const MODULE_PX: u32 = 2;
/// Height of a PDF417 row in modules.
pub const ROW_HEIGHT_MODULES: u32 = 4;
/// Quiet zone around the symbol, in modules.
pub const QUIET_MODULES: u32 = 4;
/// Largest image the station decodes, in pixels per side.
pub const IMAGE_SIDE_MAX: u32 = 8000;
/// Largest image file the station reads, in bytes.
pub const IMAGE_FILE_MAX: u64 = 32 * 1024 * 1024;
/// Largest payload we encode.
pub const PAYLOAD_MAX: usize = 1024;

/// Barcode failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BarcodeError {
    /// The payload could not be encoded.
    #[error("cannot encode the PDF417 symbol: {0}")]
    Encode(String),
    /// The image is not a readable PNG within the size limits.
    #[error("unreadable image: {0}")]
    Image(String),
    /// No PDF417 symbol was found or it could not be corrected.
    #[error("no readable PDF417 barcode in the image")]
    NotFound,
    /// The decoded text is not a byte payload.
    #[error("the barcode does not hold binary indicium data")]
    NotBinary,
}

/// Encodes `data` as a PDF417 module matrix (1 pixel per module, rows 4 modules tall, no margin).
pub fn encode_matrix(data: &[u8]) -> Result<BitMatrix, BarcodeError> {
    if data.is_empty() || data.len() > PAYLOAD_MAX {
        return Err(BarcodeError::Encode(format!(
            "payload of {} bytes",
            data.len()
        )));
    }
    // rxing takes text: each byte travels as the Latin-1 character of the same value.
    let text: String = data.iter().map(|b| char::from(*b)).collect();
    let hints = EncodeHints {
        ErrorCorrection: Some(EC_LEVEL.to_string()),
        CharacterSet: Some("ISO-8859-1".into()),
        Pdf417Compaction: Some("2".into()),
        Pdf417Dimensions: Some(Dimensions::new(COLUMNS, COLUMNS, 3, 90)),
        Margin: Some("0".into()),
        ..Default::default()
    };
    MultiFormatWriter
        .encode_with_hints(&text, &BarcodeFormat::PDF_417, 0, 0, &hints)
        .map_err(|e| BarcodeError::Encode(e.to_string()))
}

/// Module width and height (in modules, rows counted as `ROW_HEIGHT_MODULES`) of the symbol for `data`.
pub fn symbol_size(data: &[u8]) -> Result<(u32, u32), BarcodeError> {
    let m = encode_matrix(data)?;
    Ok((m.getWidth(), m.getHeight()))
}

fn matrix_to_image(m: &BitMatrix, px: u32) -> GrayImage {
    let q = QUIET_MODULES * px;
    let (w, h) = (m.getWidth() * px + 2 * q, m.getHeight() * px + 2 * q);
    let mut buf = vec![255u8; w as usize * h as usize];
    let mut row = vec![255u8; w as usize];
    for y in 0..m.getHeight() {
        row.fill(255);
        for x in 0..m.getWidth() {
            if m.get(x, y) {
                let start = (q + x * px) as usize;
                row[start..start + px as usize].fill(0);
            }
        }
        for dy in 0..px {
            let off = ((q + y * px + dy) * w) as usize;
            buf[off..off + w as usize].copy_from_slice(&row);
        }
    }
    GrayImage::from_raw(w, h, buf).unwrap_or_else(|| GrayImage::new(w, h))
}

fn png_bytes(img: &GrayImage) -> Result<Vec<u8>, BarcodeError> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .map_err(|e| BarcodeError::Encode(e.to_string()))?;
    Ok(out)
}

/// Renders one symbol as a PNG (black on white, `MODULE_PX` pixels per module, quiet zone).
pub fn render_png(data: &[u8]) -> Result<Vec<u8>, BarcodeError> {
    png_bytes(&matrix_to_image(&encode_matrix(data)?, MODULE_PX))
}

/// Renders many symbols on one PNG sheet, `per_row` symbols side by side.
pub fn render_sheet_png(items: &[Vec<u8>], per_row: usize) -> Result<Vec<u8>, BarcodeError> {
    let images = items
        .iter()
        .map(|d| encode_matrix(d).map(|m| matrix_to_image(&m, MODULE_PX)))
        .collect::<Result<Vec<_>, _>>()?;
    let per_row = per_row.max(1);
    let cell_w = images.iter().map(|i| i.width()).max().unwrap_or(1);
    let cell_h = images.iter().map(|i| i.height()).max().unwrap_or(1);
    let rows = images.len().div_ceil(per_row).max(1) as u32;
    let cols = per_row.min(images.len()).max(1) as u32;
    let mut sheet = GrayImage::from_pixel(cell_w * cols, cell_h * rows, Luma([255]));
    for (i, img) in images.iter().enumerate() {
        let (cx, cy) = ((i % per_row) as u32 * cell_w, (i / per_row) as u32 * cell_h);
        image::imageops::replace(&mut sheet, img, i64::from(cx), i64::from(cy));
    }
    png_bytes(&sheet)
}

fn escape_xml(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// SVG fragment of one symbol at (x, y) in module units, plus caption lines below it.
fn svg_symbol(m: &BitMatrix, x0: u32, y0: u32, caption: &[String], out: &mut String) {
    for y in 0..m.getHeight() {
        let mut x = 0;
        while x < m.getWidth() {
            if m.get(x, y) {
                let start = x;
                while x < m.getWidth() && m.get(x, y) {
                    x += 1;
                }
                out.push_str(&format!(
                    "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"1\"/>",
                    x0 + start,
                    y0 + y,
                    x - start
                ));
            } else {
                x += 1;
            }
        }
    }
    for (i, line) in caption.iter().enumerate() {
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-family=\"monospace\" font-size=\"5\">{}</text>",
            x0,
            y0 + m.getHeight() + 7 + 6 * i as u32,
            escape_xml(line)
        ));
    }
}

/// Renders labels (symbol + human-readable caption lines) as one SVG, `per_row` per row.
pub fn render_svg(
    items: &[(Vec<u8>, Vec<String>)],
    per_row: usize,
) -> Result<String, BarcodeError> {
    let matrices = items
        .iter()
        .map(|(d, _)| encode_matrix(d))
        .collect::<Result<Vec<_>, _>>()?;
    let per_row = per_row.max(1);
    let max_caption = items.iter().map(|(_, c)| c.len()).max().unwrap_or(0) as u32;
    let cell_w = matrices.iter().map(|m| m.getWidth()).max().unwrap_or(1) + 2 * QUIET_MODULES;
    let cell_h = matrices.iter().map(|m| m.getHeight()).max().unwrap_or(1)
        + 2 * QUIET_MODULES
        + 6 * max_caption
        + 4;
    let cols = per_row.min(items.len()).max(1) as u32;
    let rows = items.len().div_ceil(per_row).max(1) as u32;
    let (w, h) = (cell_w * cols, cell_h * rows);
    let mut body = String::new();
    for (i, (m, (_, caption))) in matrices.iter().zip(items).enumerate() {
        let x0 = (i % per_row) as u32 * cell_w + QUIET_MODULES;
        let y0 = (i / per_row) as u32 * cell_h + QUIET_MODULES;
        svg_symbol(m, x0, y0, caption, &mut body);
    }
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{}\" height=\"{}\" viewBox=\"0 0 {w} {h}\" shape-rendering=\"crispEdges\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n<g fill=\"black\">{body}</g>\n</svg>\n",
        w * MODULE_PX,
        h * MODULE_PX,
    ))
}

/// Decodes a PDF417 symbol from an 8-bit grayscale buffer to its exact bytes.
pub fn decode_luma(luma: &[u8], width: u32, height: u32) -> Result<Vec<u8>, BarcodeError> {
    let mut hints = DecodeHints {
        TryHarder: Some(true),
        CharacterSet: Some("ISO-8859-1".into()),
        ..Default::default()
    };
    let result = rxing::helpers::detect_in_luma_slice_with_hints(
        luma,
        width,
        height,
        Some(BarcodeFormat::PDF_417),
        &mut hints,
    )
    .map_err(|_| BarcodeError::NotFound)?;
    result
        .getText()
        .chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| BarcodeError::NotBinary))
        .collect()
}

/// Decodes a PDF417 symbol from image file bytes (PNG), enforcing size limits.
pub fn decode_image(bytes: &[u8]) -> Result<Vec<u8>, BarcodeError> {
    if bytes.len() as u64 > IMAGE_FILE_MAX {
        return Err(BarcodeError::Image(format!(
            "file larger than {IMAGE_FILE_MAX} bytes"
        )));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| BarcodeError::Image(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(IMAGE_SIDE_MAX);
    limits.max_image_height = Some(IMAGE_SIDE_MAX);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| BarcodeError::Image(e.to_string()))?;
    let luma = img.to_luma8();
    let (w, h) = luma.dimensions();
    decode_luma(luma.as_raw(), w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_payloads_round_trip_through_png() {
        let mut state = 0x1234_5678u32;
        for len in [1usize, 2, 43, 107, 200, 400] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (state >> 16) as u8
                })
                .collect();
            let png = render_png(&data).expect("encode");
            assert_eq!(decode_image(&png).expect("decode"), data, "length {len}");
        }
    }

    #[test]
    fn garbage_images_are_errors_not_panics() {
        assert!(matches!(
            decode_image(b"not an image"),
            Err(BarcodeError::Image(_))
        ));
        let blank = png_bytes(&GrayImage::from_pixel(50, 50, Luma([255]))).expect("png");
        assert_eq!(decode_image(&blank), Err(BarcodeError::NotFound));
        assert!(encode_matrix(&[]).is_err());
    }
}
