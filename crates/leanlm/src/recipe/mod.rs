//! Recipes: an ordered list of typed stages (prune → distill → quantize → decode) and one
//! evaluation for every variant. This module parses and checks them; `leanlm run`
//! executes them.

mod schema;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use schema::{
    Bench, Decode, Distill, Eval, ExitMeasure, Pair, Prune, PruneMethod, QuantType, Quantize,
    Recipe, Stage,
};

/// The name by which stages refer to the recipe's `model`.
pub const ORIGINAL: &str = "original";

/// One problem in a recipe, located by line (1-based) and field.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub line: usize,
    pub field: Option<String>,
    pub message: String,
}

/// Everything wrong with a recipe file, all at once.
#[derive(Debug, thiserror::Error)]
pub struct RecipeError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  line {}", p.line)?;
            if let Some(field) = &p.field {
                write!(f, ", field `{field}`")?;
            }
            write!(f, ": {}", p.message)?;
        }
        Ok(())
    }
}

/// Where a stage's model (input, teacher or draft) comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Original,
    /// Output of the stage with this index.
    Stage(usize),
}

/// A stage with its references resolved.
#[derive(Debug, Clone)]
pub struct Planned {
    pub stage: Stage,
    /// Line of the stage's `[[stage]]` header.
    pub line: usize,
    /// Byte range of the stage's table in the recipe text.
    pub span: std::ops::Range<usize>,
    pub input: Source,
    pub teacher: Option<Source>,
    pub draft: Option<Source>,
    /// A draft model that is no stage of the recipe: `draft = "path/to/file.gguf"`.
    pub draft_file: Option<PathBuf>,
}

/// A checked recipe, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub recipe: Recipe,
    pub stages: Vec<Planned>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where `field = …` is set inside the byte range `span`, or the range's first line.
fn field_line(text: &str, span: std::ops::Range<usize>, field: &str) -> usize {
    let start = span.start.min(text.len());
    let body = &text[start..span.end.min(text.len())];
    let mut offset = start;
    for l in body.split_inclusive('\n') {
        let t = l.trim_start();
        if t.strip_prefix(field)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return line_of(text, offset);
        }
        offset += l.len();
    }
    line_of(text, start)
}

/// Parse and check a recipe's text (`file` only names it in errors). Paths are not
/// checked here; see [`check_files`].
pub fn parse(text: &str, file: &Path) -> Result<Plan, RecipeError> {
    let fail = |problems| RecipeError {
        file: file.to_path_buf(),
        problems,
    };
    let recipe: Recipe = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        fail(vec![Problem {
            line,
            field: None,
            message: e.message().trim().to_string(),
        }])
    })?;
    let mut problems = Vec::new();
    check_top(&recipe, text, &mut problems);
    let mut stages: Vec<Planned> = Vec::new();
    // Names of stages that failed to parse: references to them are not reported again.
    let mut unparsed: Vec<String> = Vec::new();
    for spanned in &recipe.raw_stages {
        let span = table_range(text, spanned.span().start);
        let at = |field: &str| field_line(text, span.clone(), field);
        let stage = match Stage::deserialize(spanned.get_ref().clone()) {
            Ok(s) => s,
            Err(e) => {
                problems.push(locate(text, span.clone(), &e.to_string()));
                if let Some(n) = spanned.get_ref().get("name").and_then(|v| v.as_str()) {
                    unparsed.push(n.to_string());
                }
                continue;
            }
        };
        let stage = &stage;
        let mut bad = |field: &str, message: String| {
            problems.push(Problem {
                line: at(field),
                field: Some(field.to_string()),
                message,
            })
        };
        check_name(stage.name(), &stages, &mut bad);
        check_stage(stage, &mut bad);
        // References resolve to the original or an earlier stage that writes a model.
        let mut resolve = |field: &str, name: &str| -> Option<Source> {
            if name == ORIGINAL {
                return Some(Source::Original);
            }
            if unparsed.iter().any(|n| n == name) {
                return None;
            }
            match stages.iter().position(|p| p.stage.name() == name) {
                Some(j) if stages[j].stage.writes_model() => Some(Source::Stage(j)),
                Some(_) => {
                    bad(
                        field,
                        format!("stage \"{name}\" is a decode stage and writes no model"),
                    );
                    None
                }
                None => {
                    bad(
                        field,
                        format!("no earlier stage is named \"{name}\" (use \"{ORIGINAL}\" or the name of a stage above)"),
                    );
                    None
                }
            }
        };
        let previous = stages
            .iter()
            .rposition(|p| p.stage.writes_model())
            .map_or(Source::Original, Source::Stage);
        let input = match stage.input() {
            Some(name) => resolve("input", name),
            None => Some(previous),
        };
        let teacher = match stage {
            Stage::Distill(d) => resolve("teacher", &d.teacher),
            _ => None,
        };
        // A name with a slash or a model file's extension is a file, not a stage.
        let is_file = |n: &str| n.contains('/') || n.ends_with(".gguf");
        let (draft, draft_file) = match stage {
            Stage::Decode(d) => match d.draft.as_deref() {
                Some(n) if is_file(n) => (None, Some(PathBuf::from(n))),
                Some(n) => (resolve("draft", n), None),
                None => (None, None),
            },
            _ => (None, None),
        };
        stages.push(Planned {
            stage: stage.clone(),
            line: line_of(text, span.start),
            span,
            input: input.unwrap_or(Source::Original),
            teacher,
            draft,
            draft_file,
        });
    }
    if problems.is_empty() {
        Ok(Plan { recipe, stages })
    } else {
        Err(fail(problems))
    }
}

