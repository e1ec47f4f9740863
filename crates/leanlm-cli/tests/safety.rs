//! What an output may never do: destroy a file leanlm did not create, replace the input,
//! or be shared by two runs at once; and what must fail loudly instead of silently: absurd
//! counts, device files in recipes, and training or evaluation figures that are NaN.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use leanlm::model::gguf::{GgufFile, GgufWriter, TensorData};
use leanlm::quant::GgmlType;

/// Magnitude pruning needs no calibration: a few seconds on the default model. A GGUF
/// output stores q8_0 (small), a Hugging Face folder f16.
fn quick(out: &str) -> [&'static str; 6] {
    let outtype = if out.ends_with(".gguf") {
        "q8_0"
    } else {
        "f16"
    };
    [
        "--method",
        "magnitude",
        "--sparsity",
        "0.5",
        "--outtype",
        outtype,
    ]
}

/// A scratch folder of its own for one test.
fn fresh_dir(name: &str) -> PathBuf {
    let d = tmp(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                m.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    m
}

fn assert_untouched(dir: &Path, before: &BTreeMap<PathBuf, Vec<u8>>) {
    let after = snapshot(dir);
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&after), names(before), "files added or removed");
    for (p, bytes) in before {
        assert!(after[p] == *bytes, "{} changed", p.display());
    }
}

