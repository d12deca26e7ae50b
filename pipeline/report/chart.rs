//! Inline SVG charts (plotters' SVG backend; text is left to the browser, no font files).
//!
//! Three shapes cover every report: lines over a numeric x axis (curves, histories), grouped
//! vertical bars over categories (deciles, snapshots, bands), and horizontal bars (feature
//! importance). Each returns one `<svg>` element as a string.

use std::ops::Range;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 380;

/// Okabe-Ito: distinguishable for colour-blind readers.
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(120, 120, 120),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn chart_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Data(format!("drawing the chart `{what}`: {e}"))
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The series legend, boxed, at `position`.
fn legend<'a>(chart: &mut Chart<'a, 'a>, position: SeriesLabelPosition, what: &str) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| chart_err(what, e))
}

/// The category index of an axis tick at `v` (ticks sit on whole numbers `0..n`).
fn tick(v: f64, n: usize) -> Option<usize> {
    let i = v.round();
    ((v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n).then_some(i as usize)
}

/// One line of a line chart.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: usize,
    pub dashed: bool,
    /// Draw the points as dots (small series such as deciles or weekly values).
    pub dots: bool,
    /// Only small dots, no line between them (a scatter of many points).
    pub scatter: bool,
}

impl Line {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>, color: usize) -> Line {
        Line { name: name.into(), points, color, dashed: false, dots: false, scatter: false }
    }

    pub fn dashed(mut self) -> Line {
        self.dashed = true;
        self
    }

    pub fn dots(mut self) -> Line {
        self.dots = true;
        self
    }

    pub fn scatter(mut self) -> Line {
        self.scatter = true;
        self
    }
}

/// A labelled vertical marker line at `x`.
#[derive(Debug, Clone)]
pub struct Marker {
    pub x: f64,
    pub label: String,
    pub color: usize,
}

/// A horizontal reference line at `y`.
#[derive(Debug, Clone)]
pub struct HLine {
    pub y: f64,
    pub label: String,
    pub color: usize,
}

#[derive(Debug, Clone, Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x: Option<Range<f64>>,
    pub y: Option<Range<f64>>,
    pub lines: Vec<Line>,
    pub markers: Vec<Marker>,
    pub hlines: Vec<HLine>,
    /// x values are days since 1970-01-01, labelled as dates.
    pub dates: bool,
    /// Legend at the lower right instead of the upper right.
    pub legend_low: bool,
}

fn span(values: impl Iterator<Item = f64>, pad: f64) -> Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    if hi - lo < 1e-12 {
        return (lo - 1.0)..(hi + 1.0);
    }
    let p = (hi - lo) * pad;
    (lo - p)..(hi + p)
}

fn render(draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| chart_err("background", e))?;
        draw(&root)?;
        root.present().map_err(|e| chart_err("present", e))?;
    }
    Ok(svg)
}

fn date_label(x: f64) -> String {
    crate::schema::date_of_day(x.round() as i32).map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

/// Lines over a numeric x axis.
pub fn line_chart(c: &LineChart) -> Result<String> {
    let x = c.x.clone().unwrap_or_else(|| {
        span(
            c.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)).chain(c.markers.iter().map(|m| m.x)),
            0.02,
        )
    });
    let y = c.y.clone().unwrap_or_else(|| {
        span(
            c.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).chain(c.hlines.iter().map(|h| h.y)),
            0.08,
        )
    });
    let what = c.title.as_str();
    render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&c.title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(62)
            .build_cartesian_2d(x.clone(), y.clone())
            .map_err(|e| chart_err(what, e))?;
        let date_fmt = |v: &f64| date_label(*v);
        let num_fmt = |v: &f64| crate::format::fmt_axis(*v);
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(c.x_label.as_str())
            .y_desc(c.y_label.as_str())
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 12))
            .y_label_formatter(&num_fmt)
            .x_labels(6);
        if c.dates {
            mesh.x_label_formatter(&date_fmt);
        } else {
            mesh.x_label_formatter(&num_fmt);
        }
        mesh.draw().map_err(|e| chart_err(what, e))?;
        for h in &c.hlines {
            let style = ShapeStyle::from(color(h.color)).stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new(vec![(x.start, h.y), (x.end, h.y)], 4, 4, style))
                .map_err(|e| chart_err(what, e))?
                .label(h.label.as_str())
                .legend(move |(a, b)| PathElement::new(vec![(a, b), (a + 18, b)], style));
        }
        for m in &c.markers {
            let style = ShapeStyle::from(color(m.color)).stroke_width(2);
            chart
                .draw_series(LineSeries::new(vec![(m.x, y.start), (m.x, y.end)], style))
                .map_err(|e| chart_err(what, e))?
                .label(m.label.as_str())
                .legend(move |(a, b)| PathElement::new(vec![(a, b), (a + 18, b)], style));
        }
        for l in &c.lines {
            let style = ShapeStyle::from(color(l.color)).stroke_width(2);
            let pts = l.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite());
            if l.scatter {
                let dot = ShapeStyle::from(color(l.color).mix(0.5)).filled();
                chart.draw_series(pts.map(|p| Circle::new(p, 2, dot))).map_err(|e| chart_err(what, e))?;
                continue;
            }
            let series = if l.dashed {
                chart.draw_series(DashedLineSeries::new(pts.collect::<Vec<_>>(), 6, 4, style))
            } else {
                chart.draw_series(LineSeries::new(pts.collect::<Vec<_>>(), style))
            };
            let anno = series.map_err(|e| chart_err(what, e))?;
            if !l.name.is_empty() {
                anno.label(l.name.as_str())
                    .legend(move |(a, b)| PathElement::new(vec![(a, b), (a + 18, b)], style));
            }
            if l.dots {
                chart
                    .draw_series(l.points.iter().map(|&p| Circle::new(p, 3, style.filled())))
                    .map_err(|e| chart_err(what, e))?;
            }
        }
        let has_legend =
            c.lines.iter().any(|l| !l.name.is_empty()) || !c.markers.is_empty() || !c.hlines.is_empty();
        if has_legend {
            legend(
                &mut chart,
                if c.legend_low { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperRight },
                what,
            )?;
        }
        Ok(())
    })
}

