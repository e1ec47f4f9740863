//! SVG plots with plotters (its SVG backend writes text as <text>, so no font library is
//! needed).

use plotters::prelude::*;

use super::{pareto, Row};

/// The cost a quality-vs-cost plot puts on its x axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostAxis {
    /// Measured decode tokens/s (higher is cheaper).
    DecodeSpeed,
    /// FLOPs per token (lower is cheaper).
    Flops,
}

impl CostAxis {
    /// Lower is cheaper.
    pub fn cost(self, r: &Row) -> Option<f64> {
        match self {
            CostAxis::DecodeSpeed => (r.tg_tokens_per_sec > 0.0).then(|| 1.0 / r.tg_tokens_per_sec),
            CostAxis::Flops => (r.flops_per_token > 0.0).then_some(r.flops_per_token),
        }
    }

    fn x(self, r: &Row) -> f64 {
        match self {
            CostAxis::DecodeSpeed => r.tg_tokens_per_sec,
            CostAxis::Flops => r.flops_per_token / 1e9,
        }
    }

    fn label(self) -> &'static str {
        match self {
            CostAxis::DecodeSpeed => "decode tokens/s (measured) →  faster",
            CostAxis::Flops => "GFLOPs per token (← cheaper)",
        }
    }
}

type Svg = Result<String, String>;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Range around `v` with margins of `below` and `above` times its span (or its value
/// when flat); labels sit right of the points, so x axes get more room above.
fn padded(v: impl Iterator<Item = f64> + Clone, below: f64, above: f64) -> std::ops::Range<f64> {
    let lo = v.clone().fold(f64::INFINITY, f64::min);
    let hi = v.fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    (lo - below * span)..(hi + above * span)
}

/// Perplexity against cost, one labelled point per variant, the Pareto frontier drawn
/// as a line and the goal region (≥ `speedup`× the first row's speed, ≤ `max_ppl`× its
/// perplexity) shaded on the speed plot.
pub fn quality_vs_cost_svg(rows: &[Row], axis: CostAxis, goal: Option<(f64, f64)>) -> Svg {
    let pts: Vec<(usize, f64, f64)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, axis.x(r), r.ppl?)))
        .filter(|p| p.1 > 0.0)
        .collect();
    if pts.is_empty() {
        return Err("no variant has both a cost and a perplexity".into());
    }
    let base = rows.first().filter(|r| r.ppl.is_some());
    let goal_box = match (axis, goal, base) {
        (CostAxis::DecodeSpeed, Some((sp, pp)), Some(b)) => {
            Some((b.tg_tokens_per_sec * sp, b.ppl.unwrap_or(0.0) * pp))
        }
        _ => None,
    };
    // A variant far off in perplexity (early exit can reach 10⁴) would flatten the
    // others: the axis stops at 4× the best, and such points sit on its top edge.
    let best = pts.iter().map(|p| p.2).fold(f64::INFINITY, f64::min);
    let cap = 4.0 * best;
    let pts: Vec<(usize, f64, f64, bool)> = pts
        .into_iter()
        .map(|(i, x, y)| (i, x, y.min(cap), y > cap))
        .collect();
    let xs = pts.iter().map(|p| p.1).chain(goal_box.map(|g| g.0));
    let ys = pts.iter().map(|p| p.2).chain(goal_box.map(|g| g.1));
    let (xr, yr) = (padded(xs, 0.08, 0.25), padded(ys, 0.12, 0.12));
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (620, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(xr.clone(), yr.clone())
            .map_err(err)?;
        chart
            .configure_mesh()
            .axis_desc_style(("sans-serif", 14))
            .label_style(("sans-serif", 12))
            .x_desc(axis.label())
            .y_desc("WikiText-2 PPL (lower is better)")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        if let Some((gx, gy)) = goal_box {
            let x1 = xr.end.max(gx);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(gx, yr.start), (x1, gy)],
                    RGBColor(44, 160, 44).mix(0.10).filled(),
                )))
                .map_err(err)?
                .label("goal region")
                .legend(|(x, y)| {
                    Rectangle::new(
                        [(x, y - 5), (x + 14, y + 5)],
                        RGBColor(44, 160, 44).mix(0.3).filled(),
                    )
                });
        }
        let front = pareto(rows, axis);
        let line: Vec<(f64, f64)> = front
            .iter()
            .filter_map(|&i| Some((axis.x(&rows[i]), rows[i].ppl?.min(cap))))
            .collect();
        chart
            .draw_series(LineSeries::new(line, RED.stroke_width(2)))
            .map_err(err)?
            .label("Pareto frontier")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], RED.stroke_width(2)));
        let (w, h) = (xr.end - xr.start, yr.end - yr.start);
        for (k, &(i, x, y, off)) in pts.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let on_front = front.contains(&i);
            let size = if on_front { 6 } else { 4 };
            let label = match (off, rows[i].ppl) {
                (true, Some(p)) => format!("{} (PPL {p:.0}, off scale ↑)", rows[i].variant),
                _ => rows[i].variant.clone(),
            };
            // Points that (nearly) coincide get their labels stacked downwards.
            let crowd = pts[..k]
                .iter()
                .filter(|p| {
                    (off && p.3) || (((p.1 - x) / w).abs() < 0.08 && ((p.2 - y) / h).abs() < 0.04)
                })
                .count() as i32;
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((x, y))
                        + Circle::new((0, 0), size, color.filled())
                        + Text::new(
                            label,
                            (8, -12 + 15 * crowd),
                            ("sans-serif", 13).into_font().color(&BLACK),
                        ),
                ))
                .map_err(err)?;
        }
        legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        root.present().map_err(err)?;
    }
    Ok(buf)
}

