//! SVG line charts of the suite's results (plotters, text left to the viewer's fonts).

use std::path::Path;

use plotters::prelude::*;

/// One line: a name and a value per x position (`None`: not measured there).
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Dashed: a baseline rather than a tool.
    pub dashed: bool,
}

const COLOURS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// How the x axis reads.
pub enum XAxis<'a> {
    /// Numbers, linear.
    Linear,
    /// Positions 0, 1, … named by these labels.
    Categories(&'a [String]),
}

/// A chart of `lines`, y on a log scale when `log_y`, written to `path`, the legend where
/// the lines leave room for it.
#[expect(
    clippy::too_many_arguments,
    reason = "a chart's parts, each named at the call"
)]
pub fn chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x_axis: &XAxis<'_>,
    log_y: bool,
    legend: SeriesLabelPosition,
    lines: &[Line],
) -> anyhow::Result<()> {
    let points = || lines.iter().flat_map(|l| l.points.iter().copied());
    if points().next().is_none() {
        anyhow::bail!("{title}: nothing to plot");
    }
    let x_max = points().fold(f64::NEG_INFINITY, |a, (x, _)| a.max(x));
    let (mut y0, mut y1) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, y)| {
        (a.min(y), b.max(y))
    });
    #[expect(clippy::cast_precision_loss, reason = "a handful of categories")]
    let (x0, x1) = match x_axis {
        XAxis::Linear => (0.0, x_max * 1.05),
        XAxis::Categories(labels) => (-0.3, labels.len() as f64 - 0.7),
    };
    if log_y {
        y0 = (y0 / 1.5).max(1e-6);
        y1 *= 1.5;
    } else {
        y0 = 0.0;
        y1 *= 1.15;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }

    let root = SVGBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64);
    let label_of = |x: &f64| -> String {
        match x_axis {
            XAxis::Linear => format!("{x}"),
            XAxis::Categories(labels) => {
                let i = x.round();
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "checked to be a small non-negative integer"
                )]
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            }
        }
    };
    let n_labels = match x_axis {
        XAxis::Linear => 10,
        XAxis::Categories(labels) => labels.len() * 2 + 1,
    };
    // one drawing routine for both kinds of y axis
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_labels(n_labels)
                .x_label_formatter(&label_of)
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            for (i, line) in lines.iter().enumerate() {
                let colour = COLOURS[i % COLOURS.len()];
                let style = colour.stroke_width(2);
                if line.dashed {
                    chart
                        .draw_series(DashedLineSeries::new(line.points.clone(), 6, 4, style))?
                        .label(line.name.as_str())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                } else {
                    chart
                        .draw_series(LineSeries::new(line.points.clone(), style))?
                        .label(line.name.as_str())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                }
                chart.draw_series(
                    line.points
                        .iter()
                        .map(|&p| Circle::new(p, 3, colour.filled())),
                )?;
            }
            chart
                .configure_series_labels()
                .position(legend)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()?;
        }};
    }
    if log_y {
        draw!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())?);
    } else {
        draw!(builder.build_cartesian_2d(x0..x1, y0..y1)?);
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_every_line_named() {
        let dir = std::env::temp_dir().join(format!("dvnet-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.svg");
        let labels = vec!["1".to_owned(), "4".to_owned(), "16".to_owned()];
        chart(
            &path,
            "TCP through chains",
            "routers",
            "Gbit/s",
            &XAxis::Categories(&labels),
            false,
            SeriesLabelPosition::LowerLeft,
            &[
                Line {
                    name: "eBPF".into(),
                    points: vec![(0.0, 9.0), (1.0, 8.0), (2.0, 7.0)],
                    dashed: false,
                },
                Line {
                    name: "bare veth".into(),
                    points: vec![(0.0, 10.0), (2.0, 10.0)],
                    dashed: true,
                },
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        for text in ["TCP through chains", "eBPF", "bare veth", "16"] {
            assert!(svg.contains(text), "no {text:?} in the SVG");
        }
    }
}
