//! One JSON schema for every measured figure, appended to a JSON-lines file so that
//! reports and plots can be built from all runs later.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub schema: u32,
    /// Seconds since the Unix epoch.
    pub timestamp: u64,
    pub git_commit: Option<String>,
    /// Path or name of the model file.
    pub model: String,
    /// What was done to it ("base", "wanda-50", …).
    pub variant: String,
    /// e.g. "ppl", "kld_mean", "hellaswag_acc_norm", "tg_tokens_per_sec".
    pub metric: String,
    pub value: f64,
    /// One standard error, when the metric has one.
    pub uncertainty: Option<f64>,
    /// Everything needed to reproduce the figure (file, ctx, chunks, threads, …).
    pub settings: serde_json::Value,
}

impl Record {
    pub fn new(
        model: &str,
        variant: &str,
        metric: &str,
        value: f64,
        uncertainty: Option<f64>,
        settings: serde_json::Value,
    ) -> Self {
        Self {
            schema: SCHEMA_VERSION,
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            git_commit: None,
            model: model.to_string(),
            variant: variant.to_string(),
            metric: metric.to_string(),
            value,
            uncertainty: uncertainty.filter(|u| u.is_finite()),
            settings,
        }
    }
}

/// Append records as whole lines in one write, so concurrent or interrupted writers never
/// leave half a line.
pub fn append(path: &Path, records: &[Record]) -> Result<()> {
    let mut buf = String::new();
    for r in records {
        buf.push_str(&serde_json::to_string(r).map_err(|e| Error::InvalidInput(e.to_string()))?);
        buf.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::write(path, e))?;
    f.write_all(buf.as_bytes())
        .map_err(|e| Error::write(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_lines_parse_back() {
        let p = std::env::temp_dir().join(format!("leanlm-results-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let r = Record::new(
            "m.gguf",
            "base",
            "ppl",
            22.9,
            Some(0.18),
            serde_json::json!({"ctx": 512}),
        );
        append(&p, std::slice::from_ref(&r)).unwrap();
        append(
            &p,
            &[Record {
                uncertainty: None,
                ..r
            }],
        )
        .unwrap();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["metric"], "ppl");
        assert_eq!(lines[0]["settings"]["ctx"], 512);
        assert!(lines[1]["uncertainty"].is_null());
        std::fs::remove_file(&p).unwrap();
    }
}
