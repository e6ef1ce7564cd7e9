//! The report's charts, drawn with plotters into SVG strings: line charts
//! (curves), bar charts (histograms, comparisons), a confusion matrix and
//! the world map of [`super::world`]. Text stays `<text>` elements that the
//! browser sets, so no fonts are needed here.
//!
//! Every chart comes back as a [`Figure`]: the SVG, the number of data
//! points drawn, which the page records (`data-points`) so that a test can
//! tell a chart with data from an empty frame, and the legend, which the
//! page sets as HTML under the chart: outside the plot, it never covers a
//! curve, and the browser wraps its entries however many there are.
//!
//! Axes that count (epochs, steps, locations) are ticked at whole numbers
//! only ([`count_ticks`]); bar labels that would collide are turned upright
//! and, when even that is too tight, thinned ([`BarLabels`]).

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One drawn chart.
#[derive(Debug, Clone)]
pub struct Figure {
    pub svg: String,
    /// Data points (or bars, cells, map markers) drawn.
    pub points: usize,
    /// What the curves are, for the page to show beside the chart (empty:
    /// no legend).
    pub legend: Vec<LegendEntry>,
}

/// How a legend entry's line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Bold,
    /// Thin and pale (per-step values).
    Faint,
    /// A reference level, not data (chance).
    Dashed,
}

/// One entry of a [`Figure`]'s legend.
#[derive(Debug, Clone, PartialEq)]
pub struct LegendEntry {
    pub name: String,
    pub color: RGBColor,
    pub kind: LineKind,
}

/// A horizontal reference line of a line chart (a chance level), drawn
/// dashed across the plot and named in the legend.
#[derive(Debug, Clone)]
pub struct Reference {
    pub name: String,
    pub y: f64,
}

/// Colour of reference lines: grey, apart from the data's palette.
pub const REFERENCE_COLOR: RGBColor = RGBColor(90, 90, 90);

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
    Ok(Figure {
        svg,
        points,
        legend: Vec::new(),
    })
}

/// Tick positions for an axis that counts (epochs, steps, images) over
/// `lo..hi`: whole multiples of a step of 1, 2 or 5 times a power of ten,
/// at most `max_ticks` of them (a short run's epoch axis gets 1, 2, 3,
/// never 1.2).
pub fn count_ticks(lo: f64, hi: f64, max_ticks: usize) -> Vec<f64> {
    ticks(lo, hi, max_ticks, 0)
}

/// [`count_ticks`] for an axis of any values: the step may be a fraction.
pub fn nice_ticks(lo: f64, hi: f64, max_ticks: usize) -> Vec<f64> {
    ticks(lo, hi, max_ticks, -12)
}

/// Multiples of the smallest step `m * 10^p` (m in 1, 2, 5; p from
/// `min_power`) that puts at most `max_ticks` ticks in `lo..=hi`.
fn ticks(lo: f64, hi: f64, max_ticks: usize, min_power: i32) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi < lo {
        return Vec::new();
    }
    let wanted = (hi - lo) / max_ticks.max(1) as f64;
    let mut step = 1.0;
    'search: for power in min_power..=300 {
        for m in [1.0, 2.0, 5.0] {
            step = m * 10f64.powi(power);
            if step >= wanted {
                break 'search;
            }
        }
    }
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// An f64 axis ticked (labels and grid lines) at given values alone, so
/// that an axis that counts shows whole numbers only: plotters' own f64
/// axis picks fractional steps on short ranges.
#[derive(Clone)]
struct TickedAxis {
    range: RangedCoordf64,
    ticks: Vec<f64>,
}

impl TickedAxis {
    fn new(range: std::ops::Range<f64>, ticks: Vec<f64>) -> Self {
        Self {
            range: range.into(),
            ticks,
        }
    }
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.range.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.range()
    }
}

/// Curves over a shared x axis; non-finite points are left out.
pub fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    y_range: Option<(f64, f64)>,
) -> anyhow::Result<Figure> {
    line_chart_with_references(title, x_desc, y_desc, series, y_range, &[])
}

