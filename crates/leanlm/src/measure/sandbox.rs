//! Running untrusted programs (model-written code) confined, reporting only how they ended.
//!
//! Each program runs in a process of its own session and process group, with a cleared
//! environment, under resource limits (CPU seconds, address space, file size, open files,
//! processes) and a wall-clock deadline after which the whole group is killed. Its output
//! goes to `/dev/null`: the result is the exit status and nothing else.
//!
//! Where the kernel allows it without root ([`Isolation::Namespaces`], the normal case on
//! Linux), the program also gets new user, mount, network, PID, IPC and UTS namespaces and
//! a root of its own: a small fresh tmpfs holding read-only bind mounts of the system
//! directories and the interpreter, `/dev/{null,zero,random,urandom}`, a writable `/work`
//! (its current directory) and `/tmp`. The old root is detached (`pivot_root`), so no file of
//! the user is visible at all, let alone writable; the network namespace has only a loopback
//! device that is down; the program is PID 1 of its namespace, so every process it starts
//! dies with it. It runs without capabilities (a non-zero uid inside the namespace,
//! `no_new_privs`). Run as root, leanlm first drops to uid/gid 65534 (`nobody`), so that the
//! process limit applies (the kernel exempts root from it) and nothing it touches is root's.
//!
//! Where namespaces are refused (a container without user namespaces) and leanlm runs as
//! root, [`Isolation::Unprivileged`] is the fallback: `nobody`, the limits and a fresh
//! temporary directory, which is removed afterwards. There the program can still read what
//! any user can read, write to world-writable directories such as `/tmp`, and reach the
//! network. Without namespaces and without root there is no way to keep the program away
//! from the user's own files, and [`Sandbox::new`] refuses.
//!
//! Not protected against, in either mode: kernel exploits; reading world-readable system
//! files (`/usr`, and in the fallback anything world-readable); CPU and memory use up to the
//! limits; side channels. The process limit counts every process of the uid the program
//! runs as, so it is set relative to how many that uid already has.
//!
//! Written with raw system calls (`libc`) because the confinement steps must run between
//! fork and exec, where only async-signal-safe calls are allowed: everything they need is
//! prepared beforehand, and the child allocates nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};

/// What a confined program may use.
#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    /// CPU seconds (`RLIMIT_CPU`).
    pub cpu_secs: u64,
    /// Wall-clock time before the whole process group is killed.
    pub wall: Duration,
    /// Address space in bytes (`RLIMIT_AS`).
    pub memory_bytes: u64,
    /// Largest file it may write (`RLIMIT_FSIZE`).
    pub file_bytes: u64,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: u64,
    /// Processes beyond those its uid already runs (`RLIMIT_NPROC`).
    pub processes: u64,
    /// Size of the fresh tmpfs that holds `/work` and `/tmp` (namespaces only).
    pub scratch_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_secs: 10,
            wall: Duration::from_secs(10),
            memory_bytes: 2 << 30,
            file_bytes: 16 << 20,
            open_files: 64,
            processes: 32,
            scratch_bytes: 64 << 20,
        }
    }
}

/// How a program is kept apart from the rest of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Isolation {
    /// New user, mount, network, PID, IPC and UTS namespaces and a root of its own.
    Namespaces,
    /// No namespaces: uid `nobody`, the limits and a fresh temporary directory.
    Unprivileged,
}

/// How a confined program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// It exited with this status.
    Exited(i32),
    /// A signal ended it (the CPU limit's SIGXCPU/SIGKILL, a crash).
    Signaled(i32),
    /// It was still running at the wall-clock deadline and was killed with its group.
    TimedOut,
}

impl Outcome {
    pub fn success(&self) -> bool {
        *self == Outcome::Exited(0)
    }
}

/// A Python interpreter with the confinement to run programs in.
pub struct Sandbox {
    interpreter: PathBuf,
    limits: Limits,
    isolation: Isolation,
    #[cfg(target_os = "linux")]
    setup: linux::Setup,
}

