//! `--plot FILE.svg`: a hand-written SVG chart of a load run, throughput per second
//! above p99 latency per second (PUT and GET apart), on a shared time axis, each
//! panel with a legend.
//!
//! No plotting library: two panels of polylines with nice-number gridlines are a
//! few dozen SVG elements, and the file opens in any browser.

use std::io;
use std::path::Path;

use super::report::human_rate;
use super::timeline::TimelinePoint;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 560.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TITLE_HEIGHT: f64 = 60.0;
const PANEL_GAP: f64 = 60.0;
const BOTTOM: f64 = 50.0;
const PANEL_HEIGHT: f64 = (HEIGHT - TITLE_HEIGHT - PANEL_GAP - BOTTOM) / 2.0;
const PLOT_WIDTH: f64 = WIDTH - LEFT - RIGHT;
const Y_TICKS: usize = 4;

/// Writes the chart of `timeline` to `path`.
pub fn write_svg(path: &Path, title: &str, timeline: &[TimelinePoint]) -> io::Result<()> {
    std::fs::write(path, render_svg(title, timeline))
}

/// The chart as an SVG document.
pub fn render_svg(title: &str, timeline: &[TimelinePoint]) -> String {
    let mut svg = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{:.1}\" y=\"30\" text-anchor=\"middle\" font-size=\"16\">{}</text>\n",
        WIDTH / 2.0,
        escape(title)
    );
    let seconds = timeline.len();
    let throughput = Series {
        label: "all requests",
        color: "#1f77b4",
        values: timeline
            .iter()
            .map(|point| Some(point.ops_per_sec))
            .collect(),
    };
    let put_p99 = Series {
        label: "PUT p99",
        color: "#d62728",
        values: timeline.iter().map(|point| point.write_p99_us).collect(),
    };
    let get_p99 = Series {
        label: "GET p99",
        color: "#2ca02c",
        values: timeline.iter().map(|point| point.read_p99_us).collect(),
    };
    let panels = [
        Panel {
            top: TITLE_HEIGHT,
            label: "throughput (requests/s)",
            format: human_rate,
        },
        Panel {
            top: TITLE_HEIGHT + PANEL_HEIGHT + PANEL_GAP,
            label: "p99 latency",
            format: human_micros,
        },
    ];
    let shown = |series: Series| series.values.iter().any(Option::is_some).then_some(series);
    let contents = [
        shown(throughput).into_iter().collect::<Vec<_>>(),
        [put_p99, get_p99].into_iter().filter_map(shown).collect(),
    ];
    for (panel, series) in panels.iter().zip(&contents) {
        panel.draw(&mut svg, series, seconds);
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds</text>\n</svg>\n",
        LEFT + PLOT_WIDTH / 2.0,
        HEIGHT - 12.0
    ));
    svg
}

/// One line of a panel: a value per second, `None` where it had no data.
struct Series {
    label: &'static str,
    color: &'static str,
    values: Vec<Option<f64>>,
}

/// One chart panel: a frame, gridlines, axis labels, its series and their
/// legend.
struct Panel {
    top: f64,
    label: &'static str,
    format: fn(f64) -> String,
}

