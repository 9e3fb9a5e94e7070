//! Starts a command: its program found in the `PATH` it gets, in its own process group, with
//! exactly its environment, both output streams into one pipe.
//!
//! On Linux (x86-64) murphy starts the child itself, with one `clone3` that shares murphy's
//! memory until the child's `execve` (as `vfork` does) and gives every signal handler back
//! its default in the same call (`CLONE_CLEAR_SIGHAND`, Linux 5.5). glibc's `posix_spawn`,
//! which the standard library uses, cannot ask for that: its child resets all 64 signals one
//! system call at a time, and maps and unmaps a stack for every spawn. That was 0.09 ms of
//! each stage of a chain of 2,000 `true`, about all of murphy's overhead per stage.
//! Where `clone3` is refused (an older kernel, a seccomp filter), the standard library's way
//! is used for the rest of the run.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;

use tokio::process::Command;

/// A started command, until it is waited for.
pub struct Child {
    pid: libc::pid_t,
    how: Started,
}

enum Started {
    /// By murphy's own `clone3`: waited for through its pidfd, reaped by [`reap`].
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    Cloned {
        pidfd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
        /// Once reaped.
        status: Option<ExitStatus>,
    },
    Std(tokio::process::Child),
}

impl Child {
    /// The process id, which is also its process group's id.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Waits until the command exits, and reaps it. Cancel-safe (`select!` may drop a wait
    /// and start another); once it has exited, every wait returns its status.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        match &mut self.how {
            #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
            Started::Cloned { pidfd, status } => loop {
                if let Some(status) = status {
                    return Ok(*status);
                }
                // The pidfd turns readable when the process exits.
                let mut ready = pidfd.readable().await?;
                *status = reap(self.pid, libc::WNOHANG)?;
                ready.clear_ready();
            },
            Started::Std(child) => child.wait().await,
        }
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
impl Drop for Child {
    /// A child nobody waited for is reaped by a thread of its own, so it leaves no zombie
    /// behind for as long as murphy runs (`serve` runs for days).
    fn drop(&mut self) {
        if let Started::Cloned { status: None, .. } = self.how
            && !matches!(reap(self.pid, libc::WNOHANG), Ok(Some(_)))
        {
            let pid = self.pid;
            // A thread that cannot be started leaves a zombie until murphy exits; a panic in
            // a drop would be worse.
            let _ = std::thread::Builder::new().spawn(move || reap(pid, 0));
        }
    }
}

/// `waitpid` of our own child: its status once it exited, `None` while it runs (`WNOHANG`).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn reap(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    loop {
        // SAFETY: `pid` is a child of this process that nothing else reaps (it is not known to
        // the standard library or tokio), so the id cannot have been reused.
        match unsafe { libc::waitpid(pid, &mut status, flags) } {
            0 => return Ok(None),
            -1 => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            _ => return Ok(Some(ExitStatus::from_raw(status))),
        }
    }
}

/// Starts `argv` in `cwd` with exactly `env` (and `PWD`, as `sh` would export it), in its own
/// process group, standard input from `/dev/null`, both output streams into `writer`.
pub fn spawn(
    argv: &[OsString],
    cwd: &Path,
    env: &[(String, String)],
    writer: &std::io::PipeWriter,
) -> io::Result<Child> {
    let Some((program, args)) = argv.split_first() else {
        return Err(io::Error::other("no program to run"));
    };
    let launch = Launch {
        program: resolve(program, cwd, env),
        args,
        cwd,
        env,
        pwd: match env.iter().any(|(name, _)| name == "PWD") {
            true => None,
            false => absolute(cwd),
        },
        writer,
    };
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    if let Some(child) = cloned::spawn(&launch)? {
        return Ok(child);
    }
    spawn_std(&launch)
}

/// A command ready to start, its program looked up: what either way of starting it takes.
struct Launch<'a> {
    program: OsString,
    args: &'a [OsString],
    cwd: &'a Path,
    env: &'a [(String, String)],
    /// `PWD` to add to `env`, which lacks one.
    pwd: Option<PathBuf>,
    writer: &'a std::io::PipeWriter,
}