/// Read and check a recipe file.
pub fn load(path: &Path) -> Result<Plan, crate::Error> {
    let text = read_recipe(path)?;
    parse(&text, path).map_err(|e| crate::Error::Recipe(Box::new(e)))
}

/// A recipe file's text: a regular file of at most 1 MB (a recipe is a page of TOML;
/// `/dev/zero` or a FIFO would otherwise be read for ever).
pub fn read_recipe(path: &Path) -> Result<String, crate::Error> {
    const MAX: u64 = 1 << 20;
    let meta = std::fs::metadata(path).map_err(|e| crate::Error::io(path, e))?;
    if !meta.is_file() {
        return Err(crate::Error::InvalidInput(format!(
            "{}: a recipe must be a regular file",
            path.display()
        )));
    }
    if meta.len() > MAX {
        return Err(crate::Error::InvalidInput(format!(
            "{}: {} bytes is too large for a recipe (at most 1 MB)",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))
}

/// The byte range of the table whose header starts at `start`: up to the next header.
fn table_range(text: &str, start: usize) -> std::ops::Range<usize> {
    let start = start.min(text.len());
    let after_header = text[start..]
        .find('\n')
        .map_or(text.len(), |i| start + i + 1);
    let mut offset = after_header;
    for l in text[after_header..].split_inclusive('\n') {
        if l.trim_start().starts_with('[') {
            return start..offset;
        }
        offset += l.len();
    }
    start..text.len()
}

/// A stage's deserialization error, located at the field or value it names (serde's
/// messages quote them in backticks), else at the stage's header.
fn locate(text: &str, span: std::ops::Range<usize>, message: &str) -> Problem {
    let quoted = message.split('`').nth(1).unwrap_or("");
    let body = &text[span.start.min(text.len())..span.end.min(text.len())];
    let (line, field) = if message.starts_with("unknown field") {
        (
            field_line(text, span.clone(), quoted),
            Some(quoted.to_string()),
        )
    } else if message.starts_with("unknown variant") && !quoted.is_empty() {
        // The line holding the bad value, e.g. `quant = "q4_k"` or `type = "sparsify"`.
        let needle = format!("\"{quoted}\"");
        let line = body
            .find(&needle)
            .map_or(line_of(text, span.start), |o| line_of(text, span.start + o));
        (line, None)
    } else if message.starts_with("missing field") {
        (line_of(text, span.start), Some(quoted.to_string()))
    } else {
        (line_of(text, span.start), None)
    };
    Problem {
        line,
        field,
        message: message.trim().to_string(),
    }
}

fn check_top(r: &Recipe, text: &str, problems: &mut Vec<Problem>) {
    let all = 0..text.len();
    let mut bad = |field: &str, message: &str| {
        let key = field.rsplit('.').next().unwrap_or(field);
        problems.push(Problem {
            line: field_line(text, all.clone(), key),
            field: Some(field.to_string()),
            message: message.to_string(),
        })
    };
    if !valid_name(&r.name) {
        bad("name", "use letters, digits, '-', '_' or '.'");
    }
    if let Some(t) = r.threads {
        let max = max_threads();
        if t == 0 || t > max {
            bad(
                "threads",
                &format!("{t}: must be 1 to {max} (4 per core of this machine, at most 1024)"),
            );
        }
    }
    let e = &r.eval;
    if e.ctx < 8 {
        bad("eval.ctx", "must be at least 8 tokens");
    }
    if e.chunks == Some(0) {
        bad("eval.chunks", "must be at least 1");
    }
    if e.tasks == Some(0) {
        bad("eval.tasks", "must be at least 1");
    }
    if e.tasks.is_some() && e.hellaswag.is_none() {
        bad("eval.tasks", "needs eval.hellaswag");
    }
    if e.problems == Some(0) {
        bad("eval.problems", "must be at least 1");
    }
    if (e.problems.is_some() || e.humaneval_chat) && !e.humaneval {
        bad("eval.problems", "needs eval.humaneval = true");
    }
    for (f, v) in [
        ("eval.bench.prompt", e.bench.prompt),
        ("eval.bench.gen", e.bench.gen),
        ("eval.bench.reps", e.bench.reps),
    ] {
        if v == 0 {
            bad(f, "must be at least 1");
        }
    }
    if e.bench.reps > 1000 {
        bad("eval.bench.reps", "at most 1000 repetitions");
    }
    if let Some(p) = &r.pair {
        if !(1..=16).contains(&p.k) {
            bad(
                "pair.k",
                &format!("{}: the draft length must be 1 to 16", p.k),
            );
        }
        if p.gen == 0 {
            bad("pair.gen", "must be at least 1");
        }
        if p.p_min.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            bad("pair.p_min", "must be in 0..=1");
        }
    }
}

/// The most worker threads a recipe (or `-t`) may ask for: 4 per core, at most 1024.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_mul(4).min(1024)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.')
}

