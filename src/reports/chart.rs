//! A report's chart as numbers: the values per category and series, and
//! where each bar, line and tick goes in the SVG the template draws.

use serde::Serialize;

/// How a chart's value is made from the rows of one category and series.
#[derive(Debug, Clone, PartialEq)]
pub enum Measure {
    /// The sum of a column.
    Sum(String),
    /// 100 × the sum of one column / the sum of another (a score).
    Ratio(String, String),
}

/// Width and height of every chart, in SVG units.
pub const WIDTH: f64 = 760.0;
pub const HEIGHT: f64 = 340.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 72.0;

/// The colours of the series, in order (then again).
const PALETTE: [&str; 8] = [
    "#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d69e2e", "#319795", "#b83280", "#4a5568",
];
/// The colour of a flagged bar (the bottom team).
const FLAGGED: &str = "#c53030";

#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub colour: &'static str,
    pub category: String,
    pub series: String,
    pub value: String,
    pub flagged: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub series: String,
    pub colour: &'static str,
    /// `x,y x,y ...` for a polyline.
    pub points: String,
    pub dots: Vec<Dot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dot {
    pub x: f64,
    pub y: f64,
    pub category: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub x: f64,
    pub y: f64,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LegendItem {
    pub label: String,
    pub colour: &'static str,
}

/// Everything the template needs to draw one chart.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub kind: &'static str,
    pub width: f64,
    pub height: f64,
    pub plot_left: f64,
    pub plot_right: f64,
    pub plot_top: f64,
    pub plot_bottom: f64,
    pub bars: Vec<Bar>,
    pub lines: Vec<Line>,
    pub y_ticks: Vec<Tick>,
    pub x_labels: Vec<Tick>,
    /// Category labels are turned when many.
    pub rotate_labels: bool,
    pub legend: Vec<LegendItem>,
    pub y_label: String,
    pub empty: bool,
}

/// The input of a chart: one entry per row.
pub struct Point<'a> {
    pub category: &'a str,
    pub series: &'a str,
    /// The measure's column(s): (sum or numerator, denominator).
    pub value: (f64, f64),
    pub flagged: bool,
}

