//! Peak memory for a hostile file stays a small multiple of its size: a 64 MB GGUF
//! holding one u8 array (which took 2 GB when every element became a 32-byte value).

mod common;

use std::process::{Command, Stdio};

use common::*;
use leanlm::model::gguf::{Array, GgufWriter, Value};

/// Run `leanlm ARGS…` and return (exit success, stderr, peak resident memory in bytes).
///
/// `wait4` reports this child's own rusage (RUSAGE_CHILDREN would mix in others). Linux
/// carries the spawning process's peak into the child's across `exec`, so our own peak is
/// first reset to our current size (`clear_refs` 5): the figure is then the child's peak
/// or our current size, whichever is larger, an upper bound. This file holds one test so
/// that no other test runs beside it in this process.
// The child is reaped by `wait4` below, which std's `wait` cannot replace (it discards
// the rusage).
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str]) -> (bool, String, u64) {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_leanlm"))
        .args(args)
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
    let mut status = 0;
    // SAFETY: a plain struct the kernel fills; `pid` is our unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // ru_maxrss is in kilobytes on Linux.
    (ok, err, usage.ru_maxrss as u64 * 1024)
}

#[test]
fn a_64_mb_one_array_gguf_stays_under_256_mb() {
    let p = tmp("one-array.gguf");
    let mut w = GgufWriter::create(&p).unwrap();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("big", Value::Array(Array::U8(vec![1; 64 << 20])));
    w.finish().unwrap();
    assert!(std::fs::metadata(&p).unwrap().len() >= 64 << 20);
    let (ok, err, peak) = run_measured(&["info", p.to_str().unwrap()]);
    std::fs::remove_file(&p).unwrap();
    println!(
        "peak RSS of `leanlm info` on a 64 MB one-array GGUF: {} MB",
        peak >> 20
    );
    // Not a model, so it fails, with one clear line.
    assert!(!ok && !err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(peak < 256 << 20, "peak RSS {} MB", peak >> 20);
}