/// Grouped vertical bars: one group of bars per category, one bar per series.
#[derive(Debug, Clone, Default)]
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// (series name, one value per category)
    pub series: Vec<(String, Vec<f64>)>,
    /// A line over the categories on the same axis (e.g. a rate), drawn with dots.
    pub overlay: Option<(String, Vec<f64>)>,
}

pub fn bar_chart(c: &BarChart) -> Result<String> {
    let n = c.categories.len().max(1);
    let values = c
        .series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .chain(c.overlay.iter().flat_map(|o| o.1.iter().copied()));
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi - lo < 1e-12 {
        hi = lo + 1.0;
    }
    let y = (lo - (hi - lo) * 0.02)..(hi + (hi - lo) * 0.1);
    let what = c.title.as_str();
    let k = c.series.len().max(1) as f64;
    render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&c.title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(62)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), y.clone())
            .map_err(|e| chart_err(what, e))?;
        let cat_fmt =
            |v: &f64| tick(*v, c.categories.len()).map_or(String::new(), |i| c.categories[i].clone());
        let num_fmt = |v: &f64| crate::format::fmt_axis(*v);
        chart
            .configure_mesh()
            .x_desc(c.x_label.as_str())
            .y_desc(c.y_label.as_str())
            .disable_x_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 12))
            .x_labels(n.min(14))
            .x_label_formatter(&cat_fmt)
            .y_label_formatter(&num_fmt)
            .draw()
            .map_err(|e| chart_err(what, e))?;
        let width = 0.8 / k;
        for (s, (name, vals)) in c.series.iter().enumerate() {
            let style = color(s).filled();
            let left = -0.4 + s as f64 * width;
            chart
                .draw_series(vals.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| {
                    let x0 = i as f64 + left;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.92, v)], style)
                }))
                .map_err(|e| chart_err(what, e))?
                .label(name.as_str())
                .legend(move |(a, b)| Rectangle::new([(a, b - 5), (a + 12, b + 5)], style));
        }
        if let Some((name, vals)) = &c.overlay {
            let style = ShapeStyle::from(color(5)).stroke_width(2);
            let pts: Vec<(f64, f64)> =
                vals.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| (i as f64, v)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(|e| chart_err(what, e))?
                .label(name.as_str())
                .legend(move |(a, b)| PathElement::new(vec![(a, b), (a + 18, b)], style));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, style.filled())))
                .map_err(|e| chart_err(what, e))?;
        }
        if c.series.len() > 1 || c.overlay.is_some() {
            legend(&mut chart, SeriesLabelPosition::UpperLeft, what)?;
        }
        Ok(())
    })
}

/// Horizontal bars, one per label, largest first (top), one or two series side by side.
#[derive(Debug, Clone, Default)]
pub struct HBarChart {
    pub title: String,
    pub x_label: String,
    pub labels: Vec<String>,
    pub series: Vec<(String, Vec<f64>)>,
}

pub fn hbar_chart(c: &HBarChart) -> Result<String> {
    let n = c.labels.len().max(1);
    let hi =
        c.series.iter().flat_map(|s| s.1.iter().copied()).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    let hi = if hi <= 0.0 { 1.0 } else { hi * 1.08 };
    let what = c.title.as_str();
    let k = c.series.len().max(1) as f64;
    let height = (60 + 22 * n as u32).max(HEIGHT);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| chart_err(what, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&c.title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(150)
            .build_cartesian_2d(0f64..hi, -0.5f64..(n as f64 - 0.5))
            .map_err(|e| chart_err(what, e))?;
        // Row 0 at the top.
        let label_fmt = |v: &f64| tick(*v, n).map_or(String::new(), |i| c.labels[n - 1 - i].clone());
        let num_fmt = |v: &f64| crate::format::fmt_axis(*v);
        chart
            .configure_mesh()
            .x_desc(c.x_label.as_str())
            .disable_y_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 12))
            .y_labels(n)
            .y_label_formatter(&label_fmt)
            .x_label_formatter(&num_fmt)
            .draw()
            .map_err(|e| chart_err(what, e))?;
        let h = 0.8 / k;
        for (s, (name, vals)) in c.series.iter().enumerate() {
            let style = color(s).filled();
            chart
                .draw_series(vals.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| {
                    let row = (n - 1 - i) as f64;
                    let y0 = row + 0.4 - (s as f64 + 1.0) * h;
                    Rectangle::new([(0.0, y0), (v, y0 + h * 0.92)], style)
                }))
                .map_err(|e| chart_err(what, e))?
                .label(name.as_str())
                .legend(move |(a, b)| Rectangle::new([(a, b - 5), (a + 12, b + 5)], style));
        }
        if c.series.len() > 1 {
            legend(&mut chart, SeriesLabelPosition::LowerRight, what)?;
        }
        root.present().map_err(|e| chart_err(what, e))?;
    }
    Ok(svg)
}
