//! `leanlm run RECIPE`: make every stage's model, measure every variant the same way, and
//! write the report. Each job is a `leanlm` child process whose product (a model file, or
//! its JSON output) is written atomically and keyed by content, so a re-run skips what is
//! done and an interrupted run continues where it stopped.

mod keys;
mod plan;
mod rows;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use plan::{Job, Product};

/// How a decode stage decodes, in words.
pub fn describe_decode(d: &leanlm::recipe::Decode) -> String {
    plan::describe(d, d.draft.as_deref())
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    leanlm run recipes/default.toml                 # writes runs/default/report.html\n  \
    leanlm run recipes/prune-wanda.toml -o runs/w   # another run folder\n  \
    leanlm run recipes/default.toml --tiny          # a one-minute smoke test of the recipe\n\n\
    Re-running the same recipe reuses every finished stage and measurement (they are keyed by\n\
    the content of their inputs and settings, and leanlm's version); after a change only what\n\
    depends on it runs again. A leanlm build with changed transforms needs a fresh run folder.\n\
    Interrupting (Ctrl-C, or a kill) loses at most the job in progress; distillation resumes\n\
    from its last checkpoint.")]
pub struct Args {
    /// Recipe file (TOML): see recipes/ and `leanlm recipe check`.
    recipe: PathBuf,
    /// Run folder [default: runs/NAME, or runs/NAME-tiny with --tiny].
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Shrink every count (calibration samples, steps, chunks, tasks, bench tokens) to
    /// check in about a minute that the recipe runs; the figures mean nothing.
    #[arg(long)]
    tiny: bool,
    /// Print the summary (every variant's figures) as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// An exclusive OS lock (`flock`) on `DIR/.lock`, held while the run is alive, so two runs
/// never share a folder: the kernel grants it to one process at a time and releases it
/// when that process exits, however it exits, so there is no stale lock to judge and the
/// file is never removed (removing it would let a third run lock a new file while the
/// second still holds the old one). The file holds the holder's pid, for the message.
pub struct Lock {
    /// Open for the life of the lock; closing it releases the lock.
    _file: std::fs::File,
}

impl Lock {
    pub fn take(dir: &Path) -> Result<Self> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::io::AsRawFd;

        let path = dir.join(".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own and keep open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
            // The holder writes its pid right after locking: read a little, whatever is there.
            let mut pid = String::new();
            let _ = (&file).take(32).read_to_string(&mut pid);
            let pid = pid.trim();
            anyhow::bail!(
                "{} is in use by another leanlm run (pid {}); wait for it or stop it",
                dir.display(),
                if pid.is_empty() { "unknown" } else { pid }
            );
        }
        let write_pid = |f: &mut std::fs::File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            write!(f, "{}", std::process::id())?;
            f.flush()
        };
        write_pid(&mut file).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Lock { _file: file })
    }
}

/// What a run folder holds at its top level (the files also as `NAME.partial`).
const RUN_ENTRIES: [&str; 11] = [
    ".lock",
    leanlm::model::destination::MARKER,
    "models",
    "jobs",
    "work",
    "plots",
    "results.jsonl",
    "summary.json",
    "report.md",
    "report.html",
    "report.svg",
];

/// Refuse a run folder that is neither new, nor a leanlm run folder (marked, or holding
/// nothing but what a run writes), before anything is written into it.
fn check_dir(dir: &Path) -> Result<()> {
    use leanlm::model::destination::{self, OutputKind};
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) if dir.exists() && !dir.is_dir() => {
            anyhow::bail!(
                "{}: a run folder must be a folder; this is a file",
                dir.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        Ok(entries) => entries,
    };
    if destination::is_marked(dir, OutputKind::RunFolder) {
        return Ok(());
    }
    // A folder of an earlier leanlm (no marker yet) or one being set up by a run that
    // started at the same moment holds only these names.
    for e in entries {
        let e = e.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let base = name.strip_suffix(".partial").unwrap_or(&name);
        if !RUN_ENTRIES.contains(&base) {
            anyhow::bail!(
                "{} holds files that are not a leanlm run ({}): name a new or empty run folder with -o",
                dir.display(),
                name
            );
        }
    }
    Ok(())
}

/// The run folder's layout and marker (the folder has passed [`check_dir`]).
fn create_dir(dir: &Path) -> Result<()> {
    use leanlm::model::destination::{self, OutputKind};
    for sub in ["models", "jobs", "work", "plots"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot write {}", dir.join(sub).display()))?;
    }
    if !destination::is_marked(dir, OutputKind::RunFolder) {
        destination::write_marker(dir, OutputKind::RunFolder)?;
    }
    Ok(())
}