fn round_up(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= max {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Lay out a bar (`line == false`) or line chart of `points`: categories
/// and series in order of first appearance, values summed (or the ratio
/// of sums) over the points sharing both.
pub fn layout(points: &[Point<'_>], measure: &Measure, line: bool) -> Chart {
    let mut categories: Vec<&str> = Vec::new();
    let mut series: Vec<&str> = Vec::new();
    for p in points {
        if !categories.contains(&p.category) {
            categories.push(p.category);
        }
        if !series.contains(&p.series) {
            series.push(p.series);
        }
    }
    // (sum or numerator, denominator, flagged, seen) per category × series.
    let mut cells = vec![(0.0, 0.0, false, false); categories.len() * series.len()];
    for p in points {
        let c = categories
            .iter()
            .position(|c| *c == p.category)
            .unwrap_or(0);
        let s = series.iter().position(|s| *s == p.series).unwrap_or(0);
        let cell = &mut cells[c * series.len() + s];
        cell.0 += p.value.0;
        cell.1 += p.value.1;
        cell.2 |= p.flagged;
        cell.3 = true;
    }
    let ratio = matches!(measure, Measure::Ratio(..));
    let value = |cell: &(f64, f64, bool, bool)| -> Option<f64> {
        if !cell.3 {
            return None;
        }
        if ratio {
            (cell.1 > 0.0).then(|| 100.0 * cell.0 / cell.1)
        } else {
            Some(cell.0)
        }
    };
    let max = cells.iter().filter_map(value).fold(0.0, f64::max);
    let top = if ratio { 100.0 } else { round_up(max) };
    let (plot_left, plot_right) = (LEFT, WIDTH - RIGHT);
    let (plot_top, plot_bottom) = (TOP, HEIGHT - BOTTOM);
    let plot_h = plot_bottom - plot_top;
    let y_of = |v: f64| plot_bottom - plot_h * (v / top).clamp(0.0, 1.0);
    let y_ticks = (0..=5)
        .map(|i| {
            let v = top * f64::from(i) / 5.0;
            Tick {
                x: plot_left,
                y: y_of(v),
                label: fmt(v),
            }
        })
        .collect();
    let n = categories.len().max(1) as f64;
    let group = (plot_right - plot_left) / n;
    let x_labels = categories
        .iter()
        .enumerate()
        .map(|(i, c)| Tick {
            x: plot_left + group * (i as f64 + 0.5),
            y: plot_bottom + 14.0,
            label: (*c).to_string(),
        })
        .collect();
    let colour = |s: usize| PALETTE[s % PALETTE.len()];
    let mut bars = Vec::new();
    let mut lines = Vec::new();
    if line {
        for (s, name) in series.iter().enumerate() {
            let mut dots = Vec::new();
            for (c, cat) in categories.iter().enumerate() {
                if let Some(v) = value(&cells[c * series.len() + s]) {
                    dots.push(Dot {
                        x: plot_left + group * (c as f64 + 0.5),
                        y: y_of(v),
                        category: (*cat).to_string(),
                        value: fmt(v),
                    });
                }
            }
            lines.push(Line {
                series: (*name).to_string(),
                colour: colour(s),
                points: dots
                    .iter()
                    .map(|d| format!("{:.1},{:.1}", d.x, d.y))
                    .collect::<Vec<_>>()
                    .join(" "),
                dots,
            });
        }
    } else {
        let width = group * 0.8 / series.len().max(1) as f64;
        for (c, cat) in categories.iter().enumerate() {
            for (s, name) in series.iter().enumerate() {
                let cell = &cells[c * series.len() + s];
                let Some(v) = value(cell) else { continue };
                let y = y_of(v);
                bars.push(Bar {
                    x: plot_left + group * (c as f64 + 0.1) + width * s as f64,
                    y,
                    width,
                    height: plot_bottom - y,
                    colour: if cell.2 { FLAGGED } else { colour(s) },
                    category: (*cat).to_string(),
                    series: (*name).to_string(),
                    value: fmt(v),
                    flagged: cell.2,
                });
            }
        }
    }
    let legend = if series.len() > 1 || series.first().is_some_and(|s| !s.is_empty()) {
        series
            .iter()
            .enumerate()
            .map(|(i, s)| LegendItem {
                label: (*s).to_string(),
                colour: colour(i),
            })
            .collect()
    } else {
        Vec::new()
    };
    Chart {
        kind: if line { "line" } else { "bar" },
        width: WIDTH,
        height: HEIGHT,
        plot_left,
        plot_right,
        plot_top,
        plot_bottom,
        bars,
        lines,
        y_ticks,
        rotate_labels: categories.len() > 6 || categories.iter().any(|c| c.chars().count() > 10),
        x_labels,
        legend,
        y_label: match measure {
            Measure::Sum(c) => c.clone(),
            Measure::Ratio(..) => "score".into(),
        },
        empty: points.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_summed_or_scored_per_category_and_series() {
        let pts = [
            Point {
                category: "north",
                series: "",
                value: (3.0, 0.0),
                flagged: false,
            },
            Point {
                category: "north",
                series: "",
                value: (2.0, 0.0),
                flagged: false,
            },
            Point {
                category: "south",
                series: "",
                value: (10.0, 0.0),
                flagged: true,
            },
        ];
        let c = layout(&pts, &Measure::Sum("n".into()), false);
        assert_eq!(c.bars.len(), 2);
        assert_eq!(c.bars[0].value, "5");
        assert_eq!(c.bars[1].value, "10");
        assert!(c.bars[1].flagged && !c.bars[0].flagged);
        // 10 rounds up to a top of 10: the south bar fills the plot.
        assert!((c.bars[1].height - (HEIGHT - BOTTOM - TOP)).abs() < 1e-9);
        assert!(c.legend.is_empty());
        // A ratio of sums, not a mean of ratios: (9 + 1) / (10 + 10).
        let pts = [
            Point {
                category: "a",
                series: "valid",
                value: (9.0, 10.0),
                flagged: false,
            },
            Point {
                category: "a",
                series: "valid",
                value: (1.0, 10.0),
                flagged: false,
            },
            Point {
                category: "b",
                series: "valid",
                value: (5.0, 5.0),
                flagged: false,
            },
        ];
        let c = layout(&pts, &Measure::Ratio("p".into(), "c".into()), true);
        assert_eq!(c.lines.len(), 1);
        assert_eq!(c.lines[0].dots.len(), 2);
        assert_eq!(c.lines[0].dots[0].value, "50");
        assert_eq!(c.lines[0].dots[1].value, "100");
        assert_eq!(c.legend.len(), 1);
    }
}