impl Sandbox {
    /// Finds an interpreter (`python`, else `python3` on `PATH`, else `/usr/bin/python3`)
    /// that runs in the strongest isolation the kernel allows, checked by running a program
    /// in it.
    pub fn new(python: Option<&Path>, limits: Limits) -> Result<Sandbox> {
        #[cfg(target_os = "linux")]
        {
            linux::new(python, limits)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (python, limits);
            Err(Error::InvalidInput(
                "running generated code needs Linux (namespaces and rlimits)".into(),
            ))
        }
    }

    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    pub fn interpreter(&self) -> &Path {
        &self.interpreter
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs `program` (Python source) confined and says how it ended.
    pub fn run(&self, program: &str) -> Result<Outcome> {
        #[cfg(target_os = "linux")]
        {
            linux::run(self, program.as_bytes())
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = program;
            unreachable!("a Sandbox is only made on Linux")
        }
    }
}

/// Waits for `child` until `deadline`, then kills its process group (and the child).
fn wait_until(child: &mut std::process::Child, wall: Duration) -> std::io::Result<Outcome> {
    let deadline = Instant::now() + wall;
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(outcome(status));
        }
        if Instant::now() >= deadline {
            kill_group(child.id());
            let _ = child.wait()?;
            return Ok(Outcome::TimedOut);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn outcome(status: std::process::ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => Outcome::Exited(c),
        (None, Some(s)) => Outcome::Signaled(s),
        (None, None) => Outcome::Exited(-1),
    }
}

fn kill_group(pid: u32) {
    // SAFETY: plain system calls on a process (group) id we spawned; failures (already
    // gone) are harmless.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

fn sandbox_error(what: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("sandbox: {what}"))
}

/// How many processes `uid` runs now, from `/proc` (the sandbox's process limit counts
/// them; tests use it to see that nothing a sample started outlives it).
#[cfg(target_os = "linux")]
pub fn processes_of(uid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            std::os::unix::ffi::OsStrExt::as_bytes(e.file_name().as_os_str())
                .iter()
                .all(u8::is_ascii_digit)
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|u| u.parse::<u32>().ok())
                == Some(uid)
        })
        .count() as u64
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    use super::{sandbox_error, wait_until, Isolation, Limits, Outcome, Sandbox};
    use crate::error::Result;

    const NOBODY: u32 = 65534;
    /// Where the new root is assembled (a tmpfs mounted over it, in the new mount namespace).
    const STAGE: &str = "/tmp";
    const DEVICES: [&str; 4] = ["null", "zero", "random", "urandom"];
    const SYSTEM_DIRS: [&str; 7] = [
        "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
    ];

    /// Everything the child needs between fork and exec, prepared in the parent.
    #[derive(Clone)]
    pub struct Setup {
        /// Run as this uid/gid (after dropping from root), and map it to itself inside.
        uid: u32,
        gid: u32,
        drop_root: bool,
        uid_map: CString,
        gid_map: CString,
        tmpfs_options: CString,
        /// Directories to create in the new root, parents first.
        dirs: Vec<CString>,
        /// Read-only bind mounts: source, target, flags the source mount already has.
        binds: Vec<(CString, CString, libc::c_ulong)>,
        /// Symbolic links to recreate (merged-/usr systems): target, link path.
        links: Vec<(CString, CString)>,
        /// Device nodes: source, target file.
        devices: Vec<(CString, CString)>,
        scratch_tmp: CString,
        work: CString,
        program_path: CString,
        old_root: CString,
        /// For the fallback: the host directory to run in.
        host_dir: Option<CString>,
    }

    pub fn new(python: Option<&Path>, limits: Limits) -> Result<Sandbox> {
        let candidates: Vec<PathBuf> = match python {
            Some(p) => vec![p.to_path_buf()],
            None => {
                let mut c: Vec<PathBuf> = std::env::var_os("PATH")
                    .map(|p| {
                        std::env::split_paths(&p)
                            .map(|d| d.join("python3"))
                            .collect()
                    })
                    .unwrap_or_default();
                c.retain(|p| p.is_file());
                c.truncate(1);
                c.push("/usr/bin/python3".into());
                c
            }
        };
        let mut tried = Vec::new();
        for c in candidates {
            match try_interpreter(&c, &limits) {
                Ok(s) => return Ok(s),
                Err(e) => tried.push(format!("{}: {e}", c.display())),
            }
        }
        Err(sandbox_error(format!(
            "no Python interpreter runs confined ({}); name one every user can read with --python",
            tried.join("; ")
        )))
    }

    fn try_interpreter(candidate: &Path, limits: &Limits) -> Result<Sandbox> {
        // Ask the interpreter where it really lives (a pyenv shim is a shell script).
        let out = Command::new(candidate)
            .args([
                "-I",
                "-c",
                "import sys; print(sys.executable); print(sys.base_prefix)",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| sandbox_error(format!("cannot run it: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let (Some(exe), Some(prefix)) = (lines.next(), lines.next()) else {
            return Err(sandbox_error("it did not report sys.executable"));
        };
        let exe = PathBuf::from(exe);
        let prefix = PathBuf::from(prefix);
        let mut errors = Vec::new();
        for isolation in [Isolation::Namespaces, Isolation::Unprivileged] {
            let setup = match prepare(isolation, &exe, &prefix, limits) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("{isolation:?}: {e}"));
                    continue;
                }
            };
            let sandbox = Sandbox {
                interpreter: exe.clone(),
                limits: limits.clone(),
                isolation,
                setup,
            };
            match sandbox.run("import sys\nsys.exit(0)\n") {
                Ok(Outcome::Exited(0)) => return Ok(sandbox),
                Ok(o) => errors.push(format!("{isolation:?}: a trivial program ended {o:?}")),
                Err(e) => errors.push(format!("{isolation:?}: {e}")),
            }
        }
        Err(sandbox_error(errors.join(", ")))
    }

    fn cstr(s: impl AsRef<[u8]>) -> Result<CString> {
        CString::new(s.as_ref().to_vec()).map_err(|_| sandbox_error("a path holds a NUL byte"))
    }

    fn cpath(p: &Path) -> Result<CString> {
        cstr(p.as_os_str().as_bytes())
    }

    /// Flags a read-only remount must keep: the kernel refuses to clear flags of a mount
    /// made in a more privileged namespace.
    fn locked_flags(path: &Path) -> Result<libc::c_ulong> {
        let c = cpath(path)?;
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and an out-pointer to a zeroed struct.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return Err(sandbox_error(format!(
                "statvfs {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        let pairs = [
            (libc::ST_NOSUID, libc::MS_NOSUID),
            (libc::ST_NODEV, libc::MS_NODEV),
            (libc::ST_NOEXEC, libc::MS_NOEXEC),
            (libc::ST_NOATIME, libc::MS_NOATIME),
            (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
            (libc::ST_RELATIME, libc::MS_RELATIME),
        ];
        Ok(pairs
            .iter()
            .filter(|(st, _)| s.f_flag & *st != 0)
            .fold(0, |acc, (_, ms)| acc | *ms))
    }

    fn prepare(isolation: Isolation, exe: &Path, prefix: &Path, limits: &Limits) -> Result<Setup> {
        // SAFETY: trivial getters.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let drop_root = euid == 0;
        let (uid, gid) = if drop_root {
            (NOBODY, NOBODY)
        } else {
            (euid, egid)
        };
        if isolation == Isolation::Unprivileged && !drop_root {
            return Err(sandbox_error(
                "without namespaces only root can run a program as another user, and running \
                 it as you would expose your files",
            ));
        }
        let stage = Path::new(STAGE);
        let mut dirs = Vec::new();
        let mut binds = Vec::new();
        let mut links = Vec::new();
        let mut bound: Vec<PathBuf> = Vec::new();
        let mkdir_all = |dirs: &mut Vec<CString>, inside: &Path| -> Result<()> {
            let mut p = stage.to_path_buf();
            for comp in inside.components().skip(1) {
                p.push(comp);
                let c = cpath(&p)?;
                if !dirs.contains(&c) {
                    dirs.push(c);
                }
            }
            Ok(())
        };
        if isolation == Isolation::Namespaces {
            for d in SYSTEM_DIRS {
                let d = Path::new(d);
                let Ok(meta) = std::fs::symlink_metadata(d) else {
                    continue;
                };
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(d).map_err(sandbox_error)?;
                    links.push((
                        cpath(&target)?,
                        cpath(&stage.join(d.strip_prefix("/").unwrap_or(d)))?,
                    ));
                } else if meta.is_dir() {
                    mkdir_all(&mut dirs, d)?;
                    binds.push((
                        cpath(d)?,
                        cpath(&stage.join(d.strip_prefix("/").unwrap_or(d)))?,
                        locked_flags(d)?,
                    ));
                    bound.push(d.to_path_buf());
                }
            }
            // The interpreter's own tree when it lives elsewhere (a pyenv or venv prefix).
            let real_exe = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
            for p in [
                prefix.to_path_buf(),
                real_exe.parent().unwrap_or(prefix).to_path_buf(),
            ] {
                let p = std::fs::canonicalize(&p).unwrap_or(p);
                if !bound.iter().any(|b| p.starts_with(b)) && p.is_dir() {
                    mkdir_all(&mut dirs, &p)?;
                    binds.push((
                        cpath(&p)?,
                        cpath(&stage.join(p.strip_prefix("/").unwrap_or(&p)))?,
                        locked_flags(&p)?,
                    ));
                    bound.push(p);
                }
            }
            if !bound.iter().any(|b| exe.starts_with(b)) && !exe.starts_with("/bin") {
                return Err(sandbox_error(format!(
                    "{} is outside the directories the sandbox mounts",
                    exe.display()
                )));
            }
            dirs.push(cpath(&stage.join("dev"))?);
        }
        let devices = DEVICES
            .iter()
            .map(|d| {
                Ok((
                    cstr(format!("/dev/{d}"))?,
                    cstr(format!("{STAGE}/dev/{d}"))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Setup {
            uid,
            gid,
            drop_root,
            uid_map: cstr(format!("{uid} {uid} 1\n"))?,
            gid_map: cstr(format!("{gid} {gid} 1\n"))?,
            tmpfs_options: cstr(format!(
                "size={},mode=0755",
                limits.scratch_bytes.max(1 << 20)
            ))?,
            dirs,
            binds,
            links,
            devices,
            scratch_tmp: cstr(format!("{STAGE}/tmp"))?,
            work: cstr(format!("{STAGE}/work"))?,
            program_path: cstr(format!("{STAGE}/work/main.py"))?,
            old_root: cstr(format!("{STAGE}/.old"))?,
            host_dir: None,
        })
    }

    pub fn run(sandbox: &Sandbox, program: &[u8]) -> Result<Outcome> {
        let mut setup = sandbox.setup.clone();
        let limits = &sandbox.limits;
        // The fallback runs in a host directory made for this program alone.
        let host = match sandbox.isolation {
            Isolation::Namespaces => None,
            Isolation::Unprivileged => {
                let dir = fresh_dir()?;
                let file = dir.join("main.py");
                std::fs::write(&file, program).map_err(sandbox_error)?;
                let c = cpath(&dir)?;
                for p in [&dir, &file] {
                    let cp = cpath(p)?;
                    // SAFETY: valid C string; we own the path.
                    if unsafe { libc::chown(cp.as_ptr(), setup.uid, setup.gid) } != 0 {
                        let _ = std::fs::remove_dir_all(&dir);
                        return Err(sandbox_error(std::io::Error::last_os_error()));
                    }
                }
                setup.host_dir = Some(c);
                Some(dir)
            }
        };
        let rl = [
            (libc::RLIMIT_CPU, limits.cpu_secs),
            (libc::RLIMIT_AS, limits.memory_bytes),
            (libc::RLIMIT_FSIZE, limits.file_bytes),
            (libc::RLIMIT_NOFILE, limits.open_files),
            (
                libc::RLIMIT_NPROC,
                super::processes_of(setup.uid) + limits.processes,
            ),
            (libc::RLIMIT_CORE, 0),
        ];
        let home = match &host {
            Some(d) => d.display().to_string(),
            None => "/tmp".into(),
        };
        let mut cmd = Command::new(&sandbox.interpreter);
        cmd.args(["-I", "-B", "main.py"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &home)
            .env("TMPDIR", if host.is_some() { &home } else { "/tmp" })
            .env("LANG", "C.UTF-8")
            .env("PYTHONHASHSEED", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let program = program.to_vec();
        let isolation = sandbox.isolation;
        // SAFETY: the closure runs between fork and exec; it only makes system calls on
        // data prepared above and allocates nothing.
        unsafe {
            cmd.pre_exec(move || enter(&setup, isolation, &program, &rl));
        }
        let result = cmd
            .spawn()
            .map_err(|e| sandbox_error(format!("could not start the program: {e}")))
            .and_then(|mut child| wait_until(&mut child, limits.wall).map_err(sandbox_error));
        if let Some(d) = host {
            let _ = std::fs::remove_dir_all(d);
        }
        result
    }

    /// A new directory under the system temporary directory, ours alone.
    fn fresh_dir() -> Result<PathBuf> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        for _ in 0..100 {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let d = std::env::temp_dir().join(format!(
                "leanlm-sandbox-{}-{n}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |t| t.subsec_nanos())
            ));
            match std::fs::create_dir(&d) {
                Ok(()) => return Ok(d),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(sandbox_error(format!("temporary directory: {e}"))),
            }
        }
        Err(sandbox_error("could not create a temporary directory"))
    }

    fn check(r: libc::c_int) -> std::io::Result<()> {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn write_all(path: &std::ffi::CStr, bytes: &[u8], create: bool) -> std::io::Result<()> {
        let flags = libc::O_WRONLY
            | libc::O_CLOEXEC
            | if create {
                libc::O_CREAT | libc::O_EXCL
            } else {
                0
            };
        // SAFETY: async-signal-safe calls on a valid C string and buffer.
        unsafe {
            let fd = libc::open(path.as_ptr(), flags, 0o600);
            check(fd)?;
            let mut done = 0;
            while done < bytes.len() {
                let n = libc::write(fd, bytes[done..].as_ptr().cast(), bytes.len() - done);
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    libc::close(fd);
                    return Err(e);
                }
                done += n as usize;
            }
            libc::close(fd);
        }
        Ok(())
    }

    /// In the child, between fork and exec.
    fn enter(
        s: &Setup,
        isolation: Isolation,
        program: &[u8],
        rlimits: &[(libc::__rlimit_resource_t, u64)],
    ) -> std::io::Result<()> {
        // SAFETY: every call below is an async-signal-safe system call on data prepared
        // before the fork.
        unsafe {
            check(libc::setsid())?;
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            if s.drop_root {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(s.gid))?;
                check(libc::setuid(s.uid))?;
                // Changing uid makes the process undumpable, which leaves its /proc files
                // (uid_map among them) owned by root.
                check(libc::prctl(libc::PR_SET_DUMPABLE, 1))?;
            }
            match isolation {
                Isolation::Unprivileged => {
                    if let Some(d) = &s.host_dir {
                        check(libc::chdir(d.as_ptr()))?;
                    }
                }
                Isolation::Namespaces => {
                    check(libc::unshare(
                        libc::CLONE_NEWUSER
                            | libc::CLONE_NEWNS
                            | libc::CLONE_NEWNET
                            | libc::CLONE_NEWPID
                            | libc::CLONE_NEWIPC
                            | libc::CLONE_NEWUTS,
                    ))?;
                    write_all(c"/proc/self/setgroups", b"deny", false)?;
                    write_all(c"/proc/self/uid_map", s.uid_map.as_bytes(), false)?;
                    write_all(c"/proc/self/gid_map", s.gid_map.as_bytes(), false)?;
                    // The program must be PID 1 of the new namespace: fork once more and
                    // let this process only wait and pass the status on.
                    let pid = libc::fork();
                    check(pid)?;
                    if pid > 0 {
                        relay(pid);
                    }
                    check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
                    new_root(s, program)?;
                }
            }
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            for &(resource, value) in rlimits {
                let l = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                check(libc::setrlimit(resource, &l))?;
            }
        }
        Ok(())
    }

    /// The middle process: waits for the program (PID 1 of its namespace) and exits as it
    /// did. Holds no file descriptor, so the parent sees exec's success as soon as it happens.
    unsafe fn relay(pid: libc::pid_t) -> ! {
        // SAFETY: async-signal-safe system calls; this process never returns to Rust code.
        unsafe {
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
                for fd in 3..1024 {
                    libc::close(fd);
                }
            }
            let mut status = 0;
            loop {
                let r = libc::waitpid(pid, &mut status, 0);
                if r == pid {
                    break;
                }
                if r < 0 && *libc::__errno_location() != libc::EINTR {
                    libc::_exit(127);
                }
            }
            if libc::WIFEXITED(status) {
                libc::_exit(libc::WEXITSTATUS(status));
            }
            // End by the same signal, so that the parent sees how the program ended.
            let sig = libc::WTERMSIG(status);
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
            libc::_exit(128 + sig);
        }
    }

    /// Builds the program's root on a fresh tmpfs and moves into it.
    unsafe fn new_root(s: &Setup, program: &[u8]) -> std::io::Result<()> {
        let none = std::ptr::null::<libc::c_char>();
        let stage = c"/tmp";
        // SAFETY: async-signal-safe system calls on prepared C strings.
        unsafe {
            libc::umask(0o022);
            check(libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                stage.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                s.tmpfs_options.as_ptr().cast(),
            ))?;
            for d in &s.dirs {
                check(libc::mkdir(d.as_ptr(), 0o755))?;
            }
            for (src, dst, flags) in &s.binds {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    none,
                    dst.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | flags,
                    std::ptr::null(),
                ))?;
            }
            for (target, link) in &s.links {
                check(libc::symlink(target.as_ptr(), link.as_ptr()))?;
            }
            for (src, dst) in &s.devices {
                let fd = libc::open(
                    dst.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                check(fd)?;
                libc::close(fd);
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    none,
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
            check(libc::mkdir(s.scratch_tmp.as_ptr(), 0o777))?;
            check(libc::chmod(s.scratch_tmp.as_ptr(), 0o1777))?;
            check(libc::mkdir(s.work.as_ptr(), 0o700))?;
            write_all(&s.program_path, program, true)?;
            check(libc::mkdir(s.old_root.as_ptr(), 0o700))?;
            check(libc::chdir(stage.as_ptr()))?;
            check(
                libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".old".as_ptr()) as libc::c_int,
            )?;
            check(libc::chdir(c"/".as_ptr()))?;
            check(libc::umount2(c"/.old".as_ptr(), libc::MNT_DETACH))?;
            check(libc::rmdir(c"/.old".as_ptr()))?;
            check(libc::chdir(c"/work".as_ptr()))?;
        }
        Ok(())
    }
}