/// The standard library's spawn (`posix_spawn`), through tokio.
fn spawn_std(launch: &Launch) -> io::Result<Child> {
    let mut command = Command::new(&launch.program);
    command
        .args(launch.args)
        .current_dir(launch.cwd)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(dev_null()?.try_clone()?)
        .stdout(launch.writer.try_clone()?)
        .stderr(launch.writer.try_clone()?)
        .process_group(0);
    if let Some(pwd) = &launch.pwd {
        command.env("PWD", pwd);
    }
    let child = command.spawn()?;
    let pid = child
        .id()
        .and_then(|id| libc::pid_t::try_from(id).ok())
        .ok_or_else(|| io::Error::other("the child exited before its pid was read"))?;
    Ok(Child {
        pid,
        how: Started::Std(child),
    })
}

/// `dir` as an absolute path without `.` components, or `None` if it has `..` ones (`PWD` may
/// hold neither). murphy never changes its own directory, so that is read once.
fn absolute(dir: &Path) -> Option<PathBuf> {
    static HERE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let here = HERE.get_or_init(|| std::env::current_dir().ok()).as_ref()?;
    let dir = std::path::absolute(here.join(dir)).ok()?;
    let parent = dir
        .components()
        .any(|c| c == std::path::Component::ParentDir);
    (!parent).then_some(dir)
}

/// `/dev/null`, opened once for the standard input of every command.
fn dev_null() -> io::Result<&'static std::fs::File> {
    static NULL: std::sync::OnceLock<io::Result<std::fs::File>> = std::sync::OnceLock::new();
    match NULL.get_or_init(|| std::fs::File::open("/dev/null")) {
        Ok(file) => Ok(file),
        Err(err) => Err(io::Error::new(
            err.kind(),
            format!("cannot open /dev/null: {err}"),
        )),
    }
}

/// `program` found in the `PATH` the command gets (relative entries from `cwd`, as `execvp`
/// reads them), or as given when it holds a slash or is not found (then the spawn fails as it
/// would have). With the path known, the standard library's spawn is a `posix_spawn`
/// (`vfork`: no copy of murphy's page tables); it falls back to `fork` for a name it would
/// have to look up in a `PATH` other than murphy's own.
///
/// A name found through absolute `PATH` entries only is remembered for the rest of the run,
/// as a shell's command hash is: a chain of stages would otherwise stat every `PATH` entry
/// before the shell's for each one (one stat still checks it is there). A relative entry
/// (`node_modules/.bin`) is a project directory a stage may fill, so a name found past one
/// is looked up every time.
fn resolve(program: &OsString, cwd: &Path, env: &[(String, String)]) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    type Key = (String, PathBuf, OsString);
    static FOUND: Mutex<Option<std::collections::HashMap<Key, PathBuf>>> = Mutex::new(None);
    if program.as_bytes().contains(&b'/') || program.is_empty() {
        return program.clone();
    }
    let Some((_, path)) = env.iter().find(|(name, _)| name == "PATH") else {
        return program.clone();
    };
    let key = (path.clone(), cwd.to_owned(), program.clone());
    let found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(hit) = found.as_ref().and_then(|map| map.get(&key))
        && hit.is_file()
    {
        return hit.clone().into();
    }
    drop(found);
    let mut relative = false;
    let hit = path
        .split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .inspect(|dir| relative |= !dir.starts_with('/'))
        .map(|dir| cwd.join(dir).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    let Some(hit) = hit else {
        return program.clone();
    };
    if !relative {
        let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
        found.get_or_insert_default().insert(key, hit.clone());
    }
    hit.into()
}

