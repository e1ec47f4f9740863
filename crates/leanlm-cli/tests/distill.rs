//! `leanlm distill` from the outside: bad input is refused before any work, and a run
//! killed with SIGKILL resumes to the same loss curve as one that was never stopped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use leanlm::model::gguf::{Array, Value};

/// A few thousand tokens of WikiText-2 validation text.
fn small_data() -> PathBuf {
    let text = std::fs::read_to_string(root().join("data/wikitext-2/valid.txt")).unwrap();
    let p = tmp("distill-data.txt");
    std::fs::write(&p, &text[..20_000]).unwrap();
    p
}

/// A one-block student taken from the teacher, short sequences: seconds per run.
fn tiny_run(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "distill",
        "--teacher",
        model().to_str().unwrap(),
        "--init-from-teacher",
        "layers=0",
        "-o",
        out.to_str().unwrap(),
        "--data",
        small_data().to_str().unwrap(),
        "--seq",
        "32",
        "--batch",
        "2",
        "--accum",
        "2",
        "--steps",
        "10",
        "--lr",
        "1e-3",
        "--warmup",
        "2",
        "--save-every",
        "2",
        "--eval-every",
        "0",
        "--eval-windows",
        "1",
        "--outtype",
        "f32",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn losses(log: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

fn log_of(out: &Path) -> PathBuf {
    PathBuf::from(format!("{}.log.jsonl", out.display()))
}

#[test]
fn sigkill_then_resume_gives_the_uninterrupted_loss_curve() {
    let bin = env!("CARGO_BIN_EXE_leanlm");
    // Uninterrupted.
    let a = tmp("straight.gguf");
    let r = Command::new(bin)
        .args(tiny_run(&a, &[]))
        .current_dir(root())
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let want = losses(&log_of(&a));
    assert_eq!(want.len(), 10);
    assert!(
        want[9].1 < want[0].1,
        "training does not lower the loss: {want:?}"
    );

    // Killed after a checkpoint, then resumed.
    let b = tmp("killed.gguf");
    let mut child = Command::new(bin)
        .args(tiny_run(&b, &[]))
        .current_dir(root())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let ckpt = PathBuf::from(format!("{}.ckpt", b.display()));
    loop {
        let steps = std::fs::read_to_string(log_of(&b)).map_or(0, |t| t.lines().count());
        if ckpt.exists() && steps >= 5 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint after 300 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(!b.exists(), "a killed run left an output");
    let r = Command::new(bin)
        .args(tiny_run(&b, &["--resume"]))
        .current_dir(root())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("resuming at step"), "{err}");
    let got = losses(&log_of(&b));
    assert_eq!(
        got.iter().map(|s| s.0).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    for ((s, x), (_, y)) in got.iter().zip(&want) {
        assert!(
            (x - y).abs() <= 1e-4 * y.abs(),
            "step {s}: {x} resumed vs {y} straight"
        );
    }
    // The student is a model the other commands load.
    let info = leanlm(&["info", b.to_str().unwrap()]);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    // Students and checkpoints are hundreds of MB: a passing test leaves none behind.
    for out in [&a, &b] {
        for p in [
            out.clone(),
            PathBuf::from(format!("{}.ckpt", out.display())),
            log_of(out),
        ] {
            std::fs::remove_file(p).ok();
        }
    }
}

#[test]
fn distill_bad_inputs() {
    let m = model();
    let m = m.to_str().unwrap();
    let data = small_data();
    let d = data.to_str().unwrap();
    let short = tmp("distill-short.txt");
    std::fs::write(&short, "a sentence far shorter than one training sequence").unwrap();
    let s = short.to_str().unwrap();
    let out = tmp("bad-student.gguf");
    let o = out.to_str().unwrap();
    let small_vocab = rewritten("distill-smallvocab.gguf", |meta| {
        for (k, v) in meta.iter_mut() {
            if let (true, Value::Array(a)) = (k.starts_with("tokenizer.ggml.t"), &mut *v) {
                a.truncate(1000);
            }
            if k == "tokenizer.ggml.merges" {
                *v = Value::Array(Array::String(vec![]));
            }
        }
    });
    let sv = small_vocab.to_str().unwrap();
    let init = ["--init-from-teacher", "layers=0"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--student", sv, "--data", d], "vocabular"),
        (
            [&init[..], &["--data", s, "--seq", "64"]].concat(),
            "window(s) of 64",
        ),
        (
            [&init[..], &["--data", d, "--hidden", "5:3"]].concat(),
            "--hidden 5:3",
        ),
        (
            [&init[..], &["--data", d, "--hidden", "1:31"]].concat(),
            "--hidden 1:31",
        ),
        (
            [&init[..], &["--data", d, "--lr", "0"]].concat(),
            "--lr 0 must be a positive",
        ),
        (
            [&init[..], &["--data", d, "--lr=-1e-4"]].concat(),
            "must be a positive",
        ),
        (
            vec!["--init-from-teacher", "layers=0,40", "--data", d],
            "layer 40 does not exist",
        ),
        (
            [&init[..], &["--data", d, "--loss", "jsd:2"]].concat(),
            "unknown loss",
        ),
        (
            [&init[..], &["--data", d, "--temperature", "0"]].concat(),
            "--temperature 0",
        ),
        (vec!["--data", d], "give the student"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["distill", "--teacher", m, "-o", o];
        all.extend_from_slice(&args);
        assert_clean_error(&leanlm(&all), needle);
        assert!(!out.exists(), "{args:?} left an output behind");
    }
    // A checkpoint from an earlier run is not overwritten by accident.
    let ckpt = PathBuf::from(format!("{o}.ckpt"));
    std::fs::write(&ckpt, b"earlier").unwrap();
    let mut all = vec!["distill", "--teacher", m, "-o", o, "--data", d];
    all.extend_from_slice(&init);
    assert_clean_error(&leanlm(&all), "--resume");
    std::fs::remove_file(&ckpt).unwrap();
    std::fs::remove_file(&small_vocab).ok();
}
