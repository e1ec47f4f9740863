//! `leanlm compare RUN_DIR...`: the variant tables of several runs side by side.

use std::path::PathBuf;

use anyhow::{Context, Result};
use leanlm::report::{self, Summary};

#[derive(clap::Args)]
pub struct Args {
    /// Run folders written by `leanlm run` (each holds summary.json).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Print the summaries as one JSON array.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let mut all = Vec::new();
    for dir in &a.runs {
        let path = dir.join("summary.json");
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (is {} a finished `leanlm run` folder?)",
                path.display(),
                dir.display()
            )
        })?;
        let s: Summary = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing {}", path.display()))?;
        all.push(s);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    for s in &all {
        println!("## {} ({}, {} threads)\n", s.recipe, s.run_dir, s.threads);
        println!("{}", report::table(&s.rows));
        println!("{}\n", report::verdict(s));
    }
    Ok(())
}