/// Axes of f64 × f64, drawn to SVG.
type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The series legend, framed on a translucent background.
fn legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(position)
        .draw()
        .map_err(err)
}

/// Axes for a per-block figure: blocks 0..n on x, 0..top (percent) on y.
fn per_block_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    n: usize,
    top: f64,
    x_desc: &str,
    y_desc: &str,
) -> Result<Chart<'a, 'b>, String> {
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(root)
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(52)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..(top * 1.15).max(1.0))
        .map_err(err)?;
    chart
        .configure_mesh()
        .axis_desc_style(("sans-serif", 14))
        .label_style(("sans-serif", 12))
        .x_desc(x_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_desc)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// Percentage of zero weights per block, one line per variant that has any.
pub fn sparsity_svg(rows: &[Row]) -> Svg {
    let shown: Vec<&Row> = rows
        .iter()
        .filter(|r| r.layer_sparsity.iter().any(|&s| s > 0.001))
        .collect();
    if shown.is_empty() {
        return Err("no variant has zero weights".into());
    }
    let n = shown
        .iter()
        .map(|r| r.layer_sparsity.len())
        .max()
        .unwrap_or(1);
    let top = shown
        .iter()
        .flat_map(|r| r.layer_sparsity.iter())
        .fold(0.0f64, |a, &b| a.max(b))
        * 100.0;
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (620, 360)).into_drawing_area();
        let mut chart = per_block_chart(&root, n, top, "block", "zero weights %")?;
        for (k, r) in shown.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let pts: Vec<(f64, f64)> = r
                .layer_sparsity
                .iter()
                .enumerate()
                .map(|(i, &s)| (i as f64, 100.0 * s))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(r.variant.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(err)?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        root.present().map_err(err)?;
    }
    Ok(buf)
}

/// Share of decoded tokens by the number of blocks they ran (early exit).
pub fn exit_histogram_svg(row: &Row) -> Svg {
    let total: usize = row.exit_histogram.iter().sum();
    if total == 0 {
        return Err(format!("{} has no exit statistics", row.variant));
    }
    let n = row.exit_histogram.len();
    let shares: Vec<f64> = row
        .exit_histogram
        .iter()
        .map(|&c| 100.0 * c as f64 / total as f64)
        .collect();
    let top = shares.iter().fold(0.0f64, |a, &b| a.max(b));
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (620, 320)).into_drawing_area();
        let x_desc = format!("blocks run before the token was emitted ({})", row.variant);
        let mut chart = per_block_chart(&root, n, top, &x_desc, "decoded tokens %")?;
        chart
            .draw_series(
                shares
                    .iter()
                    .enumerate()
                    .filter(|(_, &s)| s > 0.0)
                    .map(|(k, &s)| {
                        Rectangle::new(
                            [(k as f64 - 0.4, 0.0), (k as f64 + 0.4, s)],
                            PALETTE[0].filled(),
                        )
                    }),
            )
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(buf)
}