fn check_name(name: &str, earlier: &[Planned], bad: &mut impl FnMut(&str, String)) {
    if !valid_name(name) {
        bad(
            "name",
            format!("\"{name}\": use letters, digits, '-', '_' or '.'"),
        );
    } else if name == ORIGINAL {
        bad("name", format!("\"{ORIGINAL}\" names the recipe's model"));
    } else if earlier.iter().any(|p| p.stage.name() == name) {
        bad("name", format!("another stage is already named \"{name}\""));
    }
}

fn check_stage(stage: &Stage, bad: &mut impl FnMut(&str, String)) {
    match stage {
        Stage::Prune(p) => check_prune(p, bad),
        Stage::Distill(d) => {
            if d.steps == 0 {
                bad("steps", "must be at least 1".into());
            }
            if d.data.is_empty() {
                bad("data", "name at least one training text file".into());
            }
            for (f, v) in [("seq", d.seq), ("batch", d.batch), ("accum", d.accum)] {
                if v == 0 {
                    bad(f, "must be at least 1".into());
                }
            }
            if !(d.lr > 0.0 && d.lr.is_finite()) {
                bad("lr", "must be a positive number".into());
            }
            if d.batch > 1024 {
                bad("batch", "at most 1024 sequences per micro-batch".into());
            }
            if !(d.temperature > 0.0 && d.temperature.is_finite()) {
                bad("temperature", "must be a positive number".into());
            }
            if d.init.is_some() && d.input.is_some() {
                bad(
                    "init",
                    "give either init (teacher blocks) or input, not both".into(),
                );
            }
            if let Some(init) = &d.init {
                // The same parse the distill command applies.
                let list = init
                    .strip_prefix("layers=")
                    .map(crate::distill::parse_layer_list);
                match list {
                    Some(Ok(l)) if !l.is_empty() => {}
                    Some(Err(e)) => bad("init", e.to_string()),
                    _ => bad(
                        "init",
                        format!("\"{init}\": expected layers=LIST, e.g. layers=0-11"),
                    ),
                }
            }
            if d.seq == 1 {
                bad("seq", "a training sequence needs at least 2 tokens".into());
            }
            if let Some(h) = &d.hidden {
                if let Err(e) = crate::distill::HiddenPair::parse_list(h) {
                    bad("hidden", e.to_string());
                }
            }
            let loss_ok = matches!(d.loss.as_str(), "kl" | "rkl" | "ce")
                || d.loss
                    .strip_prefix("jsd:")
                    .and_then(|b| b.parse::<f64>().ok())
                    .is_some_and(|b| b > 0.0 && b < 1.0);
            if !loss_ok {
                bad(
                    "loss",
                    format!(
                        "\"{}\": expected kl, rkl, ce or jsd:BETA with 0 < BETA < 1",
                        d.loss
                    ),
                );
            }
        }
        Stage::Quantize(q) => {
            if q.imatrix.is_some() && (q.imatrix_samples == 0 || q.imatrix_seqlen < 2) {
                bad(
                    "imatrix_samples",
                    "the importance matrix needs at least 1 sample of at least 2 tokens".into(),
                );
            }
            if q.imatrix.is_some() {
                check_calibration_size("imatrix_samples", q.imatrix_samples, q.imatrix_seqlen, bad);
            }
        }
        Stage::Decode(d) => {
            let modes = [
                d.early_exit.is_some(),
                d.draft_layers.is_some(),
                d.draft.is_some(),
                d.lookup.is_some(),
            ];
            match modes.iter().filter(|&&m| m).count() {
                0 => bad(
                    "early_exit",
                    "a decode stage needs one of early_exit, draft_layers, draft or lookup".into(),
                ),
                1 => {}
                _ => bad(
                    "draft",
                    "choose one of early_exit, draft_layers, draft or lookup".into(),
                ),
            }
            if !(1..=16).contains(&d.k) {
                bad("k", format!("{}: the draft length must be 1 to 16", d.k));
            }
            if d.draft_layers == Some(0) {
                bad("draft_layers", "must be at least 1".into());
            }
            if d.lookup == Some(0) {
                bad("lookup", "the n-gram length must be at least 1".into());
            }
            if d.exit_every == 0 {
                bad("exit_every", "must be at least 1".into());
            }
            if let Some(t) = d.early_exit {
                if !t.is_finite() {
                    bad("early_exit", format!("{t}: the threshold must be a number"));
                }
            }
        }
    }
}