impl Panel {
    fn draw(&self, svg: &mut String, series: &[Series], seconds: usize) {
        let max = nice_ceiling(
            series
                .iter()
                .flat_map(|series| series.values.iter().flatten())
                .copied()
                .fold(0.0, f64::max),
        );
        svg.push_str(&format!(
            "<g>\n<text x=\"{LEFT}\" y=\"{:.1}\" font-weight=\"bold\">{}</text>\n",
            self.top - 8.0,
            escape(self.label)
        ));
        self.y_grid(svg, max);
        svg.push_str(&format!(
            "<rect x=\"{LEFT}\" y=\"{:.1}\" width=\"{PLOT_WIDTH}\" height=\"{PANEL_HEIGHT}\" \
             fill=\"none\" stroke=\"#888\"/>\n",
            self.top
        ));
        self.x_ticks(svg, seconds);
        if series.is_empty() {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#888\">no data</text>\n",
                LEFT + PLOT_WIDTH / 2.0,
                self.top + PANEL_HEIGHT / 2.0
            ));
        }
        for line in series {
            self.series(svg, line, max, seconds);
        }
        self.legend(svg, series);
        svg.push_str("</g>\n");
    }

    /// A key in the panel's top right corner: a short stroke in each
    /// series' colour, then its name.
    fn legend(&self, svg: &mut String, series: &[Series]) {
        const ROW: f64 = 16.0;
        const KEY_WIDTH: f64 = 110.0;
        let x = LEFT + PLOT_WIDTH - KEY_WIDTH;
        for (row, line) in series.iter().enumerate() {
            let y = self.top + 14.0 + row as f64 * ROW;
            svg.push_str(&format!(
                "<line class=\"legend\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" \
                 stroke=\"{}\" stroke-width=\"2\"/>\n\
                 <text x=\"{:.1}\" y=\"{y:.1}\">{}</text>\n",
                y - 4.0,
                x + 20.0,
                y - 4.0,
                line.color,
                x + 26.0,
                escape(line.label)
            ));
        }
    }

    fn y_grid(&self, svg: &mut String, max: f64) {
        for tick in 0..=Y_TICKS {
            let value = max * tick as f64 / Y_TICKS as f64;
            let y = self.y(value, max);
            svg.push_str(&format!(
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                LEFT + PLOT_WIDTH,
                LEFT - 6.0,
                y + 4.0,
                escape(&(self.format)(value))
            ));
        }
    }

    fn x_ticks(&self, svg: &mut String, seconds: usize) {
        let span = seconds.max(1) as f64;
        let step = nice_ceiling(span / 10.0).max(1.0);
        let bottom = self.top + PANEL_HEIGHT;
        let mut second = 0.0;
        while second <= span {
            let x = LEFT + second / span * PLOT_WIDTH;
            svg.push_str(&format!(
                "<line x1=\"{x:.1}\" y1=\"{bottom:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#888\"/>\n\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{second}</text>\n",
                bottom + 5.0,
                bottom + 18.0
            ));
            second += step;
        }
    }

    /// The series as a polyline, each point at the middle of its second;
    /// seconds without data are left out.
    fn series(&self, svg: &mut String, series: &Series, max: f64, seconds: usize) {
        let span = seconds.max(1) as f64;
        let points: Vec<String> = series
            .values
            .iter()
            .enumerate()
            .filter_map(|(index, value)| {
                let value = (*value)?;
                let x = LEFT + (index as f64 + 0.5) / span * PLOT_WIDTH;
                Some(format!("{x:.1},{:.1}", self.y(value, max)))
            })
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n",
            series.color,
            points.join(" ")
        ));
    }

    fn y(&self, value: f64, max: f64) -> f64 {
        self.top + PANEL_HEIGHT * (1.0 - value / max)
    }
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `value` (1 for nothing to show).
fn nice_ceiling(value: f64) -> f64 {
    if !value.is_finite() || value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= value * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

fn human_micros(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Escapes text for SVG content and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(second: u32, ops_per_sec: f64, p99_us: f64) -> TimelinePoint {
        TimelinePoint {
            second,
            ops_per_sec,
            p99_us,
            write_p99_us: Some(p99_us),
            read_p99_us: Some(p99_us / 2.0),
            errors: 0,
            rss_bytes: None,
        }
    }

    /// Checks that every element is closed in order and the root is `<svg>`.
    fn assert_well_formed(svg: &str) {
        let mut open: Vec<&str> = Vec::new();
        let mut roots = 0;
        for tag in svg
            .split('<')
            .skip(1)
            .map(|rest| &rest[..rest.find('>').unwrap()])
        {
            if tag.starts_with('?') || tag.ends_with('/') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(name), "unbalanced </{name}>");
            } else {
                let name = tag.split_whitespace().next().unwrap();
                if open.is_empty() {
                    assert_eq!(name, "svg");
                    roots += 1;
                }
                open.push(name);
            }
        }
        assert!(open.is_empty(), "unclosed: {open:?}");
        assert_eq!(roots, 1);
    }

    #[test]
    fn draws_both_series_in_well_formed_svg() {
        let timeline: Vec<_> = (0..12)
            .map(|second| point(second, 1000.0 + second as f64, 250.0))
            .collect();
        let svg = render_svg("walrus <put> & get", &timeline);
        assert!(svg.starts_with("<?xml"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_well_formed(&svg);
        assert!(svg.contains("walrus &lt;put&gt; &amp; get"));
        assert!(svg.contains("throughput (requests/s)") && svg.contains("p99 latency"));
        let series: Vec<&str> = svg
            .lines()
            .filter(|line| line.starts_with("<polyline"))
            .collect();
        // Throughput, then PUT and GET latency apart, each named in a legend
        // in its own colour.
        assert_eq!(series.len(), 3);
        for (label, color) in [
            ("all requests", "#1f77b4"),
            ("PUT p99", "#d62728"),
            ("GET p99", "#2ca02c"),
        ] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
            assert_eq!(
                svg.matches(&format!("stroke=\"{color}\"")).count(),
                2,
                "{label}"
            );
        }
        for line in series {
            let points = line.split("points=\"").nth(1).unwrap();
            assert_eq!(points.split(' ').count(), 12);
        }
        assert!(svg.contains(">2000<"), "throughput axis tops out at 2000");
        assert!(svg.contains(">500 µs<"), "latency axis tops out at 500 µs");
    }

    #[test]
    fn an_empty_run_is_still_a_chart() {
        let svg = render_svg("empty", &[]);
        assert_well_formed(&svg);
        assert!(!svg.contains("<polyline"));
        assert_eq!(svg.matches("no data").count(), 2);
        assert!(!svg.contains("class=\"legend\""));
    }

    #[test]
    fn a_run_without_reads_draws_no_get_line() {
        let timeline: Vec<_> = (0..3)
            .map(|second| TimelinePoint {
                read_p99_us: None,
                ..point(second, 10.0, 100.0)
            })
            .collect();
        let svg = render_svg("puts only", &timeline);
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">PUT p99<") && !svg.contains(">GET p99<"));
    }

    #[test]
    fn writes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.svg");
        write_svg(&path, "run", &[point(0, 5.0, 1.0)]).unwrap();
        assert_well_formed(&std::fs::read_to_string(&path).unwrap());
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert_eq!(nice_ceiling(1001.0), 2000.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
    }
}