/// The `clone3` spawn. Everything the child needs is made before the call: between `clone3`
/// and `execve` the child runs on a stack of its own in murphy's memory, while murphy's thread
/// that called waits, and may only make system calls (no allocation, no lock).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod cloned {
    use std::cell::RefCell;
    use std::ffi::{CString, OsStr};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

    use super::{Child, Launch, Started};

    /// `struct clone_args` of `linux/sched.h`, its first version (64 bytes).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
    }

    const CLONE_VM: u64 = 0x100;
    const CLONE_VFORK: u64 = 0x4000;
    const CLONE_PIDFD: u64 = 0x1000;
    const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;

    /// The child's stack. It only makes system calls through libc's thin wrappers; glibc's
    /// `posix_spawn` gives its child 32 KiB for the same work and more.
    const STACK: usize = 32 * 1024;

    /// Cleared for the rest of the run when the kernel refuses `clone3` or one of its flags.
    static USABLE: AtomicBool = AtomicBool::new(true);

    thread_local! {
        /// One stack per thread that spawns, used again for each child: the child is done
        /// with it when `clone3` returns in the parent, as it has exec'd or exited by then.
        static STACKS: RefCell<Vec<u128>> = const { RefCell::new(Vec::new()) };
    }

    /// What the child does, prepared by the parent. Pointers into memory the parent keeps
    /// until `clone3` returns.
    #[repr(C)]
    struct Setup {
        program: *const libc::c_char,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
        cwd: *const libc::c_char,
        stdin: libc::c_int,
        output: libc::c_int,
        /// Set by the child when a step fails: which one, and its `errno`.
        failed_step: AtomicI32,
        errno: AtomicI32,
    }

    /// The child's steps before its `execve`, named in the error when one fails.
    const STEPS: [&str; 4] = [
        "make the command's process group",
        "connect the command's output",
        "enter the command's directory",
        "reset the command's signals",
    ];

    /// The child's steps by number, in [`STEPS`]; a failed `execve` is past their end.
    const GROUP: i32 = 0;
    const STREAMS: i32 = 1;
    const DIRECTORY: i32 = 2;
    const SIGNALS: i32 = 3;
    const EXEC: i32 = STEPS.len() as i32;

    /// Starts the command, or returns `None` when `clone3` cannot be used here (the caller
    /// then spawns the standard library's way).
    pub(super) fn spawn(launch: &Launch) -> io::Result<Option<Child>> {
        if !USABLE.load(Ordering::Relaxed) {
            return Ok(None);
        }
        // `what` names the value, not shows it: an environment variable may hold a secret.
        let c = |bytes: &[u8], what: &dyn Fn() -> String| {
            CString::new(bytes).map_err(|_| {
                let what = what();
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{what} holds a NUL byte, which no command can be given"),
                )
            })
        };
        let lossy = |text: &OsStr| format!("`{}`", text.to_string_lossy());
        let program = c(launch.program.as_bytes(), &|| lossy(&launch.program))?;
        let argv: Vec<CString> = std::iter::once(Ok(program.clone()))
            .chain(launch.args.iter().map(|a| c(a.as_bytes(), &|| lossy(a))))
            .collect::<io::Result<_>>()?;
        let mut envp: Vec<CString> = launch
            .env
            .iter()
            .map(|(k, v)| {
                c(format!("{k}={v}").as_bytes(), &|| {
                    format!("the variable `{k}`")
                })
            })
            .collect::<io::Result<_>>()?;
        if let Some(pwd) = &launch.pwd {
            let mut var = b"PWD=".to_vec();
            var.extend_from_slice(pwd.as_os_str().as_bytes());
            envp.push(c(&var, &|| lossy(pwd.as_os_str()))?);
        }
        let cwd = launch.cwd.as_os_str();
        let cwd = c(cwd.as_bytes(), &|| lossy(cwd))?;
        let pointers = |strings: &[CString]| {
            let mut list: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
            list.push(std::ptr::null());
            list
        };
        let (argv_ptrs, envp_ptrs) = (pointers(&argv), pointers(&envp));
        // The child moves these onto 0, 1 and 2; one already there would be overwritten by
        // the move of another (murphy started with a standard stream closed).
        let stdin = above_stdio(super::dev_null()?.as_raw_fd())?;
        let output = above_stdio(launch.writer.as_raw_fd())?;
        let setup = Setup {
            program: program.as_ptr(),
            argv: argv_ptrs.as_ptr(),
            envp: envp_ptrs.as_ptr(),
            cwd: cwd.as_ptr(),
            stdin: stdin.fd,
            output: output.fd,
            failed_step: AtomicI32::new(-1),
            errno: AtomicI32::new(0),
        };
        let mut pidfd: libc::c_int = -1;
        let pid = STACKS.with_borrow_mut(|stack| {
            if stack.is_empty() {
                stack.resize(STACK / size_of::<u128>(), 0);
            }
            let mut args = CloneArgs {
                flags: CLONE_VM | CLONE_VFORK | CLONE_PIDFD | CLONE_CLEAR_SIGHAND,
                pidfd: &raw mut pidfd as u64,
                exit_signal: libc::SIGCHLD as u64,
                // u128 elements: the top of the stack is 16-byte aligned, as the ABI wants.
                stack: stack.as_mut_ptr() as u64,
                stack_size: (stack.len() * size_of::<u128>()) as u64,
                ..CloneArgs::default()
            };
            // SAFETY: `args` asks for a child that shares our memory on its own stack and
            // runs `child(&setup)`; every pointer in `setup` stays valid until `clone3`
            // returns here, which is after the child's `execve` or `_exit` (CLONE_VFORK).
            unsafe { clone3(&mut args, child, &setup) }
        });
        if pid < 0 {
            let err = io::Error::from_raw_os_error(-pid as i32);
            // ENOSYS: no clone3 (Linux < 5.3) or a seccomp filter; EINVAL: no
            // CLONE_CLEAR_SIGHAND (Linux < 5.5); EPERM: a filter that says so.
            if matches!(-pid as i32, libc::ENOSYS | libc::EINVAL | libc::EPERM) {
                tracing::debug!("clone3 refused ({err}); spawning with posix_spawn");
                USABLE.store(false, Ordering::Relaxed);
                return Ok(None);
            }
            return Err(err);
        }
        let pid = pid as libc::pid_t;
        // SAFETY: the kernel made this pidfd for us (CLONE_PIDFD), close-on-exec.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let step = setup.failed_step.load(Ordering::Acquire);
        if step >= 0 {
            // The child exited without starting the command: reap it, then say why.
            let _ = super::reap(pid, 0);
            let err = io::Error::from_raw_os_error(setup.errno.load(Ordering::Acquire));
            return Err(
                match usize::try_from(step).ok().and_then(|s| STEPS.get(s)) {
                    Some(step) => io::Error::new(err.kind(), format!("cannot {step}: {err}")),
                    // A failed `execve`, as the standard library reports it: the error alone.
                    None => err,
                },
            );
        }
        let interest = tokio::io::Interest::READABLE;
        // SAFETY: the AsyncFd owns the pidfd, which stays open and the same until it drops.
        let pidfd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(pidfd, interest) }?;
        Ok(Some(Child {
            pid,
            how: Started::Cloned {
                pidfd,
                status: None,
            },
        }))
    }

    /// An fd the child can move onto 0, 1 or 2: `fd` itself, or a copy above 2.
    struct Source {
        fd: libc::c_int,
        _copy: Option<OwnedFd>,
    }

    fn above_stdio(fd: libc::c_int) -> io::Result<Source> {
        if fd > 2 {
            return Ok(Source { fd, _copy: None });
        }
        // SAFETY: F_DUPFD_CLOEXEC makes a new fd, which the OwnedFd then owns.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Source {
            fd: copy,
            // SAFETY: `copy` is a new fd nothing else owns.
            _copy: Some(unsafe { OwnedFd::from_raw_fd(copy) }),
        })
    }

    /// `clone3` whose child calls `child(setup)` on the stack `args` names, and never comes
    /// back here: glibc has no `clone3` wrapper, and the child of a bare system call would
    /// return into the parent's frames.
    ///
    /// Returns the child's pid, or `-errno`.
    unsafe fn clone3(
        args: &mut CloneArgs,
        child: extern "C" fn(*const Setup) -> !,
        setup: *const Setup,
    ) -> libc::c_long {
        let ret: libc::c_long;
        // SAFETY (the caller's): the parent's registers are as before but rax, rcx and r11;
        // the child starts with the stack pointer at the top of `args.stack`, 16-byte
        // aligned, so the `call` gives `child` the alignment the ABI promises.
        unsafe {
            core::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "xor ebp, ebp",
                "mov rdi, r12",
                "call r13",
                "ud2",
                "2:",
                inlateout("rax") libc::SYS_clone3 => ret,
                in("rdi") args as *mut CloneArgs,
                in("rsi") size_of::<CloneArgs>(),
                in("r12") setup,
                in("r13") child,
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
        ret
    }

    /// The child, between `clone3` and `execve`: system calls only. Its signal handlers are
    /// the defaults already (CLONE_CLEAR_SIGHAND), so a signal that comes now acts on the
    /// child alone.
    extern "C" fn child(setup: *const Setup) -> ! {
        // SAFETY: `setup` and all it points to live until the parent returns from `clone3`,
        // which is after this function's `execve` or `_exit`.
        let setup = unsafe { &*setup };
        let fail = |step: i32| -> ! {
            // SAFETY: errno of this thread (the parent's, which waits), read, not kept.
            let errno = unsafe { *libc::__errno_location() };
            setup.errno.store(errno, Ordering::Release);
            setup.failed_step.store(step, Ordering::Release);
            // SAFETY: ends the child without running anything of the parent's (no atexit).
            unsafe { libc::_exit(127) }
        };
        // SAFETY: plain system calls on values the parent prepared.
        unsafe {
            if libc::setpgid(0, 0) != 0 {
                fail(GROUP);
            }
            if libc::dup2(setup.stdin, 0) < 0
                || libc::dup2(setup.output, 1) < 0
                || libc::dup2(setup.output, 2) < 0
            {
                fail(STREAMS);
            }
            if libc::chdir(setup.cwd) != 0 {
                fail(DIRECTORY);
            }
            // murphy ignores SIGPIPE (as every Rust program does), and an ignored signal
            // stays ignored across `execve`: give it back, as the standard library does.
            // Then unblock all, as a command expects to start.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR
                || libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0
            {
                fail(SIGNALS);
            }
            libc::execve(setup.program, setup.argv, setup.envp);
        }
        fail(EXEC)
    }
}