/// `leanlm ARGS…` run in `dir`.
fn leanlm_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leanlm"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// `leanlm prune M -o OUT` (quick settings) with `extra`.
fn prune_args(m: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let (m, out) = (m.to_str().unwrap(), out.to_str().unwrap());
    let mut v: Vec<String> = ["prune", m, "-o", out].map(String::from).into();
    v.extend(quick(out).map(String::from));
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run(args: &[String]) -> Output {
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    leanlm(&a)
}

fn run_in(dir: &Path, args: &[String]) -> Output {
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    leanlm_in(dir, &a)
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn output_dot_leaves_the_working_directory_untouched() {
    let m = model();
    let dir = fresh_dir("cwd");
    std::fs::write(dir.join("notes.txt"), b"my notes").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/data.bin"), [1u8, 2, 3]).unwrap();
    let before = snapshot(&dir);
    for out in [".", "./", "sub"] {
        for extra in [&[][..], &["--force"]] {
            let args = prune_args(&m, Path::new(out), extra);
            assert_clean_error(&run_in(&dir, &args), "not a folder leanlm wrote");
            assert_untouched(&dir, &before);
        }
    }
    // distill's output follows the same rules.
    let out = leanlm_in(
        &dir,
        &[
            "distill",
            "--teacher",
            m.to_str().unwrap(),
            "--init-from-teacher",
            "layers=0",
            "-o",
            ".",
            "--data",
            "notes.txt",
            "--force",
        ],
    );
    assert_clean_error(&out, "not a folder leanlm wrote");
    assert_untouched(&dir, &before);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_existing_folder_holding_the_input_is_never_replaced() {
    let dir = fresh_dir("existing");
    let input = dir.join("model.gguf");
    std::fs::copy(model(), &input).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"mine\": true}").unwrap();
    std::fs::write(dir.join("README"), b"keep me").unwrap();
    let before = snapshot(&dir);
    for extra in [&[][..], &["--force"]] {
        assert_clean_error(
            &run(&prune_args(&input, &dir, extra)),
            "not a folder leanlm wrote",
        );
        assert_untouched(&dir, &before);
    }
    // Nor is the input itself, however it is spelled.
    let again = dir
        .join("..")
        .join(dir.file_name().unwrap())
        .join("model.gguf");
    for out in [&input, &again] {
        let args = prune_args(&input, out, &["--force"]);
        assert_clean_error(&run(&args), "is an input of this command");
        let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
        let q = ["quantize", i, "-o", o, "--type", "q8_0", "--force"];
        assert_clean_error(&leanlm(&q), "is an input of this command");
    }
    assert_untouched(&dir, &before);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn force_replaces_only_leanlm_files_of_a_marked_folder() {
    let m = model();
    let dir = fresh_dir("force");
    let out = dir.join("hf");
    assert_ok(&run(&prune_args(&m, &out, &[])));
    assert!(out.join(".leanlm-output").is_file(), "no marker");
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let config = std::fs::read(out.join("config.json")).unwrap();
    let weights = std::fs::read(out.join("model.safetensors")).unwrap();

    // Without --force: refused, nothing changes.
    let before = snapshot(&dir);
    let mut args = prune_args(&m, &out, &[]);
    args[7] = "0.25".into(); // --sparsity
    assert_clean_error(&run(&args), "add --force");
    assert_untouched(&dir, &before);

    // With --force: leanlm's files are new, the user's file is still there.
    args.push("--force".into());
    assert_ok(&run(&args));
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), config);
    assert!(
        std::fs::read(out.join("model.safetensors")).unwrap() != weights,
        "not replaced"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["hf"], "temporaries left beside the output");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gguf_outputs_need_force_and_replace_only_a_gguf() {
    let m = model();
    let dir = fresh_dir("gguf");
    let out = dir.join("out.gguf");
    let notes = dir.join("notes.gguf");
    std::fs::write(&notes, b"not a model").unwrap();
    assert_clean_error(
        &run(&prune_args(&m, &notes, &["--force"])),
        "is not a GGUF file",
    );
    assert_eq!(std::fs::read(&notes).unwrap(), b"not a model");

    // A prune killed mid-write leaves its temporaries; the next run removes them.
    let mut child = Command::new(env!("CARGO_BIN_EXE_leanlm"))
        .args(prune_args(&m, &out, &[]))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let spill = dir.join("out.gguf.data.partial");
    let t0 = Instant::now();
    while !spill.exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no output started");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(spill.exists() && !out.exists());
    std::fs::write(dir.join("out.gguf.partial"), b"GGUF half").unwrap();
    assert_ok(&run(&prune_args(&m, &out, &[])));
    assert!(!spill.exists() && !dir.join("out.gguf.partial").exists());

    // The output now exists: refused without --force, replaced with it.
    let len = std::fs::metadata(&out).unwrap().len();
    assert_clean_error(&run(&prune_args(&m, &out, &[])), "add --force");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), len);
    assert_ok(&run(&prune_args(&m, &out, &["--force"])));
    assert_eq!(std::fs::read(&notes).unwrap(), b"not a model");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_stale_partial_folder_with_foreign_files_is_refused_not_deleted() {
    let dir = fresh_dir("stale-hf");
    let partial = dir.join("hf.partial");
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("thesis.tex"), b"years of work").unwrap();
    let before = snapshot(&dir);
    let args = prune_args(&model(), &dir.join("hf"), &[]);
    assert_clean_error(&run(&args), "not written by leanlm");
    assert_untouched(&dir, &before);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_write_that_fails_says_cannot_write() {
    let dir = fresh_dir("unwritable");
    let file = dir.join("somefile");
    std::fs::write(&file, b"x").unwrap();
    let args = prune_args(&model(), &file.join("out.gguf"), &[]);
    assert_clean_error(&run(&args), "cannot write");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn absurd_counts_are_clean_errors() {
    let m = model();
    let m = m.to_str().unwrap();
    for t in ["0", "10000", "1025"] {
        assert_clean_error(
            &leanlm(&["-t", t, "info", m]),
            "thread count must be between",
        );
    }
    assert_clean_error(
        &leanlm(&["generate", m, "-p", "Hello", "-n", "18446744073709551615"]),
        "but the context holds 8192",
    );
    assert_clean_error(
        &leanlm(&["generate", m, "-p", "Hello", "-n", "9000"]),
        "but the context holds 8192",
    );
    assert_clean_error(&leanlm(&["bench", m, "-r", "100000"]), "at most 1000");
    let layers = [
        "distill",
        "--teacher",
        m,
        "--init-from-teacher",
        "layers=0-18446744073709551615",
        "-o",
        "/nonexistent/x.gguf",
        "--data",
        "data/wikitext-2/valid.txt",
    ];
    assert_clean_error(&leanlm(&layers), "bad layer list");
    let calib = [
        "prune",
        m,
        "-o",
        "/nonexistent/x.gguf",
        "--calib",
        "data/wikitext-2/valid.txt",
        "--sparsity",
        "0.5",
        "--nsamples",
        "18446744073709551615",
        "--seqlen",
        "512",
    ];
    assert_clean_error(&leanlm(&calib), "tokens in all");
}

/// A recipe with no stages: the original's info, eval and bench, in seconds.
fn small_recipe(name: &str, extra: &str) -> PathBuf {
    let p = tmp(&format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\nmodel = \"models/SmolLM2-135M-Instruct.Q4_1.gguf\"\n\n\
             [eval]\nppl = \"data/wikitext-2-raw/wiki.test.raw\"\nctx = 64\nchunks = 1\n\n\
             [eval.bench]\nprompt = 8\ngen = 4\nreps = 1\n{extra}"
        ),
    )
    .unwrap();
    p
}

fn job_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("jobs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect()
}

#[test]
fn two_runs_on_one_folder_never_both_run_jobs() {
    model();
    let recipe = small_recipe("lock", "");
    let dir = tmp("run-lock");
    let _ = std::fs::remove_dir_all(&dir);
    let (r, d) = (recipe.to_str().unwrap(), dir.to_str().unwrap());
    for round in 0..3 {
        // Jobs to run in every round: the finished ones are removed.
        if dir.exists() {
            for f in job_files(&dir) {
                std::fs::remove_file(f).unwrap();
            }
        }
        let spawn = || {
            Command::new(env!("CARGO_BIN_EXE_leanlm"))
                .args(["run", r, "-o", d, "--json"])
                .current_dir(root())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let ok: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(ok.len(), 1, "round {round}: both or neither ran");
        let loser = outs.iter().find(|o| !o.status.success()).unwrap();
        assert_clean_error(loser, "is in use by another leanlm run (pid ");
        let err = String::from_utf8_lossy(&loser.stderr);
        assert!(
            !err.contains("] info"),
            "the refused run started jobs: {err}"
        );
    }

    // A job file with wrong contents is run again, never reused as finished.
    let info = job_files(&dir)
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("info-")
        })
        .unwrap();
    std::fs::write(&info, b"{\"params\": \"lots\"}").unwrap();
    let out = leanlm(&["run", r, "-o", d, "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("info original: done earlier"), "{err}");
    assert!(err.contains("bench original: done earlier"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&info).unwrap()).unwrap();
    assert!(v["params"].is_u64(), "the job file was not rewritten");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_run_folder_of_other_files_is_refused() {
    let dir = fresh_dir("run-foreign");
    std::fs::write(dir.join("paper.pdf"), b"%PDF").unwrap();
    let before = snapshot(&dir);
    let recipe = small_recipe("foreign", "");
    let out = leanlm(&["run", recipe.to_str().unwrap(), "-o", dir.to_str().unwrap()]);
    assert_clean_error(&out, "not a leanlm run");
    assert_untouched(&dir, &before);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn device_files_in_a_recipe_are_refused_before_any_work() {
    let recipe = small_recipe("devzero", "").to_str().unwrap().to_string();
    let text = std::fs::read_to_string(&recipe).unwrap();
    std::fs::write(
        &recipe,
        text.replace("data/wikitext-2-raw/wiki.test.raw", "/dev/zero"),
    )
    .unwrap();
    let dir = tmp("devzero-run");
    for args in [
        vec!["recipe", "check", &recipe],
        vec!["run", &recipe, "-o", dir.to_str().unwrap()],
    ] {
        let out = leanlm(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted /dev/zero");
        assert!(err.contains("/dev/zero is not a regular file"), "{err}");
    }
    assert!(!dir.exists(), "run started work");
    assert_clean_error(
        &leanlm(&["recipe", "check", "/dev/zero"]),
        "must be a regular file",
    );
}

#[test]
fn diverging_distillation_stops_with_the_step_named() {
    let text = std::fs::read_to_string(root().join("data/wikitext-2/valid.txt")).unwrap();
    let data = tmp("nan-data.txt");
    std::fs::write(&data, &text[..20_000]).unwrap();
    let out = tmp("nan.gguf");
    let m = model();
    let args = [
        "distill",
        "--teacher",
        m.to_str().unwrap(),
        "--init-from-teacher",
        "layers=0",
        "-o",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--seq",
        "32",
        "--batch",
        "1",
        "--accum",
        "1",
        "--steps",
        "3",
        "--warmup",
        "0",
        "--lr",
        "1e308",
        "--eval-every",
        "0",
        "--eval-windows",
        "1",
        "--outtype",
        "f32",
    ];
    // Distillation prints its plan first; the error is the last line.
    let r = leanlm(&args);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && !err.contains("panicked"), "{err}");
    let last = err.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: distillation diverged at step "),
        "{err}"
    );
    assert!(!out.exists(), "a diverged student was written");

    // In a recipe, the stage fails and so does the run.
    let recipe = small_recipe(
        "nan",
        "\n[[stage]]\nname = \"blown\"\ntype = \"distill\"\nteacher = \"original\"\n\
         init = \"layers=0\"\ndata = [\"data/wikitext-2/valid.txt\"]\nsteps = 2\nseq = 32\n\
         batch = 1\naccum = 1\nwarmup = 0\nlr = 1e308\n",
    );
    let dir = tmp("run-nan");
    let _ = std::fs::remove_dir_all(&dir);
    let r = leanlm(&["run", recipe.to_str().unwrap(), "-o", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "the run succeeded: {err}");
    assert!(err.contains("distillation diverged at step "), "{err}");
    assert!(err.contains("distill blown failed"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn eval_fails_when_a_figure_is_not_finite() {
    // Finite weights whose logits overflow: a final norm of 3e38 makes them infinite.
    let f = GgufFile::open(model()).unwrap();
    let p = tmp("overflow.gguf");
    let mut w = GgufWriter::create(&p).unwrap();
    for (k, v) in &f.metadata {
        w.set(k, v.clone());
    }
    for t in &f.tensors {
        let mut bytes = f.tensor_bytes(t).to_vec();
        if t.name == "output_norm.weight" {
            assert_eq!(t.dtype, GgmlType::F32);
            bytes = bytes
                .chunks(4)
                .flat_map(|_| 3e38f32.to_le_bytes())
                .collect();
        }
        w.add_tensor(TensorData {
            name: t.name.clone(),
            dims: t.dims.clone(),
            dtype: t.dtype,
            bytes,
        })
        .unwrap();
    }
    w.finish().unwrap();
    let results = tmp("overflow-results.jsonl");
    let out = leanlm(&[
        "eval",
        p.to_str().unwrap(),
        "--ppl",
        "data/wikitext-2-raw/wiki.test.raw",
        "-c",
        "64",
        "--chunks",
        "1",
        "--json",
        "--results",
        results.to_str().unwrap(),
    ]);
    assert_clean_error(&out, "not a finite number");
    assert!(!results.exists(), "a NaN figure reached the results file");
    std::fs::remove_file(&p).ok();
}

#[test]
fn distill_never_truncates_a_file_named_as_its_log() {
    let dir = fresh_dir("log");
    let log = dir.join("notes.txt");
    std::fs::write(&log, b"my notes").unwrap();
    let m = model();
    let out = dir.join("out.gguf");
    let args = [
        "distill",
        "--teacher",
        m.to_str().unwrap(),
        "--init-from-teacher",
        "layers=0",
        "-o",
        out.to_str().unwrap(),
        "--data",
        "data/wikitext-2/valid.txt",
        "--log",
        log.to_str().unwrap(),
    ];
    assert_clean_error(&leanlm(&args), "already exists: add --force");
    assert_eq!(std::fs::read(&log).unwrap(), b"my notes");
    std::fs::remove_dir_all(&dir).ok();
}
