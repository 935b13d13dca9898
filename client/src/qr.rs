//! QR labels for units and batches. The code carries the certificate's URL on a node,
//! `{node}/c/{id}` (and `/u/{serial}` for one unit), which the node's web page answers. Following
//! ISO 33401, a label never prints property values: only the QR code, the RM code, the batch and
//! the serial, as text.

use font8x8::UnicodeFonts;
use qrcode::{Color, EcLevel, QrCode};

/// Pixels per QR module in a PNG.
const MODULE_PX: u32 = 8;
/// The quiet zone around the code, in modules (ISO/IEC 18004 asks for 4).
const QUIET_MODULES: u32 = 4;
/// Text scale in a PNG: the 8×8 font drawn this many times larger.
const TEXT_SCALE: u32 = 2;

/// Why a label could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("QR code: {0}")]
    Qr(#[from] qrcode::types::QrError),
    #[error("PNG: {0}")]
    Png(#[from] png::EncodingError),
}

/// What a label shows: the QR payload and the lines of text under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub url: String,
    pub lines: Vec<String>,
}

impl Label {
    /// The label of a certificate (`serial: None`) or of one unit.
    pub fn new(node: &str, id: &str, code: &str, batch: &str, serial: Option<&str>) -> Self {
        let mut url = format!("{}/c/{id}", node.trim_end_matches('/'));
        let mut lines = vec![code.to_string(), format!("Batch {batch}")];
        if let Some(serial) = serial {
            url.push_str(&format!("/u/{serial}"));
            lines.push(format!("Unit {serial}"));
        }
        Self { url, lines }
    }

    fn code(&self) -> Result<QrCode, LabelError> {
        Ok(QrCode::with_error_correction_level(
            self.url.as_bytes(),
            EcLevel::M,
        )?)
    }

    /// The label as SVG: one path for the dark modules, text below.
    pub fn svg(&self) -> Result<String, LabelError> {
        let code = self.code()?;
        let width = u32::try_from(code.width()).unwrap_or(u32::MAX);
        let colors = code.to_colors();
        let module = 8;
        let side = (width + 2 * QUIET_MODULES) * module;
        let line_height = 24;
        let text_width = self
            .lines
            .iter()
            .map(|l| u32::try_from(l.chars().count()).unwrap_or(0) * 11 + 2 * module * 2)
            .max()
            .unwrap_or(0);
        let total_width = side.max(text_width);
        let x0 = (total_width - side) / 2;
        let total_height = side + line_height * u32::try_from(self.lines.len()).unwrap_or(0) + 8;
        let mut path = String::new();
        for (i, color) in colors.iter().enumerate() {
            if *color == Color::Dark {
                let i = u32::try_from(i).unwrap_or(0);
                let x = x0 + (i % width + QUIET_MODULES) * module;
                let y = (i / width + QUIET_MODULES) * module;
                path.push_str(&format!("M{x} {y}h{module}v{module}h-{module}z"));
            }
        }
        let mut svg = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{total_width}\" height=\"{total_height}\" viewBox=\"0 0 {total_width} {total_height}\">\n\
             <title>{}</title>\n\
             <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n\
             <path fill=\"#000\" shape-rendering=\"crispEdges\" d=\"{path}\"/>\n",
            escape(&self.url)
        );
        for (i, line) in self.lines.iter().enumerate() {
            let y = side + line_height * u32::try_from(i).unwrap_or(0) + line_height / 2;
            svg.push_str(&format!(
                "<text x=\"{}\" y=\"{y}\" font-family=\"DejaVu Sans Mono, monospace\" font-size=\"18\" text-anchor=\"middle\" fill=\"#000\">{}</text>\n",
                total_width / 2,
                escape(line)
            ));
        }
        svg.push_str("</svg>\n");
        Ok(svg)
    }

    /// The label as a greyscale PNG; text from an 8×8 bitmap font (ASCII; other characters
    /// print as `?`).
    pub fn png(&self) -> Result<Vec<u8>, LabelError> {
        let code = self.code()?;
        let width = u32::try_from(code.width()).unwrap_or(u32::MAX);
        let colors = code.to_colors();
        let side = (width + 2 * QUIET_MODULES) * MODULE_PX;
        let glyph = 8 * TEXT_SCALE;
        let line_height = glyph + 8;
        let text_width = self
            .lines
            .iter()
            .map(|l| u32::try_from(l.chars().count()).unwrap_or(0) * glyph + 2 * glyph)
            .max()
            .unwrap_or(0);
        let total_width = side.max(text_width);
        let lines = u32::try_from(self.lines.len()).unwrap_or(0);
        let total_height = side + lines * line_height + glyph / 2;
        let mut image = Canvas::new(total_width, total_height);
        let x0 = (total_width - side) / 2;
        for (i, color) in colors.iter().enumerate() {
            if *color != Color::Dark {
                continue;
            }
            let i = u32::try_from(i).unwrap_or(0);
            let x = x0 + (i % width + QUIET_MODULES) * MODULE_PX;
            let y = (i / width + QUIET_MODULES) * MODULE_PX;
            for dy in 0..MODULE_PX {
                for dx in 0..MODULE_PX {
                    image.black(x + dx, y + dy);
                }
            }
        }
        for (row, line) in self.lines.iter().enumerate() {
            let chars = u32::try_from(line.chars().count()).unwrap_or(0);
            let mut x = (total_width - chars * glyph) / 2;
            let y = side + u32::try_from(row).unwrap_or(0) * line_height;
            for c in line.chars() {
                let bitmap = font8x8::BASIC_FONTS
                    .get(c)
                    .or_else(|| font8x8::BASIC_FONTS.get('?'))
                    .unwrap_or([0; 8]);
                for (gy, bits) in bitmap.iter().enumerate() {
                    for gx in 0..8u32 {
                        if bits & (1 << gx) == 0 {
                            continue;
                        }
                        let gy = u32::try_from(gy).unwrap_or(0);
                        for sy in 0..TEXT_SCALE {
                            for sx in 0..TEXT_SCALE {
                                let px = x + gx * TEXT_SCALE + sx;
                                let py = y + gy * TEXT_SCALE + sy;
                                image.black(px, py);
                            }
                        }
                    }
                }
                x += glyph;
            }
        }
        image.encode()
    }
}

/// An 8-bit greyscale picture, white to start with.
struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            pixels: vec![255; width as usize * height as usize],
        }
    }

    fn black(&mut self, x: u32, y: u32) {
        if x < self.width && y < self.height {
            self.pixels[y as usize * self.width as usize + x as usize] = 0;
        }
    }

    fn encode(&self) -> Result<Vec<u8>, LabelError> {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, self.width, self.height);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(bytes)
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_carry_the_url_and_only_code_batch_and_serial() {
        let label = Label::new(
            "http://127.0.0.1:7300/",
            "ab12",
            "GBW(E)082345",
            "2025a",
            Some("S-0001"),
        );
        assert_eq!(label.url, "http://127.0.0.1:7300/c/ab12/u/S-0001");
        assert_eq!(label.lines, ["GBW(E)082345", "Batch 2025a", "Unit S-0001"]);
        let svg = label.svg().unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("Unit S-0001"));
        let png = label.png().unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