/// [`line_chart`] with horizontal reference lines (always in view: the y
/// range takes them in). The x axis counts (epochs or steps): it is ticked
/// at whole numbers.
pub fn line_chart_with_references(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    y_range: Option<(f64, f64)>,
    references: &[Reference],
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
    let (y0, y1) = references
        .iter()
        .filter(|r| r.y.is_finite())
        .fold((y0, y1), |(lo, hi), r| (lo.min(r.y), hi.max(r.y)));
    let x_range = padded(x0, x1);
    let x_ticks = count_ticks(x_range.start, x_range.end, 10);
    let mut figure = render((560, 320), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(TickedAxis::new(x_range.clone(), x_ticks), padded(y0, y1))
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
            chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(plot_error)?;
            if marker {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, s.color.filled())))
                    .map_err(plot_error)?;
            }
        }
        let (left, right) = (x_range.start, x_range.end);
        for r in references.iter().filter(|r| r.y.is_finite()) {
            chart
                .draw_series(DashedLineSeries::new(
                    [(left, r.y), (right, r.y)],
                    6,
                    4,
                    REFERENCE_COLOR.stroke_width(1),
                ))
                .map_err(plot_error)?;
        }
        Ok(drawn)
    })?;
    let named = series.iter().filter(|s| !s.name.is_empty());
    figure.legend = named
        .map(|s| LegendEntry {
            name: s.name.clone(),
            color: s.color,
            kind: if s.faint {
                LineKind::Faint
            } else {
                LineKind::Bold
            },
        })
        .chain(references.iter().map(|r| LegendEntry {
            name: r.name.clone(),
            color: REFERENCE_COLOR,
            kind: LineKind::Dashed,
        }))
        .collect();
    Ok(figure)
}

/// Pixel size plotters gives the tick labels' 12-point font in its SVG.
const LABEL_PX: f64 = 9.7;

/// A label's width in pixels at [`LABEL_PX`], on the generous side (the
/// browser's sans-serif, DejaVu Sans on Debian, sets digits 0.64 em wide).
fn label_px(s: &str) -> f64 {
    s.chars().count() as f64 * LABEL_PX * 0.68
}

/// Plot width of the 560-pixel charts: margins and the y label area off.
const PLOT_PX: f64 = 560.0 - 2.0 * 8.0 - 56.0;

/// How a bar chart's category labels sit under their bars without
/// touching: level when the widest fits its bar's slot, else upright
/// (rotated a quarter turn) and, when even a line's height is more than a
/// slot, only every `every`-th one.
#[derive(Debug, Clone, Copy, PartialEq)]
struct BarLabels {
    upright: bool,
    every: usize,
    /// Height of the label area (labels and the axis name), pixels.
    area: u32,
}

impl BarLabels {
    /// Upright labels longer than this many characters are cut (`…`).
    const MAX_CHARS: usize = 28;

    fn fit(labels: &[String]) -> Self {
        let slot = PLOT_PX / labels.len().max(1) as f64;
        let widest = labels.iter().map(|l| label_px(l)).fold(0.0, f64::max);
        if widest + 6.0 <= slot {
            return Self {
                upright: false,
                every: 1,
                area: 40,
            };
        }
        let line = LABEL_PX * 1.5;
        let shown = labels.iter().map(|l| label_px(&Self::cut(l)));
        Self {
            upright: true,
            every: (line / slot).ceil().max(1.0) as usize,
            area: (shown.fold(0.0, f64::max) + 34.0).ceil() as u32,
        }
    }

    fn cut(label: &str) -> String {
        if label.chars().count() <= Self::MAX_CHARS {
            return label.to_string();
        }
        let head: String = label.chars().take(Self::MAX_CHARS - 1).collect();
        head + "…"
    }
}

