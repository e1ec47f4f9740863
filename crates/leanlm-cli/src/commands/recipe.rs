//! `leanlm recipe check FILE`: validate a recipe without running anything.

use std::path::PathBuf;

use anyhow::Result;
use leanlm::recipe::Stage;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Check a recipe: its fields and types, the stages' references (input, teacher,
    /// draft), and that the files it reads exist. Prints the plan when it is valid.
    Check {
        /// Recipe file (TOML).
        file: PathBuf,
    },
}

pub fn run(a: Args) -> Result<()> {
    let Sub::Check { file } = a.command;
    let text = leanlm::recipe::read_recipe(&file)?;
    let plan = leanlm::recipe::parse(&text, &file)?;
    leanlm::recipe::check_files(&plan, &text, &file)?;
    println!(
        "{}: valid recipe \"{}\" on {}",
        file.display(),
        plan.recipe.name,
        plan.recipe.model.display()
    );
    if let Some(p) = &plan.recipe.pair {
        let here = p.target.is_file() && p.draft.is_file();
        println!(
            "  pair: {} with draft {}, k={} ({})",
            p.target.display(),
            p.draft.display(),
            p.k,
            if here {
                "measured in the run"
            } else {
                "a file is absent: not run"
            }
        );
    }
    for (i, p) in plan.stages.iter().enumerate() {
        let what = match &p.stage {
            Stage::Prune(s) => s
                .structured
                .clone()
                .or(s.pattern.clone())
                .unwrap_or_else(|| format!("sparsity {}", s.sparsity.unwrap_or(0.0))),
            Stage::Distill(d) => format!(
                "{} steps from {}",
                d.steps,
                plan.name_of(p.teacher.unwrap_or(leanlm::recipe::Source::Original))
            ),
            Stage::Quantize(q) => q.quant.name().to_string(),
            Stage::Decode(d) => super::run::describe_decode(d),
        };
        println!(
            "  {}. {} {:<12} from {:<12} {what}",
            i + 1,
            p.stage.kind(),
            p.stage.name(),
            plan.name_of(p.input)
        );
    }
    Ok(())
}
