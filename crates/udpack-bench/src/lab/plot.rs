//! PNG plots of the grid: bulk goodput against random loss, one plot per RTT, one line
//! per protocol. Text is drawn with a system TrueType font (DejaVu Sans, Debian's
//! fonts-dejavu-core) through plotters' ab_glyph backend, which needs no font library.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use super::plan::Test;
use super::report::{bulk_goodput, Record};
use crate::error::{BenchError, Result};

const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
const FAMILY: &str = "sans-serif";
/// The plot's size in pixels.
const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;
/// One colour per bulk protocol, in the order of [`Test::BULK`].
const COLORS: [RGBColor; 5] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(23, 190, 207),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
];

/// Registers the font once; false if none could be loaded.
fn font() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        FONTS.iter().any(|path| {
            let Ok(bytes) = std::fs::read(path) else {
                return false;
            };
            // plotters keeps registered fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok()
        })
    })
}

/// Draws one plot per RTT that has bulk results on plain links into `dir`; returns the
/// files written.
pub fn goodput_vs_loss(records: &[Record], dir: &Path) -> Result<Vec<PathBuf>> {
    if !font() {
        return Err(BenchError::NoFont);
    }
    let mut rtts: Vec<f64> = Vec::new();
    let mut losses: Vec<f64> = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.test.proto().is_some() && !r.link.extra)
    {
        if r.link.jitter_ms == 0.0 {
            if !rtts.contains(&r.link.rtt_ms) {
                rtts.push(r.link.rtt_ms);
            }
            if !losses.contains(&r.link.loss_pct) {
                losses.push(r.link.loss_pct);
            }
        }
    }
    losses.sort_by(f64::total_cmp);
    let mut files = Vec::new();
    for rtt in rtts {
        let series: Vec<(Test, Vec<(f64, f64)>)> = Test::BULK
            .iter()
            .map(|&t| {
                let pts = losses
                    .iter()
                    .filter_map(|&l| bulk_goodput(records, t, rtt, l, 0.0).map(|g| (l, g)))
                    .collect();
                (t, pts)
            })
            .collect();
        let path = dir.join(format!("goodput-vs-loss-rtt{rtt}ms.png"));
        let rate = records
            .iter()
            .find(|r| r.link.rtt_ms == rtt)
            .map_or(0.0, |r| r.link.rate_mbit);
        draw(&path, rtt, rate, &series).map_err(|e| BenchError::Plot(e.to_string()))?;
        files.push(path);
    }
    Ok(files)
}

fn draw(
    path: &Path,
    rtt: f64,
    rate: f64,
    series: &[(Test, Vec<(f64, f64)>)],
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        chart(&root, rtt, rate, series)?;
        root.present()?;
    }
    write_png(path, &pixels)
}

/// Writes an RGB image of the plot's size as a PNG (the `png` crate: plotters' own
/// encoder would pull in a whole image library for one format).
fn write_png(path: &Path, pixels: &[u8]) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(())
}

fn chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    rtt: f64,
    rate: f64,
    series: &[(Test, Vec<(f64, f64)>)],
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (x_max, y_max) = points.fold((1.0f64, 1.0f64), |(x, y), &(l, g)| (x.max(l), y.max(g)));
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("Goodput against loss: RTT {rtt} ms, {rate} Mbit/s"),
            (FAMILY, 24),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max * 1.02, 0.0..y_max * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("random loss each way, %")
        .y_desc("goodput, Mbit/s")
        .label_style((FAMILY, 16))
        .draw()?;
    for (i, (test, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(test.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
