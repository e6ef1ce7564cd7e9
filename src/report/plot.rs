//! The report's charts, drawn with plotters into SVG strings: line charts
//! (curves), bar charts (histograms, comparisons), a confusion matrix and
//! the world map of [`super::world`]. Text stays `<text>` elements that the
//! browser sets, so no fonts are needed here.
//!
//! Every chart comes back as a [`Figure`]: the SVG and the number of data
//! points drawn, which the page records (`data-points`) so that a test can
//! tell a chart with data from an empty frame.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One drawn chart.
#[derive(Debug, Clone)]
pub struct Figure {
    pub svg: String,
    /// Data points (or bars, cells, map markers) drawn.
    pub points: usize,
}

/// One curve of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    /// Drawn thin and faint (per-step values behind their epoch means).
    pub faint: bool,
}

/// Colours told apart by most readers (Okabe and Ito's palette, then a few).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 94, 240),
    RGBColor(100, 100, 100),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

/// A well-spread colour for cluster `id` of any number of clusters (hues
/// stepped by the golden ratio, so neighbouring ids differ strongly).
pub fn cluster_color(id: u32) -> RGBColor {
    let hue = (id as f64 * 0.618_033_988_75).fract();
    let lightness = [0.42, 0.55, 0.34][(id % 3) as usize];
    hsl_to_rgb(hue, 0.75, lightness)
}

fn hsl_to_rgb(h: f64, s: f64, l: f64) -> RGBColor {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let hp = h * 6.0;
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    let to8 = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    RGBColor(to8(r), to8(g), to8(b))
}

/// An axis tick without trailing zeros: 10, 2.5, 0.0003.
pub fn tick(v: &f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

pub(crate) fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart failed: {e}")
}

/// `lo..hi` widened by 5% (and made non-empty), for an axis.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return 0.0..1.0;
    }
    if hi - lo < 1e-12 {
        let d = if lo.abs() > 1e-12 {
            lo.abs() * 0.1
        } else {
            0.5
        };
        return lo - d..hi + d;
    }
    let d = (hi - lo) * 0.05;
    lo - d..hi + d
}

/// The segments of `n` categories 0..n (plotters' segmented ranges include
/// their end; one category alone gets an empty one on each side, because a
/// segmented range of one value has no width).
fn categories(n: usize) -> std::ops::Range<i32> {
    match n {
        0 | 1 => -1..1,
        n => 0..n as i32 - 1,
    }
}

fn render(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> anyhow::Result<usize>,
) -> anyhow::Result<Figure> {
    let mut svg = String::new();
    let points = {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let points = draw(&root)?;
        root.present().map_err(plot_error)?;
        points
    };
    Ok(Figure { svg, points })
}

/// Curves over a shared x axis; non-finite points are left out.
pub fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    y_range: Option<(f64, f64)>,
) -> anyhow::Result<Figure> {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().filter(finite).copied())
        .collect();
    let fold = |f: fn(&(f64, f64)) -> f64| {
        all.iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    };
    let (x0, x1) = fold(|p| p.0);
    let (y0, y1) = y_range.unwrap_or_else(|| fold(|p| p.1));
    render((560, 320), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(padded(x0, x1), padded(y0, y1))
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_error)?;
        let mut drawn = 0;
        let mut legend = false;
        for s in series {
            let points: Vec<(f64, f64)> = s.points.iter().filter(finite).copied().collect();
            drawn += points.len();
            let style = if s.faint {
                s.color.mix(0.3).stroke_width(1)
            } else {
                s.color.stroke_width(2)
            };
            // A lone point would be an invisible zero-length line.
            let marker = points.len() == 1 || (!s.faint && points.len() <= 30);
            let line = chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(plot_error)?;
            if !s.name.is_empty() {
                legend = true;
                let color = s.color;
                line.label(s.name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            }
            if marker {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, s.color.filled())))
                    .map_err(plot_error)?;
            }
        }
        if legend {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .label_font(("sans-serif", 12))
                .draw()
                .map_err(plot_error)?;
        }
        Ok(drawn)
    })
}

/// Vertical bars, one per label.
pub fn bar_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    bars: &[(String, f64)],
    color: RGBColor,
) -> anyhow::Result<Figure> {
    let top = bars.iter().map(|b| b.1).fold(0.0f64, f64::max);
    render((560, 320), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(
                categories(bars.len()).into_segmented(),
                0.0..padded(0.0, top).end,
            )
            .map_err(plot_error)?;
        let label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) if *i >= 0 => bars
                .get(*i as usize)
                .map(|b| b.0.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(bars.len().max(1))
            .x_label_formatter(&label)
            .y_label_formatter(&tick)
            .x_desc(x_desc)
            .y_desc(y_desc)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let i = i as i32;
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), b.1),
                    ],
                    color.filled(),
                );
                bar.set_margin(0, 0, 3, 3);
                bar
            }))
            .map_err(plot_error)?;
        Ok(bars.iter().filter(|b| b.1 > 0.0).count())
    })
}

