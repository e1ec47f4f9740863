//! `leanlm run` and `leanlm recipe check` from the outside: every shipped recipe runs at
//! a tiny scale, a killed run finishes on re-run without redoing finished jobs, and bad
//! recipes are refused before any work with the line and field named.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;

fn run_tiny(recipe: &str, dir: &Path) -> std::process::Output {
    model();
    leanlm(&[
        "run",
        recipe,
        "--tiny",
        "-o",
        dir.to_str().unwrap(),
        "--json",
    ])
}

/// Runs a shipped recipe tiny in a fresh folder and checks what it writes.
fn check_recipe(file: &str) {
    let dir = tmp(&format!("run-{file}"));
    let _ = std::fs::remove_dir_all(&dir);
    check_recipe_in(file, &dir);
    // Run folders hold hundreds of MB of models: a passing test leaves none behind.
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs a shipped recipe tiny in `dir` (empty, or holding an interrupted run), checks the
/// summary, results and report it writes and that a second run finds everything done;
/// returns the first run's stderr.
fn check_recipe_in(file: &str, dir: &Path) -> String {
    let recipe = format!("recipes/{file}");
    let out = run_tiny(&recipe, dir);
    let first_err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{recipe}: {first_err}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = summary["rows"].as_array().unwrap();
    let text = std::fs::read_to_string(root().join(&recipe)).unwrap();
    let stages = text.matches("[[stage]]").count();
    assert_eq!(
        rows.len(),
        1 + stages,
        "one row per stage plus the original"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for r in rows {
        let name = r["variant"].as_str().unwrap();
        assert!(
            html.contains(name) && md.contains(name),
            "{name} missing from the report"
        );
        assert!(
            r["tg_tokens_per_sec"].as_f64().unwrap() > 0.0,
            "{name}: no decode speed"
        );
        assert!(
            r["ppl"].as_f64().is_some_and(|p| p > 1.0),
            "{name}: no perplexity"
        );
    }
    assert!(html.contains("<svg"), "the report has plots");
    // A [pair] is measured when its models are here (this machine), or said not to be (CI).
    if text.contains("\n[pair]") {
        let p = &summary["pair"];
        match p["not_run"].as_str() {
            Some(why) => assert!(why.contains("is absent"), "{p}"),
            None => {
                assert!(p["plain_tg_tokens_per_sec"].as_f64().unwrap() > 0.0, "{p}");
                assert!(
                    p["speculative_tg_tokens_per_sec"].as_f64().unwrap() > 0.0,
                    "{p}"
                );
                assert!(p["acceptance"].as_f64().is_some(), "{p}");
            }
        }
        assert!(md.contains("Speculative pair: ") && html.contains("Speculative pair: "));
    }
    // Every line of results.jsonl is a schema-1 record of one of the variants.
    let results = std::fs::read_to_string(dir.join("results.jsonl")).unwrap();
    for line in results.lines() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(rec["schema"], 1);
        assert!(
            rows.iter().any(|r| r["variant"] == rec["variant"]),
            "{line}"
        );
    }
    assert!(results.contains("\"metric\":\"ppl\"") && results.contains("tg_tokens_per_sec"));
    // A second run finds everything done.
    let again = run_tiny(&recipe, dir);
    assert!(again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("\n0 jobs run,"), "re-run redid work: {err}");
    first_err
}

#[test]
fn prune_wanda_recipe_runs_tiny() {
    check_recipe("prune-wanda.toml");
}

#[test]
fn depth_distill_recipe_runs_tiny() {
    check_recipe("depth-distill.toml");
}

#[test]
fn quantize_recipe_runs_tiny() {
    check_recipe("quantize.toml");
}

#[test]
fn speculative_recipe_runs_tiny() {
    check_recipe("speculative.toml");
}

/// Finished products of a run folder (models and job outputs) with their mtimes.
fn products(dir: &Path) -> BTreeMap<PathBuf, SystemTime> {
    let mut m = BTreeMap::new();
    for sub in ["models", "jobs"] {
        for e in std::fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path();
            let name = p.to_string_lossy().to_string();
            if name.ends_with(".gguf") || name.ends_with(".json") {
                m.insert(p, e.metadata().unwrap().modified().unwrap());
            }
        }
    }
    m
}

