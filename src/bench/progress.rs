//! The progress bars of the benchmarks that count steps (writes, keys):
//! position against total and a rate in whole steps per second.

use std::fmt::Write;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// A bar for `total` steps labelled `label`; hidden unless `enabled`.
/// Callers must not advance it past `total`.
pub fn count_bar(enabled: bool, total: u64, label: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} {rate}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", |state: &ProgressState, out: &mut dyn Write| {
                let _ = out.write_str(&whole_rate(state.per_sec()));
            })
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// `per_sec` as whole steps a second (indicatif's own `{per_sec}` shows
/// up to four decimals).
fn whole_rate(per_sec: f64) -> String {
    format!("{:.0}/s", per_sec.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_whole_numbers() {
        assert_eq!(whole_rate(1234.5678), "1235/s");
        assert_eq!(whole_rate(0.25), "0/s");
        assert_eq!(whole_rate(f64::NAN.max(0.0)), "0/s");
    }
}
