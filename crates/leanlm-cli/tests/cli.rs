//! The binary against bad input: each case must exit non-zero with one line naming the
//! problem, and never panic.

mod common;

use std::path::Path;

use common::*;
use leanlm::model::gguf::{Array, Value};
use leanlm::quant::GgmlType;
use leanlm::transform::prune::{self, Method, Pattern, PruneConfig};
use leanlm::transform::quantize::{OutType, OutputFormat};

/// Magnitude pruning to 50% with an f32 output: no calibration, so it is quick.
const MAGNITUDE_50_F32: [&str; 6] = [
    "--method",
    "magnitude",
    "--sparsity",
    "0.5",
    "--outtype",
    "f32",
];

/// `leanlm prune M -o OUT ARGS…`.
fn run_prune(m: &Path, out: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["prune", m.to_str().unwrap(), "-o", out.to_str().unwrap()];
    all.extend_from_slice(args);
    leanlm(&all)
}

#[test]
fn truncated_gguf() {
    let bytes = std::fs::read(model()).unwrap();
    let p = tmp("truncated.gguf");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(
        &leanlm(&["info", p.to_str().unwrap()]),
        "runs past the end of the file",
    );
    std::fs::write(&p, &bytes[..1000]).unwrap();
    assert_clean_error(&leanlm(&["info", p.to_str().unwrap()]), "truncated");
    std::fs::remove_file(&p).ok();
}

#[test]
fn tensor_offset_past_the_end() {
    // A well-formed file, then cut inside the last tensor's data.
    let p = rewritten("short.gguf", |_| {});
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len - 4096).unwrap();
    assert_clean_error(&leanlm(&["info", p.to_str().unwrap()]), "data (offset");
    std::fs::remove_file(&p).ok();
}

#[test]
fn unknown_architecture() {
    let p = rewritten("arch.gguf", |m| {
        for (k, v) in m.iter_mut() {
            if k == "general.architecture" {
                *v = Value::String("mamba9".into());
            }
        }
    });
    assert_clean_error(
        &leanlm(&["info", p.to_str().unwrap()]),
        "unsupported architecture 'mamba9'",
    );
    std::fs::remove_file(&p).ok();
}

#[test]
fn missing_tokenizer() {
    let p = rewritten("notok.gguf", |m| {
        m.retain(|(k, _)| !k.starts_with("tokenizer."))
    });
    assert_clean_error(
        &leanlm(&["generate", p.to_str().unwrap(), "-p", "hi"]),
        "no tokenizer in this GGUF",
    );
    std::fs::remove_file(&p).ok();
}

#[test]
fn missing_model_file() {
    assert_clean_error(
        &leanlm(&["info", "/nonexistent/model.gguf"]),
        "/nonexistent/model.gguf",
    );
}

#[test]
fn empty_prompt() {
    let m = model();
    assert_clean_error(
        &leanlm(&["generate", m.to_str().unwrap(), "-p", ""]),
        "prompt is empty",
    );
}

#[test]
fn prompt_longer_than_the_context() {
    let p = tmp("long.txt");
    std::fs::write(&p, "word ".repeat(9000)).unwrap();
    let m = model();
    let out = leanlm(&[
        "generate",
        m.to_str().unwrap(),
        "-f",
        p.to_str().unwrap(),
        "-n",
        "4",
    ]);
    assert_clean_error(&out, "but the context holds 8192");
}