#[cfg(all(test, target_os = "linux", target_arch = "x86_64"))]
mod tests {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    /// Runs `argv` by `how` (murphy's `clone3` or the standard library's spawn) in `cwd` with a
    /// small environment, on a thread whose signal mask blocks SIGUSR1 (a command must not
    /// inherit that): its output and how it ended.
    fn run(clone: bool, argv: &[&str], cwd: &Path) -> io::Result<(String, ExitStatus)> {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let cwd = cwd.to_owned();
        let env = vec![
            ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
            ("FOO".to_owned(), "a b".to_owned()),
        ];
        std::thread::spawn(move || {
            // SAFETY: blocks a signal for this thread only.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR1);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let (mut reader, writer) = std::io::pipe()?;
                let launch = Launch {
                    program: resolve(&argv[0], &cwd, &env),
                    args: &argv[1..],
                    cwd: &cwd,
                    env: &env,
                    pwd: absolute(&cwd),
                    writer: &writer,
                };
                let mut child = match clone {
                    true => cloned::spawn(&launch)?
                        .expect("clone3 works on this machine (Linux 5.5 or later, no filter)"),
                    false => spawn_std(&launch)?,
                };
                drop(writer);
                let status = child.wait().await?;
                let mut out = String::new();
                reader.read_to_string(&mut out)?;
                Ok((out.replace(&child.pid().to_string(), "PID"), status))
            })
        })
        .join()
        .expect("the spawning thread does not panic")
    }

    /// What a command sees of how it was started: directory, environment, process group,
    /// standard input, open files (the test's own inherited ones too), ignored signals.
    const PROBE: &str = r#"
        echo "pwd=$(pwd) PWD=$PWD FOO=$FOO"
        [ "$(cut -d' ' -f5 /proc/$$/stat)" = "$$" ] && echo "leads its own group"
        echo "stdin: $(readlink /proc/$$/fd/0)"
        echo "files: $(ls /proc/$$/fd | tr '\n' ' ')"
        # glibc's posix_spawn ignores its own two real-time signals in the child; no matter.
        ignored=$(grep '^SigIgn' /proc/$$/status | cut -f2)
        echo "ignored signals below 32: $(( 0x$ignored & 0x7fffffff ))"
        env | sort
        echo "to stderr" >&2
    "#;

    /// The signals below 32 that this test process ignores, but SIGPIPE, which both spawns
    /// give back: a runner started by `nohup`, or in the background of a script, ignores
    /// SIGHUP, SIGINT or SIGQUIT, and an ignored signal stays ignored across `execve`.
    fn inherited_ignored() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let mask = status
            .lines()
            .find_map(|line| line.strip_prefix("SigIgn:"))
            .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
            .unwrap();
        mask & 0x7fff_ffff & !(1 << (libc::SIGPIPE - 1))
    }

    #[test]
    fn a_cloned_command_starts_as_the_standard_library_would_start_it() {
        let dir = tempfile::tempdir().unwrap();
        let ours = run(true, &["sh", "-c", PROBE], dir.path()).unwrap();
        let std = run(false, &["sh", "-c", PROBE], dir.path()).unwrap();
        assert_eq!(ours.0, std.0);
        assert!(ours.1.success() && std.1.success());
        let out = ours.0;
        let here = dir.path().display();
        for line in [
            format!("pwd={here} PWD={here} FOO=a b"),
            "leads its own group".into(),
            "stdin: /dev/null".into(),
            format!("ignored signals below 32: {}", inherited_ignored()),
            "PATH=/usr/bin:/bin".into(),
            "to stderr".into(),
        ] {
            assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
        }
        assert!(!out.contains("HOME="), "only the given environment:\n{out}");
        // A shell clears its signal mask as it starts, so this asks a program that does not.
        let blocked = ["grep", "^SigBlk", "/proc/self/status"];
        let (ours, _) = run(true, &blocked, dir.path()).unwrap();
        assert_eq!(ours, "SigBlk:\t0000000000000000\n");
    }

    #[test]
    fn exit_codes_and_signals_are_told_as_the_standard_library_tells_them() {
        let here = Path::new(".");
        for how in [true, false] {
            let (_, status) = run(how, &["sh", "-c", "exit 3"], here).unwrap();
            assert_eq!(status.code(), Some(3));
            let (_, status) = run(how, &["sh", "-c", "kill -TERM $$"], here).unwrap();
            assert_eq!(status.signal(), Some(libc::SIGTERM));
        }
    }

    #[test]
    fn a_command_that_cannot_start_fails_with_the_standard_library_s_error_kind() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("not-executable");
        std::fs::write(&script, "true\n").unwrap();
        let script = script.to_str().unwrap();
        let gone = dir.path().join("gone");
        for (argv, cwd, kind) in [
            (
                &["/no/such/program"][..],
                dir.path(),
                io::ErrorKind::NotFound,
            ),
            (&[script][..], dir.path(), io::ErrorKind::PermissionDenied),
            (&["true"][..], gone.as_path(), io::ErrorKind::NotFound),
        ] {
            let ours = run(true, argv, cwd).unwrap_err();
            let std = run(false, argv, cwd).unwrap_err();
            assert_eq!(
                (ours.kind(), std.kind()),
                (kind, kind),
                "{argv:?} in {cwd:?}"
            );
        }
        let err = run(true, &["true"], &gone).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot enter the command's directory: "),
            "{err}"
        );
    }

    #[test]
    fn a_child_dropped_before_it_exits_is_reaped_all_the_same() {
        let pid = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (_reader, writer) = std::io::pipe().unwrap();
                let argv = [OsString::from("sleep"), OsString::from("0.2")];
                let env = [("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
                let child = spawn(&argv, Path::new("."), &env, &writer).unwrap();
                assert!(matches!(child.how, Started::Cloned { .. }));
                child.pid()
            })
        })
        .join()
        .unwrap();
        // Gone from /proc once reaped; a zombie would stay there.
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while proc.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!proc.exists(), "process {pid} was not reaped");
    }
}