/// Write `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn hms(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Run one job as a `leanlm` child process; its stderr (progress bars) goes to ours.
fn execute(job: &Job, threads: usize, interrupted: &AtomicBool) -> Result<()> {
    for s in &job.scratch {
        let _ = std::fs::remove_file(s);
    }
    let mut exe = std::env::current_exe().context("locating the leanlm binary")?;
    // Rebuilt while running: Linux names the old, deleted file "… (deleted)"; use the new one.
    if let Some(live) = exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        exe = PathBuf::from(live);
    }
    let mut cmd = Command::new(exe);
    cmd.arg("-t")
        .arg(threads.to_string())
        .args(&job.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; it makes the child die with the runner, so a
        // killed run leaves no orphan writing into the run folder.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let out = cmd.output().context("starting a leanlm job")?;
    if interrupted.load(Ordering::SeqCst) {
        anyhow::bail!("interrupted during {}", job.label);
    }
    if !out.status.success() {
        let line: Vec<String> = job
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        anyhow::bail!(
            "{} failed ({}); its command: leanlm -t {threads} {}",
            job.label,
            out.status,
            line.join(" ")
        );
    }
    match &job.product {
        Product::Model(p) if !p.exists() => {
            anyhow::bail!("{} finished without writing {}", job.label, p.display())
        }
        Product::Model(_) => Ok(()),
        Product::Json {
            path,
            records,
            schema,
        } => {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("{} printed no JSON", job.label))?;
            if !schema.accepts(&v) {
                anyhow::bail!(
                    "{} printed JSON without the figures the report needs",
                    job.label
                );
            }
            if let Some(r) = records {
                std::fs::rename(&r.partial, &r.done)
                    .with_context(|| format!("{} wrote no results file", job.label))?;
            }
            // The JSON comes last: its presence marks the job done.
            write_atomic(path, serde_json::to_string_pretty(&v)?.as_bytes())
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let text = leanlm::recipe::read_recipe(&a.recipe)?;
    let mut plan = leanlm::recipe::parse(&text, &a.recipe)?;
    leanlm::recipe::check_files(&plan, &text, &a.recipe)?;
    if a.tiny {
        plan.shrink();
    }
    let r = &plan.recipe;
    let dir = a.output.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(if a.tiny {
            format!("{}-tiny", r.name)
        } else {
            r.name.clone()
        })
    });
    check_dir(&dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot write {}", dir.display()))?;
    let _lock = Lock::take(&dir)?;
    create_dir(&dir)?;
    let threads = r.threads.unwrap_or_else(rayon::current_num_threads);
    eprintln!("leanlm run {}: hashing inputs…", a.recipe.display());
    let mut files = keys::FileKeys::default();
    let (variants, mut jobs) = plan::jobs(&plan, &dir, &mut files)?;
    let (pair, pair_jobs) = plan::pair_jobs(&plan, &dir, &mut files)?;
    if let (Some(_), Err(why)) = (&r.pair, &pair) {
        eprintln!("the recipe's [pair] is not run: {why}");
    }
    jobs.extend(pair_jobs);

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // The children get the same Ctrl-C and stop (distillation checkpoints first); the
        // runner waits for them, then stops too.
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let total_work: f64 = jobs
        .iter()
        .filter(|j| !j.product.done())
        .map(|j| j.work)
        .sum();
    let t0 = Instant::now();
    let (mut done_work, mut ran) = (0.0, 0usize);
    let n = jobs.len();
    for (i, job) in jobs.iter().enumerate() {
        if job.product.done() {
            eprintln!("[{}/{n}] {}: done earlier, reused", i + 1, job.label);
            continue;
        }
        let elapsed = t0.elapsed().as_secs_f64();
        // Work per second so far, blended with a prior guess (a 135M model on 2 cores,
        // worth 30 s of evidence) so that a few quick jobs do not swing the ETA.
        let rate = (done_work + 300.0 * 30.0) / (elapsed + 30.0);
        eprintln!(
            "[{}/{n}] {} · {} elapsed · run ETA {}",
            i + 1,
            job.label,
            hms(elapsed),
            hms((total_work - done_work) / rate)
        );
        execute(job, threads, &interrupted).with_context(|| {
            format!(
                "run stopped; `leanlm run {}{}` continues it",
                a.recipe.display(),
                a.output
                    .as_ref()
                    .map_or(String::new(), |o| format!(" -o {}", o.display()))
            )
        })?;
        done_work += job.work;
        ran += 1;
    }
    let summary = rows::summarize(&plan, &variants, &pair, &dir, threads, a.tiny)?;
    let written = rows::write_report(&summary, &variants, &dir)?;
    eprintln!(
        "\n{} jobs run, {} reused, {} · report: {}",
        ran,
        n - ran,
        hms(t0.elapsed().as_secs_f64()),
        written.display()
    );
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{}", leanlm::report::table(&summary.rows));
        println!("{}", leanlm::report::verdict(&summary));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_excludes_a_second_holder_until_the_first_is_gone() {
        let dir = std::env::temp_dir().join(format!("leanlm-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let first = Lock::take(&dir).unwrap();
        // flock locks belong to an open file: a second open, even in this process, waits.
        let e = Lock::take(&dir)
            .err()
            .expect("a second lock while the first is held");
        let expected = format!(
            "is in use by another leanlm run (pid {})",
            std::process::id()
        );
        assert!(e.to_string().contains(&expected), "{e}");
        drop(first);
        let again = Lock::take(&dir).expect("free once the holder is gone");
        drop(again);
        assert!(dir.join(".lock").exists(), "the lock file is never removed");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_folder_of_other_files_is_not_a_run_folder() {
        let dir = std::env::temp_dir().join(format!("leanlm-rundir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        check_dir(&dir).expect("a new folder");
        std::fs::create_dir_all(dir.join("jobs")).unwrap();
        std::fs::write(dir.join("report.md.partial"), b"").unwrap();
        check_dir(&dir).expect("only what a run writes");
        std::fs::write(dir.join("thesis.tex"), b"mine").unwrap();
        let e = check_dir(&dir).unwrap_err();
        assert!(e.to_string().contains("thesis.tex"), "{e}");
        leanlm::model::destination::write_marker(
            &dir,
            leanlm::model::destination::OutputKind::RunFolder,
        )
        .unwrap();
        check_dir(&dir).expect("a marked run folder");
        std::fs::remove_dir_all(&dir).ok();
    }
}