#[test]
fn generate_prints_text_and_speed() {
    let m = model();
    let out = leanlm(&[
        "generate",
        m.to_str().unwrap(),
        "-p",
        "The capital of France is",
        "-n",
        "8",
        "-t",
        "2",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("The capital of France is Paris"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tok/s"));
}

/// llama.cpp's generation flags: stop strings (`-r`), min-p, penalties, seeds, `-c`,
/// `-sys`; `-ngl` refused with the reason.
#[test]
fn generate_takes_llama_cpps_sampling_flags() {
    let m = model();
    let m = m.to_str().unwrap();
    let p = "The capital of France is";
    let out = leanlm(&["generate", m, "-p", p, "-n", "8", "-r", "Par"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim_end(),
        p,
        "the stop string and what follows are not printed"
    );
    let out = leanlm(&["generate", m, "-p", p, "-n", "8", "-r", "Par", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (j["text"].as_str(), j["stopped_by"].as_str()),
        (Some(" "), Some("stop string"))
    );

    // Sampling: a printed seed when none is given; the same seed, the same text.
    let sample = |extra: &[&str]| {
        let mut a = vec![
            "generate", m, "-p", p, "-n", "12", "--temp", "1.0", "--min-p", "0.02",
        ];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--repeat-penalty", "1.1", "--presence-penalty", "0.5"]);
        leanlm(&a)
    };
    let out = sample(&[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("seed: "));
    let (a, b) = (sample(&["-s", "7"]), sample(&["--seed", "7"]));
    assert_eq!(a.stdout, b.stdout);

    let out = leanlm(&[
        "generate",
        m,
        "--chat",
        "-sys",
        "Answer in one word.",
        "-p",
        "Capital of France?",
        "-n",
        "4",
    ]);
    assert!(
        out.status.success(),
        "-sys: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (args, needle) in [
        (vec!["-ngl", "99"], "GPU offload is not supported"),
        (vec!["--min-p", "2"], "min-p must be in [0, 1]"),
        (
            vec!["--repeat-penalty", "0"],
            "repeat penalty must be a positive number",
        ),
        (vec!["-c", "100000"], "-c 100000"),
        (vec!["-c", "8"], "but the context holds 8"),
        (vec!["-r", ""], "stop string is empty"),
        (
            vec!["--repeat-penalty", "1.2", "--lookup", "2"],
            "repetition penalties",
        ),
    ] {
        let mut a = vec!["generate", m, "-p", p, "-n", "4"];
        a.extend_from_slice(&args);
        assert_clean_error(&leanlm(&a), needle);
    }
}

/// The repetition penalty stops the loop greedy decoding falls into on a Wanda-50% copy of
/// the default model ("The French capital is a 2001, which is a bit of a luxury." over and
/// over, measured: a 6-token sequence five times in 96 tokens); with --repeat-penalty 1.1
/// no 6-token sequence occurs twice.
#[test]
fn the_repeat_penalty_stops_a_pruned_models_loop() {
    let m = model();
    let pruned = tmp("wanda50.gguf");
    let _ = std::fs::remove_file(&pruned);
    let calib = common::root().join("data/wikitext-2-raw/wiki.test.raw");
    let out = leanlm(&[
        "prune",
        m.to_str().unwrap(),
        "-o",
        pruned.to_str().unwrap(),
        "--method",
        "wanda",
        "--sparsity",
        "0.5",
        "--calib",
        calib.to_str().unwrap(),
        "--nsamples",
        "16",
        "--seqlen",
        "256",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let most_repeated = |penalty: &str| {
        let out = leanlm(&[
            "generate",
            pruned.to_str().unwrap(),
            "-p",
            "The capital of France is",
            "-n",
            "96",
            "--repeat-penalty",
            penalty,
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let t: Vec<u64> = j["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        let mut counts = std::collections::HashMap::new();
        for w in t.windows(6) {
            *counts.entry(w.to_vec()).or_insert(0) += 1;
        }
        (
            counts.into_values().max().unwrap_or(0),
            j["text"].as_str().unwrap().to_string(),
        )
    };
    let (plain, text) = most_repeated("1.0");
    assert!(
        plain >= 3,
        "the premise: plain greedy decoding loops ({plain}): {text}"
    );
    let (penalized, text) = most_repeated("1.1");
    assert_eq!(penalized, 1, "with the penalty: {text}");
    let _ = std::fs::remove_file(&pruned);
}

/// `leanlm chat` read from a pipe: two turns (the second reuses the first's tokens, and its
/// answer equals `generate --chat` on the same conversation's first turn), /save never
/// replaces a file, end of input exits.
#[test]
fn chat_keeps_the_conversation_and_saves_it() {
    use std::io::Write;
    let m = model();
    let saved = tmp("chat.json");
    let _ = std::fs::remove_file(&saved);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_leanlm"))
        .args(["chat", m.to_str().unwrap(), "-n", "16"])
        .current_dir(common::root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let s = saved.to_str().unwrap();
    let input = format!(
        "What is the capital of France?\n/help\nAnd of Italy?\n/save {s}\n/save {s}\n/bogus\n"
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let first = leanlm(&[
        "generate",
        m.to_str().unwrap(),
        "--chat",
        "-p",
        "What is the capital of France?",
        "-n",
        "16",
    ]);
    let first = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains(first.trim()), "{stdout} / {first}");
    let reused: Vec<&str> = stderr.lines().filter(|l| l.contains(" reused]")).collect();
    assert_eq!(reused.len(), 2, "{stderr}");
    assert!(reused[0].ends_with(" 0 reused]"), "{stderr}");
    assert!(
        !reused[1].ends_with(" 0 reused]"),
        "the second turn reuses the first: {stderr}"
    );
    assert!(stderr.contains("saved 4 messages"), "{stderr}");
    assert!(
        stderr.contains("an existing file is never replaced"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown command /bogus"), "{stderr}");
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    let roles: Vec<&str> = j["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    let _ = std::fs::remove_file(&saved);
}

#[test]
fn json_outputs_parse() {
    let m = model();
    let m = m.to_str().unwrap();
    let info: serde_json::Value =
        serde_json::from_slice(&leanlm(&["info", m, "--json"]).stdout).unwrap();
    assert_eq!(info["config"]["n_layers"], 30);
    assert_eq!(info["params"], 134_515_008);
    let tok: serde_json::Value =
        serde_json::from_slice(&leanlm(&["tokenize", m, "-p", "in 2024", "--json"]).stdout)
            .unwrap();
    assert_eq!(
        tok["pieces"],
        serde_json::json!(["in", " ", "2", "0", "2", "4"])
    );
}

/// `--samples-in` scores a samples file without running the model: a reference solution
/// passes, `pass` fails, a chat answer's example calls are sanitized away; a file that
/// lacks a problem or is not JSON lines is a clear error.
#[test]
fn humaneval_rescores_a_samples_file() {
    let bytes = std::fs::read(common::root().join("data/humaneval/HumanEval.jsonl.gz")).unwrap();
    let problems = leanlm::measure::humaneval::parse(&bytes).unwrap();
    let solution = problems[0].canonical_solution.clone().unwrap();
    let f = tmp("samples-in.jsonl");
    let lines = [
        serde_json::json!({"task_id": "HumanEval/0", "completion": solution}),
        serde_json::json!({"task_id": "HumanEval/1", "completion": "    pass\n"}),
    ];
    std::fs::write(
        &f,
        lines
            .iter()
            .map(|l| l.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let m = model();
    let run = |extra: &[&str]| {
        let mut a = vec![
            "eval",
            m.to_str().unwrap(),
            "--humaneval",
            "--problems",
            "2",
            "--json",
            "--samples-in",
            f.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        leanlm(&a)
    };
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            j["humaneval"]["passed"].as_u64(),
            j["humaneval"]["problems"].as_u64()
        ),
        (Some(1), Some(2))
    );
    // A chat answer: the whole function, then a call that would fail the program.
    let p = &problems[0];
    let answer = format!(
        "\n{}{}\nprint({}(None))\n",
        p.prompt, solution, p.entry_point
    );
    std::fs::write(
        &f,
        serde_json::json!({"task_id": "HumanEval/0", "completion": answer}).to_string(),
    )
    .unwrap();
    let out = leanlm(&[
        "eval",
        m.to_str().unwrap(),
        "--humaneval",
        "--problems",
        "1",
        "--json",
        "--chat",
        "--samples-in",
        f.to_str().unwrap(),
    ]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        j["humaneval"]["passed"].as_u64(),
        Some(1),
        "the example call is dropped"
    );
    assert_clean_error(&run(&[]), "has no sample for HumanEval/1");
    std::fs::write(&f, "{\"task_id\": 3}\n").unwrap();
    assert_clean_error(&run(&[]), "line 1");
    let _ = std::fs::remove_file(&f);
}

#[test]
fn eval_bad_inputs() {
    let m = model();
    let m = m.to_str().unwrap();
    let empty = tmp("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    assert_clean_error(
        &leanlm(&["eval", m, "--ppl", empty.to_str().unwrap()]),
        "is empty",
    );
    let latin1 = tmp("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait").unwrap();
    assert_clean_error(
        &leanlm(&["eval", m, "--ppl", latin1.to_str().unwrap()]),
        "not UTF-8",
    );
    let hs = tmp("bad_hellaswag.txt");
    std::fs::write(&hs, "ctx\n9\na\nb\nc\nd\n").unwrap();
    assert_clean_error(
        &leanlm(&["eval", m, "--hellaswag", hs.to_str().unwrap()]),
        "gold label \"9\" is not 0-3",
    );
    // HumanEval: a malformed problem file, a problem without its tests, no problems.
    let he = tmp("bad_humaneval.jsonl");
    std::fs::write(&he, "{\"task_id\": \"T/0\", \"prompt\"\n").unwrap();
    assert_clean_error(
        &leanlm(&["eval", m, "--humaneval", he.to_str().unwrap()]),
        "line 1: not JSON",
    );
    std::fs::write(
        &he,
        "{\"task_id\": \"T/0\", \"prompt\": \"def f():\\n\", \"entry_point\": \"f\"}\n",
    )
    .unwrap();
    assert_clean_error(
        &leanlm(&["eval", m, "--humaneval", he.to_str().unwrap()]),
        "missing field 'test'",
    );
    assert_clean_error(
        &leanlm(&["eval", m, "--humaneval", "--problems", "0"]),
        "at least 1",
    );
    assert_clean_error(&leanlm(&["eval", m, "--problems", "3"]), "--humaneval only");
    let existing = tmp("existing-samples.jsonl");
    std::fs::write(&existing, "mine\n").unwrap();
    assert_clean_error(
        &leanlm(&[
            "eval",
            m,
            "--humaneval",
            "--samples-out",
            existing.to_str().unwrap(),
        ]),
        "never overwrites",
    );
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "mine\n");
    let wiki = root().join("data/wikitext-2-raw/wiki.test.raw");
    let wiki = wiki.to_str().unwrap();
    assert_clean_error(&leanlm(&["eval", m, "--ppl", wiki, "-c", "1"]), "too small");
    assert_clean_error(
        &leanlm(&["eval", m, "--ppl", wiki, "-c", "9000"]),
        "larger than the model",
    );
    assert_clean_error(&leanlm(&["eval", m]), "nothing to evaluate");
    assert_clean_error(
        &leanlm(&["eval", m, "--ppl", wiki, "--calibrate-exit=-0.5"]),
        "budget ≥ 0",
    );
    assert_clean_error(
        &leanlm(&[
            "eval",
            m,
            "--ppl",
            wiki,
            "--calibrate-exit",
            "0.01",
            "--early-exit",
            "0.9",
        ]),
        "leave out --early-exit",
    );
}

#[test]
fn calibrated_early_exit_meets_its_budget_as_decoded() {
    let m = model();
    let wiki = root().join("data/wikitext-2/valid.txt");
    let out = leanlm(&[
        "eval",
        m.to_str().unwrap(),
        "--ppl",
        wiki.to_str().unwrap(),
        "-c",
        "128",
        "--chunks",
        "2",
        "--calibrate-exit",
        "0.05",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["positions"], 256);
    assert!(j["sweep"].as_array().unwrap().len() > 2);
    // Either a threshold whose decoded disagreement is within 5%, or never exiting.
    match j["realized"].as_object() {
        Some(r) => {
            assert!(r["disagreement"].as_f64().unwrap() <= 0.05, "{r:?}");
            assert_eq!(j["chosen"]["threshold"], r["threshold"]);
            assert!(r["mean_blocks"].as_f64().unwrap() < 30.0);
        }
        None => assert_eq!(j["never_exits"], true),
    }
}

#[test]
fn eval_base_with_another_vocabulary_is_refused() {
    // The default model with its vocabulary cut to 1,000 tokens.
    let p = rewritten("smallvocab.gguf", |meta| {
        for (k, v) in meta.iter_mut() {
            if let (true, Value::Array(a)) = (k.starts_with("tokenizer.ggml.t"), &mut *v) {
                a.truncate(1000);
            }
            if k == "tokenizer.ggml.merges" {
                *v = Value::Array(Array::String(vec![]));
            }
        }
    });
    let m = model();
    let wiki = root().join("data/wikitext-2-raw/wiki.test.raw");
    let out = leanlm(&[
        "eval",
        m.to_str().unwrap(),
        "--ppl",
        wiki.to_str().unwrap(),
        "--chunks",
        "1",
        "--base",
        p.to_str().unwrap(),
    ]);
    assert_clean_error(&out, "vocabulary");
    std::fs::remove_file(&p).ok();
}

/// llama.cpp's rule for a draft: the same token texts (sizes may differ by padding).
#[test]
fn a_draft_with_other_token_texts_is_refused() {
    // The default model with two token texts swapped: the same size, another vocabulary.
    let p = rewritten("swapped-vocab.gguf", |meta| {
        for (k, v) in meta.iter_mut() {
            if let (true, Value::Array(Array::String(a))) = (k == "tokenizer.ggml.tokens", &mut *v)
            {
                a.swap(300, 301);
            }
        }
    });
    let m = model();
    let m = m.to_str().unwrap();
    let out = leanlm(&[
        "generate",
        m,
        "-p",
        "Hello",
        "-n",
        "2",
        "--draft",
        p.to_str().unwrap(),
    ]);
    assert_clean_error(&out, "token 300 is");
    let out = leanlm(&["generate", m, "-p", "Hello", "-n", "2", "--draft", m]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&p).ok();
}

#[test]
fn prune_bad_inputs() {
    let m = model();
    let out = tmp("pruned.gguf");
    let short = tmp("short.txt");
    std::fs::write(&short, "only a few words of calibration text").unwrap();
    let s = short.to_str().unwrap();
    let cases: [(&[&str], &str); 9] = [
        (
            &["--sparsity", "1.0", "--method", "magnitude"],
            "sparsity must be in [0, 1)",
        ),
        (
            &["--sparsity=-0.1", "--method", "magnitude"],
            "sparsity must be in [0, 1)",
        ),
        (&["--pattern", "3:2", "--method", "magnitude"], "not N:M"),
        (&["--sparsity", "0.5"], "needs calibration text"),
        (
            &["--structured", "layers=30", "--calib", s],
            "at least one must remain",
        ),
        (
            &["--structured", "heads=2", "--calib", s],
            "remove a multiple of 3",
        ),
        (
            &["--structured", "ffn=1.5", "--calib", s],
            "must be in (0, 1)",
        ),
        (
            &["--sparsity", "0.5", "--calib", s, "--seqlen", "128"],
            "shorter than one sample",
        ),
        (&["--method", "magnitude"], "say how much to prune"),
    ];
    for (args, needle) in cases {
        assert_clean_error(&run_prune(&m, &out, args), needle);
        for left in [out.clone(), out.with_extension("gguf.data.partial")] {
            assert!(!left.exists(), "{args:?} left {} behind", left.display());
        }
    }
}

#[test]
fn prune_writes_a_model_that_info_reports_as_two_four() {
    let m = model();
    let out = tmp("mag24.gguf");
    let r = run_prune(
        &m,
        &out,
        &[
            "--method",
            "magnitude",
            "--pattern",
            "2:4",
            "--outtype",
            "q8_0",
            "--json",
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    // At least half: the 4-bit source already holds a few exact zeros.
    let sparsity = v["sparsity"].as_f64().unwrap();
    assert!((0.5..0.505).contains(&sparsity), "{sparsity}");
    let info = leanlm(&["info", out.to_str().unwrap(), "--json"]);
    assert!(info.status.success());
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("2:4"), "{text}");

    // The CLI streams blocks to the file as they are pruned; the file is byte for byte
    // the one the whole-model writer makes from the same pruned model.
    let loaded = leanlm::model::load(&m).unwrap();
    let src = &loaded.model;
    let cfg = PruneConfig {
        method: Method::Magnitude,
        pattern: Pattern::NM { n: 2, m: 4 },
        owl: None,
        sparsegpt: Default::default(),
    };
    let (pruned, _) =
        prune::collect(src, |sink| prune::prune(src, None, &cfg, &mut |_| {}, sink)).unwrap();
    let format = OutputFormat {
        out: OutType::Q8_0,
        source: GgmlType::Q4_1,
    };
    let (whole, dense_as) = format.model(&pruned).unwrap();
    let reference = tmp("mag24-whole.gguf");
    let meta = loaded.metadata_to_carry().unwrap();
    leanlm::model::save_gguf(&whole, meta, &reference, dense_as).unwrap();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&reference).unwrap());
    std::fs::remove_file(&out).ok();
    std::fs::remove_file(&reference).ok();
}

#[test]
fn prune_streams_a_hugging_face_folder_that_matches_its_gguf_twin() {
    let m = model();
    let (gguf, dir) = (tmp("mag50-f32.gguf"), tmp("mag50-hf"));
    let mut params = Vec::new();
    for out in [&gguf, &dir] {
        let r = run_prune(&m, out, &[&MAGNITUDE_50_F32[..], &["--json"]].concat());
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        params.push(v["params"].as_u64().unwrap());
    }
    for left in ["mag50-hf.partial", "mag50-f32.gguf.partial"] {
        assert!(!tmp(left).exists(), "{left} left behind");
    }
    let (a, b) = (
        leanlm::model::load(&gguf).unwrap(),
        leanlm::model::load(&dir).unwrap(),
    );
    assert_eq!(params[0], a.model.n_params() as u64);
    assert_eq!(params[1], b.model.n_params() as u64);
    assert_eq!(params[0], params[1]);
    // Same weights; Q/K rows are stored in different orders, so the sums differ in order.
    let t: Vec<u32> = (0..12u32).map(|i| 1 + i * 331 % 20_000).collect();
    let diff = max_logit_diff(&a.model, &b.model, &t);
    assert!(diff < 1e-3, "max logit difference {diff}");
    std::fs::remove_file(&gguf).ok();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ctrl_c_during_a_prune_leaves_nothing_behind() {
    let m = model();
    let out = tmp("interrupted.gguf");
    let spill = tmp("interrupted.gguf.data.partial");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_leanlm"))
        .args(["prune", m.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .args(MAGNITUDE_50_F32)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Interrupt once blocks are being written.
    let t0 = std::time::Instant::now();
    while !spill.exists() {
        assert!(t0.elapsed().as_secs() < 120, "no output started");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    for left in [&out, &spill, &tmp("interrupted.gguf.partial")] {
        assert!(!left.exists(), "{} left behind", left.display());
    }
}

#[test]
fn quantize_writes_k_quants_with_an_importance_matrix() {
    let m = model();
    let out = tmp("q4k.gguf");
    let r = leanlm(&[
        "quantize",
        m.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "q4_k",
        "--allow-requantize",
        "--imatrix",
        "data/wikitext-2/valid.txt",
        "--imatrix-samples",
        "2",
        "--imatrix-seqlen",
        "64",
        "--json",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    // SmolLM2's 576-wide rows are not whole 256-value super-blocks: only ffn_down is Q4_K,
    // the rest Q5_0 (llama-quantize's fallback).
    assert_eq!(v["block_matrices"]["Q4_K"], 30);
    assert_eq!(v["block_matrices"]["Q5_0"], 180);
    assert_eq!(v["imatrix"]["tokens"], 128);
    let g = leanlm(&[
        "generate",
        out.to_str().unwrap(),
        "-p",
        "The capital of France is",
        "-n",
        "4",
    ]);
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    std::fs::remove_file(&out).ok();
}

#[test]
fn sparse_gguf_round_trips_and_decodes_like_its_dense_copy() {
    let m = model();
    let pruned = tmp("mag50.gguf");
    let r = run_prune(&m, &pruned, &MAGNITUDE_50_F32);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (dense, sparse) = (tmp("mag50.q8.gguf"), tmp("mag50.sparse.gguf"));
    for (out, extra) in [(&dense, None), (&sparse, Some("--sparse=bitmap"))] {
        let mut args = vec![
            "quantize",
            pruned.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--type",
            "q8_0",
        ];
        args.extend(extra);
        let r = leanlm(&args);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    assert!(
        size(&sparse) * 10 < size(&dense) * 8,
        "{} vs {}",
        size(&sparse),
        size(&dense)
    );
    let info = leanlm(&["info", sparse.to_str().unwrap(), "--json"]);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    assert!(String::from_utf8_lossy(&info.stdout).contains("BITMAP_Q8"));
    let gen = |p: &std::path::Path| {
        let r = leanlm(&[
            "generate",
            p.to_str().unwrap(),
            "-p",
            "The history of",
            "-n",
            "16",
            "--json",
        ]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        v["tokens"].clone()
    };
    assert_eq!(gen(&sparse), gen(&dense));
    for p in [pruned, dense, sparse] {
        std::fs::remove_file(p).ok();
    }
}

#[test]
fn quantize_bad_inputs() {
    let m = model();
    let out = tmp("never.gguf");
    let o = out.to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["--type", "q4_0", "--sparse"], "--sparse"),
        (
            &["--type", "q4_k", "--imatrix", "no/such/file.txt"],
            "no/such/file.txt",
        ),
        (
            &[
                "--type",
                "q4_k",
                "--imatrix",
                "README.md",
                "--imatrix-seqlen",
                "100000",
            ],
            "context",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec![
            "quantize",
            m.to_str().unwrap(),
            "-o",
            o,
            "--allow-requantize",
        ];
        all.extend_from_slice(args);
        assert_clean_error(&leanlm(&all), needle);
        assert!(!out.exists());
    }
    // A quantized input is refused unless asked for, as llama-quantize does; unknown
    // names list what is known.
    let m = m.to_str().unwrap();
    assert_clean_error(
        &leanlm(&["quantize", m, "-o", o, "--type", "Q4_K_M"]),
        "--allow-requantize",
    );
    for (args, needle) in [
        (&["--type", "q7_k"][..], "Q4_K_M"),
        (
            &["--type", "q4_k", "--token-embedding-type", "q4_k_m"][..],
            "is a mix",
        ),
    ] {
        let mut all = vec!["quantize", m, "-o", o, "--allow-requantize"];
        all.extend_from_slice(args);
        let r = leanlm(&all);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success() && !err.contains("panicked") && err.contains(needle),
            "{err}"
        );
    }
    assert!(!out.exists());
}

#[test]
fn hostile_sparse_metadata_is_a_clean_error() {
    // A dense tensor claimed to be sparse: its layout check must refuse it by name.
    let p = rewritten("fake-sparse.gguf", |md| {
        md.push((
            "leanlm.sparse.blk.0.attn_q.weight.format".into(),
            Value::String("S24_Q8".into()),
        ));
    });
    assert_clean_error(
        &leanlm(&["info", p.to_str().unwrap()]),
        "blk.0.attn_q.weight",
    );
    std::fs::remove_file(&p).ok();
}
