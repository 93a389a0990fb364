//! Reads the Prometheus text a `/metrics` page serves: every sample line must
//! parse (name, labels, value), and a test looks samples up by name and labels.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;

/// One sample: `name{label="value",…} number`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of a page; an error names the first line that is neither a
/// comment, blank, nor a well-formed sample.
pub fn parse(text: &str) -> Result<Vec<Sample>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(n, line)| sample(line).with_context(|| format!("line {}: {line:?}", n + 1)))
        .collect()
}

fn sample(line: &str) -> Result<Sample> {
    let name_end = line
        .find(['{', ' '])
        .context("no value after the metric name")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        bail!("bad metric name {name:?}");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find("=\"").context("label without =\"")?;
            let key = rest[..eq].trim_start_matches(',').to_owned();
            rest = &rest[eq + 2..];
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => bail!("unfinished escape"),
                    },
                    Some((_, c)) => value.push(c),
                    None => bail!("unfinished label value"),
                }
            };
            rest = &rest[end + 1..];
            labels.insert(key, value);
        }
    }
    // A value, then perhaps a timestamp or an exemplar: only the value is read.
    let value = rest
        .split_whitespace()
        .next()
        .context("no value")?
        .parse::<f64>()
        .context("value is not a number")?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The sum of the samples called `name` whose labels include every pair of
/// `labels` (0 when there are none).
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|sample| sample.name == name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(k, v)| sample.labels.get(*k).is_some_and(|value| value == v))
        })
        .map(|sample| sample.value)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_and_refuses_garbage() {
        let text = "# HELP x_total X.\n# TYPE x_total counter\n\
                    x_total{kind=\"enter\",venue=\"a \\\"b\\\"\"} 3\n\
                    y 1.5e-3\n# EOF\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].labels["venue"], "a \"b\"");
        assert_eq!(sum(&samples, "x_total", &[("kind", "enter")]), 3.0);
        assert_eq!(sum(&samples, "x_total", &[("kind", "exit")]), 0.0);
        assert_eq!(sum(&samples, "y", &[]), 0.0015);
        for bad in ["x_total{kind=\"enter\" 3", "x_total", "9x 1", "x_total abc"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