fn check_prune(p: &Prune, bad: &mut impl FnMut(&str, String)) {
    match (&p.structured, p.sparsity, &p.pattern) {
        (Some(s), None, None) => {
            if p.method.is_some() || p.owl {
                bad(
                    "structured",
                    "structured pruning takes no method or owl".into(),
                );
            }
            // The same parse the prune command applies (counts, fractions in range).
            if let Err(e) = crate::transform::prune::Structured::parse(s) {
                bad("structured", e.to_string());
            }
        }
        (None, Some(s), None) => {
            if !(0.0..1.0).contains(&s) {
                bad("sparsity", format!("{s}: must be in [0, 1)"));
            }
        }
        (None, None, Some(pat)) => {
            if crate::transform::prune::Pattern::parse_nm(pat).is_err() {
                bad("pattern", format!("\"{pat}\": expected N:M with 0 < N < M"));
            }
            if p.owl {
                bad("owl", "OWL sets per-layer sparsities: use sparsity".into());
            }
        }
        (None, None, None) => bad(
            "sparsity",
            "a prune stage needs sparsity, pattern or structured".into(),
        ),
        _ => bad(
            "structured",
            "give exactly one of sparsity, pattern or structured".into(),
        ),
    }
    if p.nsamples == 0 || p.seqlen < 2 {
        bad(
            "nsamples",
            "need at least 1 sample of at least 2 tokens".into(),
        );
    }
    check_calibration_size("nsamples", p.nsamples, p.seqlen, bad);
}

/// The most calibration tokens a stage may ask for (the commands refuse more: every
/// window's hidden states are held at once).
const MAX_CALIBRATION_TOKENS: usize = 1 << 24;