/// Test images by true class (rows, top to bottom) and predicted class
/// (columns); cells shaded by the share of their row, counts written in.
/// Columns are named when the names fit their width, else numbered (the
/// rows then carry the numbers too).
pub fn confusion_matrix(
    title: &str,
    classes: &[String],
    counts: &[Vec<usize>],
) -> anyhow::Result<Figure> {
    let c = classes.len().max(1) as i32;
    let cell = (640 / c).clamp(14, 72);
    let longest = classes.iter().map(|n| n.chars().count()).max().unwrap_or(1) as i32;
    // ~6.5 px per character at the 11 px label font.
    let names_fit = longest * 13 / 2 <= cell;
    let y_area = (longest * 13 / 2 + 40).clamp(60, 220);
    let side = (cell * c) as u32;
    render((side + y_area as u32 + 40, side + 110), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(44)
            .y_label_area_size(y_area as u32)
            .build_cartesian_2d(
                categories(classes.len()).into_segmented(),
                categories(classes.len()).into_segmented(),
            )
            .map_err(plot_error)?;
        let name = |k: i32| {
            usize::try_from(k)
                .ok()
                .and_then(|k| classes.get(k).cloned())
                .unwrap_or_default()
        };
        let x_label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(k) if names_fit => name(*k),
            SegmentValue::CenterOf(k) if (0..c).contains(k) => k.to_string(),
            _ => String::new(),
        };
        let y_label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(k) if names_fit => name(c - 1 - *k),
            SegmentValue::CenterOf(k) if (0..c).contains(k) => {
                format!("{} {}", name(c - 1 - *k), c - 1 - *k)
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(classes.len())
            .y_labels(classes.len())
            .x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .x_label_style(("sans-serif", 11).into_font())
            .y_label_style(("sans-serif", 11).into_font())
            .x_desc("predicted")
            .y_desc("true")
            .draw()
            .map_err(plot_error)?;
        let mut cells = 0;
        for (i, row) in counts.iter().enumerate() {
            let total: usize = row.iter().sum();
            for (j, &n) in row.iter().enumerate() {
                let share = if total == 0 {
                    0.0
                } else {
                    n as f64 / total as f64
                };
                let shade = (255.0 * (1.0 - 0.85 * share)) as u8;
                let y = c - 1 - i as i32;
                let x = j as i32;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [
                            (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                        ],
                        RGBColor(shade, shade, 255).filled(),
                    )))
                    .map_err(plot_error)?;
                if n > 0 && cell >= 20 {
                    let color = if share > 0.55 { WHITE } else { BLACK };
                    chart
                        .draw_series(std::iter::once(Text::new(
                            n.to_string(),
                            (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                            ("sans-serif", 12)
                                .into_font()
                                .color(&color)
                                .pos(Pos::new(HPos::Center, VPos::Center)),
                        )))
                        .map_err(plot_error)?;
                }
                cells += 1;
            }
        }
        Ok(cells)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_carry_their_data() {
        let s = Series {
            name: "infonce".into(),
            points: vec![(1.0, 5.0), (2.0, 4.0), (3.0, f64::NAN), (4.0, 3.5)],
            color: PALETTE[0],
            faint: false,
        };
        let f = line_chart("loss", "epoch", "loss", &[s], None).unwrap();
        assert_eq!(f.points, 3, "the NaN point is left out");
        assert!(f.svg.starts_with("<svg"), "{}", &f.svg[..40]);
        assert!(f.svg.contains("<polyline"), "a curve is drawn");
        assert!(f.svg.contains(">\ninfonce\n</text>") || f.svg.contains("infonce"));

        let one = bar_chart("probe", "run", "top-1", &[("a".into(), 0.5)], PALETTE[0]).unwrap();
        assert_eq!(one.points, 1);
        assert!(!one.svg.contains("width=\"-"), "one bar has a width");
        let b = bar_chart(
            "views",
            "views",
            "locations",
            &[("1".into(), 3.0), ("2".into(), 0.0)],
            PALETTE[1],
        )
        .unwrap();
        assert_eq!(b.points, 1);
        assert!(b.svg.contains("<rect"));

        let m = confusion_matrix(
            "probe",
            &["a".into(), "b".into()],
            &[vec![2, 1], vec![0, 3]],
        )
        .unwrap();
        assert_eq!(m.points, 4);
        assert!(m.svg.contains(">\n3\n</text>") || m.svg.contains(">3<"));
    }

    #[test]
    fn cluster_colors_differ_for_neighbours() {
        let colors: Vec<RGBColor> = (0..50).map(cluster_color).collect();
        for w in colors.windows(2) {
            let d: i32 = [
                w[0].0 as i32 - w[1].0 as i32,
                w[0].1 as i32 - w[1].1 as i32,
                w[0].2 as i32 - w[1].2 as i32,
            ]
            .iter()
            .map(|d| d.abs())
            .sum();
            assert!(d > 60, "{:?} vs {:?}", w[0], w[1]);
        }
    }
}
