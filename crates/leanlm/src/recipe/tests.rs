use super::*;

const GOOD: &str = r#"
name = "demo"
model = "m.gguf"

[eval]
ppl = "wiki.txt"
chunks = 4

[[stage]]
name = "short"
type = "prune"
structured = "layers=2"
calib = "valid.txt"

[[stage]]
name = "healed"
type = "distill"
steps = 3
data = ["valid.txt"]

[[stage]]
name = "q"
type = "quantize"
quant = "q4_0"

[[stage]]
name = "spec"
type = "decode"
draft = "short"
"#;

fn parse_str(s: &str) -> Result<Plan, RecipeError> {
    parse(s, Path::new("r.toml"))
}

/// The single problem found in `s`.
fn problem(s: &str) -> Problem {
    let e = parse_str(s).expect_err("recipe should be rejected");
    assert_eq!(e.problems.len(), 1, "{e}");
    e.problems[0].clone()
}

#[test]
fn a_good_recipe_resolves_inputs_teachers_and_drafts() {
    let plan = parse_str(GOOD).unwrap();
    let s = &plan.stages;
    assert_eq!(s.len(), 4);
    assert_eq!(s[0].input, Source::Original);
    assert_eq!(s[1].input, Source::Stage(0));
    assert_eq!(s[1].teacher, Some(Source::Original));
    assert_eq!(s[2].input, Source::Stage(1));
    assert_eq!(s[3].input, Source::Stage(2));
    assert_eq!(s[3].draft, Some(Source::Stage(0)));
    assert_eq!(s[1].line, 15);
    assert_eq!(plan.recipe.eval.ctx, 512, "default ctx");
}

#[test]
fn unknown_stage_kind_is_named_with_its_line() {
    let p = problem(&GOOD.replace("type = \"prune\"", "type = \"sparsify\""));
    assert_eq!(p.line, 11, "{p:?}");
    assert!(p.message.contains("sparsify"), "{p:?}");
}

#[test]
fn missing_and_unknown_fields_are_named() {
    let p = problem(&GOOD.replace("steps = 3\n", ""));
    assert!(p.message.contains("missing field `steps`"), "{p:?}");
    assert_eq!((p.line, p.field.as_deref()), (15, Some("steps")));
    let p = problem(&GOOD.replace("steps = 3", "steps = 3\nstesp = 4"));
    assert!(p.message.contains("unknown field `stesp`"), "{p:?}");
    assert_eq!(p.line, 19);
}

#[test]
fn a_teacher_that_does_not_exist_is_rejected() {
    let p = problem(&GOOD.replace("steps = 3", "teacher = \"big\"\nsteps = 3"));
    assert_eq!(p.field.as_deref(), Some("teacher"));
    assert_eq!(p.line, 18);
    assert!(p.message.contains("\"big\""), "{p:?}");
    // A later stage is not available either: stages run in order.
    let p = problem(&GOOD.replace("steps = 3", "teacher = \"q\"\nsteps = 3"));
    assert_eq!(p.field.as_deref(), Some("teacher"));
}

#[test]
fn unsupported_quantize_types_and_empty_imatrix_calibration_are_rejected() {
    let p = problem(&GOOD.replace("\"q4_0\"", "\"q5_k\""));
    assert!(p.message.contains("q5_k"), "{p:?}");
    assert_eq!(p.line, 24);
    let p = problem(&GOOD.replace(
        "quant = \"q4_0\"",
        "quant = \"q4_k\"\nimatrix = \"i.txt\"\nimatrix_samples = 0",
    ));
    assert_eq!(p.field.as_deref(), Some("imatrix_samples"));
    assert_eq!(p.line, 26);
}

#[test]
fn impossible_options_are_rejected() {
    for (from, to, field) in [
        (
            "structured = \"layers=2\"",
            "structured = \"layers=2\"\nsparsity = 0.5",
            "structured",
        ),
        ("structured = \"layers=2\"", "sparsity = 1.5", "sparsity"),
        ("structured = \"layers=2\"", "pattern = \"4:2\"", "pattern"),
        (
            "draft = \"short\"",
            "draft = \"short\"\nlookup = 3",
            "draft",
        ),
        ("draft = \"short\"", "draft = \"spec\"", "draft"),
        ("draft = \"short\"", "draft_layers = 4\nk = 0", "k"),
        ("name = \"healed\"", "name = \"short\"", "name"),
        ("chunks = 4", "chunks = 0", "eval.chunks"),
    ] {
        let p = problem(&GOOD.replace(from, to));
        assert_eq!(p.field.as_deref(), Some(field), "{to}: {p:?}");
    }
}

#[test]
fn shrink_caps_every_count() {
    let mut plan = parse_str(GOOD).unwrap();
    plan.shrink();
    assert_eq!(plan.recipe.eval.chunks, Some(1));
    assert_eq!(plan.recipe.eval.bench.reps, 1);
    match &plan.stages[1].stage {
        Stage::Distill(d) => assert_eq!((d.steps, d.seq), (2, 64)),
        _ => unreachable!(),
    }
}

#[test]
fn values_a_stage_would_refuse_are_refused_at_check_time() {
    for (from, to, field) in [
        (
            "structured = \"layers=2\"",
            "structured = \"layers=two\"",
            "structured",
        ),
        (
            "structured = \"layers=2\"",
            "structured = \"ffn=1.5\"",
            "structured",
        ),
        (
            "structured = \"layers=2\"",
            "structured = \"heads=0\"",
            "structured",
        ),
        ("structured = \"layers=2\"", "pattern = \"2:x\"", "pattern"),
        ("structured = \"layers=2\"", "sparsity = nan", "sparsity"),
        ("steps = 3", "steps = 3\nlr = nan", "lr"),
        ("steps = 3", "steps = 3\nlr = -1.0", "lr"),
        ("steps = 3", "steps = 3\nseq = 1", "seq"),
        ("steps = 3", "steps = 3\nhidden = \"1-2\"", "hidden"),
        (
            "steps = 3",
            "steps = 3\ninit = \"layers=0-18446744073709551615\"",
            "init",
        ),
        ("steps = 3", "steps = 3\ninit = \"layers=\"", "init"),
        ("draft = \"short\"", "early_exit = inf", "early_exit"),
        (
            "chunks = 4",
            "chunks = 4\n[eval.bench]\nreps = 100000",
            "eval.bench.reps",
        ),
        (
            "model = \"m.gguf\"",
            "model = \"m.gguf\"\nthreads = 100000",
            "threads",
        ),
        ("steps = 3", "steps = 3\nbatch = 100000", "batch"),
        (
            "calib = \"valid.txt\"",
            "calib = \"valid.txt\"\nnsamples = 1000000\nseqlen = 2048",
            "nsamples",
        ),
    ] {
        let e = parse_str(&GOOD.replace(from, to)).expect_err(to);
        assert!(
            e.problems.iter().any(|p| p.field.as_deref() == Some(field)),
            "{to}: {e}"
        );
    }
}

#[test]
fn files_that_are_not_regular_files_are_refused() {
    // A device reads for ever: `run` would hash it until killed.
    let text = GOOD.replace("calib = \"valid.txt\"", "calib = \"/dev/zero\"");
    let plan = parse_str(&text).unwrap();
    let e = check_files(&plan, &text, Path::new("r.toml")).unwrap_err();
    assert!(
        e.problems.iter().any(
            |p| p.field.as_deref() == Some("calib") && p.message.contains("not a regular file")
        ),
        "{e}"
    );
    let e = read_recipe(Path::new("/dev/zero")).unwrap_err();
    assert!(e.to_string().contains("regular file"), "{e}");
}