/// The default recipe, killed at several points and then run to the end; the finished run
/// is checked as every shipped recipe's is (this is the default recipe's tiny test).
#[test]
fn a_killed_run_finishes_without_redoing_finished_jobs() {
    model();
    let dir = tmp("run-killed");
    let _ = std::fs::remove_dir_all(&dir);
    let args = [
        "run",
        "recipes/default.toml",
        "--tiny",
        "-o",
        dir.to_str().unwrap(),
    ];
    // Kill (SIGKILL, no chance to clean up) at several points of the run.
    for delay in [1.5, 6.0, 14.0] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_leanlm"))
            .args(args)
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs_f64(delay) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = products(&dir);
    assert!(!before.is_empty(), "nothing finished before the kills");
    let err = check_recipe_in("default.toml", &dir);
    let after = products(&dir);
    for (p, t) in &before {
        assert_eq!(after.get(p), Some(t), "{} was redone", p.display());
    }
    let reused = err.matches("done earlier, reused").count();
    assert!(reused >= before.len().min(1), "{err}");
    assert!(dir.join("report.html").exists());
    // No half-written file is left behind as if it were finished.
    for p in after.keys() {
        assert!(!p.to_string_lossy().contains(".partial"), "{}", p.display());
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn bad_recipe(name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(root().join("recipes/default.toml")).unwrap();
    let p = tmp(name);
    std::fs::write(&p, edit(text)).unwrap();
    p
}

/// Both `recipe check` and `run` refuse it, naming `needles`, and `run` starts nothing.
fn assert_refused(recipe: &Path, needles: &[&str]) {
    let dir = tmp("never-created");
    for args in [
        vec!["recipe", "check", recipe.to_str().unwrap()],
        vec!["run", recipe.to_str().unwrap(), "-o", dir.to_str().unwrap()],
    ] {
        let out = leanlm(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted a bad recipe");
        assert!(!err.contains("panicked"), "{err}");
        for n in needles {
            assert!(err.contains(n), "expected {n:?} in: {err}");
        }
    }
    assert!(!dir.exists(), "run started work on a bad recipe");
}

#[test]
fn invalid_recipes_are_refused_with_line_and_field() {
    let text = std::fs::read_to_string(root().join("recipes/default.toml")).unwrap();
    let line_of = |needle: &str| text[..text.find(needle).unwrap()].matches('\n').count() + 1;

    let p = bad_recipe("unknown-stage.toml", |t| {
        t.replace("type = \"prune\"", "type = \"sparsify\"")
    });
    assert_refused(
        &p,
        &[&format!("line {}", line_of("type = \"prune\"")), "sparsify"],
    );

    let p = bad_recipe("missing-field.toml", |t| t.replace("steps = 24\n", ""));
    assert_refused(&p, &["field `steps`", "missing field"]);

    let p = bad_recipe("no-teacher.toml", |t| {
        t.replace("teacher = \"original\"", "teacher = \"giant\"")
    });
    assert_refused(
        &p,
        &[
            &format!(
                "line {}, field `teacher`",
                line_of("teacher = \"original\"")
            ),
            "\"giant\"",
        ],
    );

    let p = bad_recipe("bad-quant.toml", |t| {
        t.replace("quant = \"q4_1\"", "quant = \"q3_k\"")
    });
    assert_refused(
        &p,
        &[&format!("line {}", line_of("quant = \"q4_1\"")), "q3_k"],
    );

    let p = bad_recipe("missing-file.toml", |t| {
        t.replace("wikitext-2/valid.txt", "wikitext-2/nope.txt")
    });
    assert_refused(&p, &["field `calib`", "nope.txt does not exist"]);
}

/// HumanEval in a recipe: the eval job runs the problems' tests in the sandbox, the report
/// gets a pass@1 column and the samples are kept; a decode stage's draft may be a model
/// file that is no stage of the recipe (here the model itself: every draft is accepted).
#[test]
fn humaneval_and_a_draft_file_in_a_recipe() {
    model();
    let recipe = tmp("humaneval.toml");
    std::fs::write(
        &recipe,
        r#"name = "humaneval-tiny"
model = "models/SmolLM2-135M-Instruct.Q4_1.gguf"

[eval]
ppl = "data/wikitext-2-raw/wiki.test.raw"
humaneval = true
problems = 2

[[stage]]
name = "self-draft"
type = "decode"
draft = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
k = 2
"#,
    )
    .unwrap();
    let dir = tmp("run-humaneval");
    let _ = std::fs::remove_dir_all(&dir);
    let out = run_tiny(recipe.to_str().unwrap(), &dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = summary["rows"].as_array().unwrap();
    let pass = rows[0]["humaneval_pass1"]
        .as_f64()
        .expect("pass@1 of the original");
    assert!((0.0..=1.0).contains(&pass));
    assert_eq!(rows[1]["quality_of"], "original");
    assert_eq!(rows[1]["humaneval_pass1"].as_f64(), Some(pass));
    let decoding = rows[1]["decoding"].as_str().unwrap();
    assert!(
        decoding.contains("SmolLM2-135M-Instruct.Q4_1.gguf"),
        "{decoding}"
    );
    assert!(
        rows[1]["acceptance"].as_f64().is_some_and(|a| a > 0.99),
        "{rows:?}"
    );
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("HumanEval pass@1"), "{md}");
    let samples: Vec<PathBuf> = std::fs::read_dir(dir.join("jobs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".humaneval.jsonl"))
        .collect();
    assert_eq!(samples.len(), 1, "{samples:?}");
    let text = std::fs::read_to_string(&samples[0]).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.contains("\"task_id\":\"HumanEval/0\""));
    std::fs::remove_dir_all(&dir).ok();
}