/// Vertical bars, one per label. Labels that do not fit level under their
/// bars stand upright, thinned when the bars are narrower than a line
/// ([`BarLabels`]); bars of whole numbers get a y axis of whole numbers.
pub fn bar_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    bars: &[(String, f64)],
    color: RGBColor,
) -> anyhow::Result<Figure> {
    let top = bars.iter().map(|b| b.1).fold(0.0f64, f64::max);
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let layout = BarLabels::fit(&names);
    let y_range = 0.0..padded(0.0, top).end;
    let whole = bars.iter().all(|b| b.1.fract() == 0.0);
    let y_ticks = match whole {
        true => count_ticks(0.0, y_range.end, 8),
        false => nice_ticks(0.0, y_range.end, 8),
    };
    render((560, 280 + layout.area), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(layout.area)
            .y_label_area_size(56)
            .build_cartesian_2d(
                categories(bars.len()).into_segmented(),
                TickedAxis::new(y_range, y_ticks),
            )
            .map_err(plot_error)?;
        let label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) if *i >= 0 && !layout.upright => {
                names.get(*i as usize).cloned().unwrap_or_default()
            }
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
        if layout.upright {
            let under_bars: Vec<(i32, i32)> = (0..names.len() as i32)
                .map(|i| chart.backend_coord(&(SegmentValue::CenterOf(i), 0.0)))
                .collect();
            upright_labels(root, &under_bars, &names, layout.every)?;
        }
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

/// Category labels drawn upright (every `every`-th), each starting just
/// under its bar's foot (`under_bars`, pixels) and reading upwards.
fn upright_labels(
    root: &DrawingArea<SVGBackend, Shift>,
    under_bars: &[(i32, i32)],
    names: &[String],
    every: usize,
) -> anyhow::Result<()> {
    let font = ("sans-serif", 12)
        .into_font()
        .transform(FontTransform::Rotate270)
        .color(&BLACK)
        .pos(Pos::new(HPos::Right, VPos::Center));
    let labelled = under_bars.iter().zip(names).step_by(every.max(1));
    for (&(x, y), name) in labelled {
        root.draw(&Text::new(BarLabels::cut(name), (x, y + 8), font.clone()))
            .map_err(plot_error)?;
    }
    Ok(())
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
        assert_eq!(f.legend[0].name, "infonce", "named in the legend");

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
    fn axes_that_count_are_ticked_at_whole_numbers() {
        assert_eq!(count_ticks(0.9, 3.1, 10), [1.0, 2.0, 3.0]);
        assert_eq!(count_ticks(0.95, 1.05, 10), [1.0], "a one-epoch run");
        assert_eq!(
            count_ticks(-2.0, 63.0, 10),
            [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
        );
        let long = count_ticks(0.0, 12_345.0, 10);
        assert!(
            long.len() <= 10 && long.iter().all(|t| t.fract() == 0.0),
            "{long:?}"
        );
        let fractions: Vec<String> = nice_ticks(0.0, 1.0, 5).iter().map(tick).collect();
        assert_eq!(fractions, ["0", "0.2", "0.4", "0.6", "0.8", "1"]);

        let f = line_chart_with_references(
            "loss",
            "epoch",
            "loss",
            &[Series {
                name: "geo CE".into(),
                points: vec![(1.0, 2.0), (2.0, 1.9), (3.0, 1.7)],
                color: PALETTE[1],
                faint: false,
            }],
            None,
            &[Reference {
                name: "chance".into(),
                y: 4f64.ln(),
            }],
        )
        .unwrap();
        // The x axis's labels are the texts centred on their tick.
        let centred: Vec<&str> = f
            .svg
            .split("<text")
            .filter(|t| t.contains("text-anchor=\"middle\""))
            .filter_map(|t| t.split('>').nth(1)?.split('<').next())
            .map(str::trim)
            .filter(|t| t.parse::<f64>().is_ok())
            .collect();
        assert_eq!(centred, ["1", "2", "3"], "whole epochs only");
        let names: Vec<(&str, LineKind)> =
            f.legend.iter().map(|e| (e.name.as_str(), e.kind)).collect();
        assert_eq!(
            names,
            [("geo CE", LineKind::Bold), ("chance", LineKind::Dashed)]
        );
        assert!(
            !f.svg.contains("geo CE"),
            "the legend is the page's, outside the plot"
        );
    }

    #[test]
    fn bar_labels_stand_upright_then_thin_out_when_bars_narrow() {
        let labels = |n: usize, text: &str| vec![text.to_string(); n];
        let level = BarLabels::fit(&labels(6, "6"));
        assert!(!level.upright && level.every == 1);
        let upright = BarLabels::fit(&labels(16, "3.75-4"));
        assert!(upright.upright && upright.every == 1, "{upright:?}");
        let thinned = BarLabels::fit(&labels(200, "3.75-4"));
        assert!(thinned.every > 1, "{thinned:?}");
        // Shown labels are a line apart at least.
        assert!(PLOT_PX / 200.0 * thinned.every as f64 >= LABEL_PX * 1.5);
        let long = BarLabels::fit(&labels(3, &"a-very-long-run-name".repeat(4)));
        assert!(long.upright && long.area < 250, "{long:?}");

        let bars: Vec<(String, f64)> = (0..16)
            .map(|i| {
                (
                    format!("{}-{}", i as f64 * 0.25, (i + 1) as f64 * 0.25),
                    3.0,
                )
            })
            .collect();
        let b = bar_chart("spans", "years", "locations", &bars, PALETTE[2]).unwrap();
        assert_eq!(
            b.svg.matches("rotate(270").count(),
            16 + 1,
            "16 labels and the y axis name"
        );
        assert!(
            !b.svg.contains(">\n1.5\n</text>"),
            "counts are ticked at whole numbers"
        );
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