fn check_calibration_size(
    field: &str,
    samples: usize,
    seqlen: usize,
    bad: &mut impl FnMut(&str, String),
) {
    if samples
        .checked_mul(seqlen)
        .is_none_or(|t| t > MAX_CALIBRATION_TOKENS)
    {
        bad(
            field,
            format!(
                "{samples} windows of {seqlen} tokens: at most {MAX_CALIBRATION_TOKENS} tokens in all"
            ),
        );
    }
}

/// Paths a recipe reads, with the line that names each, checked for existence.
pub fn check_files(plan: &Plan, text: &str, file: &Path) -> Result<(), RecipeError> {
    let all = 0..text.len();
    let r = &plan.recipe;
    let mut wanted: Vec<(usize, &str, &Path)> = vec![
        (field_line(text, all.clone(), "model"), "model", &r.model),
        (
            field_line(text, all.clone(), "ppl"),
            "eval.ppl",
            &r.eval.ppl,
        ),
    ];
    if let Some(h) = &r.eval.hellaswag {
        wanted.push((
            field_line(text, all.clone(), "hellaswag"),
            "eval.hellaswag",
            h,
        ));
    }
    for p in &plan.stages {
        let span = p.span.clone();
        match &p.stage {
            Stage::Prune(s) => wanted.push((field_line(text, span, "calib"), "calib", &s.calib)),
            Stage::Quantize(q) => {
                if let Some(f) = &q.imatrix {
                    wanted.push((field_line(text, span, "imatrix"), "imatrix", f));
                }
            }
            Stage::Distill(d) => {
                for f in &d.data {
                    wanted.push((field_line(text, span.clone(), "data"), "data", f));
                }
            }
            _ => {}
        }
        if let Some(f) = &p.draft_file {
            wanted.push((field_line(text, p.span.clone(), "draft"), "draft", f));
        }
    }
    // The model may be a folder (of regular files); everything else must be a regular
    // file: a device or FIFO (/dev/zero) would be read, and hashed, for ever.
    let problems: Vec<Problem> = wanted
        .into_iter()
        .filter_map(|(line, field, path)| {
            let message = match std::fs::metadata(path) {
                Err(_) => format!("{} does not exist", path.display()),
                Ok(m) if m.is_file() => return None,
                Ok(m) if m.is_dir() && field == "model" => return None,
                Ok(m) if m.is_dir() => format!("{} is a folder, not a file", path.display()),
                Ok(_) => format!(
                    "{} is not a regular file (a device, FIFO or socket)",
                    path.display()
                ),
            };
            Some(Problem {
                line,
                field: Some(field.into()),
                message,
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RecipeError {
            file: file.to_path_buf(),
            problems,
        })
    }
}

impl Plan {
    /// Shrink every count so that the recipe runs in about a minute: a smoke test that
    /// the stages still fit together (CI), not a measurement.
    pub fn shrink(&mut self) {
        let e = &mut self.recipe.eval;
        e.ctx = e.ctx.min(128);
        e.chunks = Some(1);
        e.tasks = e.hellaswag.as_ref().map(|_| 4);
        e.problems = e.humaneval.then_some(2);
        if let Some(p) = &mut self.recipe.pair {
            p.gen = p.gen.min(8);
        }
        e.bench = Bench {
            prompt: e.bench.prompt.min(32),
            gen: e.bench.gen.min(8),
            reps: 1,
        };
        for p in &mut self.stages {
            match &mut p.stage {
                Stage::Prune(s) => {
                    s.nsamples = s.nsamples.min(2);
                    s.seqlen = s.seqlen.min(64);
                }
                Stage::Distill(d) => {
                    d.steps = d.steps.min(2);
                    d.seq = d.seq.min(64);
                    d.batch = 1;
                    d.accum = 1;
                    d.warmup = d.warmup.min(1);
                }
                Stage::Quantize(q) => {
                    q.imatrix_samples = q.imatrix_samples.min(2);
                    q.imatrix_seqlen = q.imatrix_seqlen.min(64);
                }
                Stage::Decode(_) => {}
            }
        }
    }

    /// Name of a source: "original" or the stage's name.
    pub fn name_of(&self, s: Source) -> &str {
        match s {
            Source::Original => ORIGINAL,
            Source::Stage(i) => self.stages[i].stage.name(),
        }
    }
}

#[cfg(test)]
mod tests;
