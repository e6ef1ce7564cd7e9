//! `geossl pretrain --nproc N`: N local ranks of this binary, started and
//! watched the way torchrun's local agent does (torch/distributed/elastic:
//! `LocalElasticAgent` over `PContext`), for one machine without torchrun.
//!
//! Each child gets torchrun's variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) plus
//! `GEOSSL_LAUNCHER=nproc`, so that it joins the job through
//! [`crate::dist::Rendezvous::from_env`] like a torchrun rank, rank 0 hosting
//! the TCPStore on a free loopback port; as torchrun, each gets
//! `OMP_NUM_THREADS=1` when that is unset. The launcher knows nothing of
//! the command it runs: it gets the argument list.
//!
//! Behaviour, as torchrun's: children inherit stdout/stderr; SIGINT/SIGTERM
//! received by the launcher are forwarded to every child; the first child
//! that exits non-zero or by a signal is named (rank, pid, status or signal),
//! the others get SIGTERM and at most 30 s to exit (on Gloo they fail at
//! once on the broken connection), then the rest are SIGKILLed and the
//! launcher fails.
//! Unlike torchrun the children stay in the launcher's process group, so
//! Ctrl-C in a terminal reaches them directly as well; a second SIGINT is
//! harmless to geossl (it only notes the signal). Should the launcher itself
//! be killed, each child gets SIGTERM from the kernel (`PR_SET_PDEATHSIG`)
//! and stops at a checkpoint instead of training on unsupervised.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The value of `GEOSSL_LAUNCHER` in the children of `--nproc`
/// ([`crate::dist::Rendezvous::from_env`] names the launcher by it).
pub const NPROC_LAUNCHER: &str = "nproc";

/// The loopback address the local ranks meet at (rank 0's TCPStore).
const LOCAL_MASTER_ADDR: &str = "127.0.0.1";

/// How often the launcher looks at its children and at the signals it got.
const POLL: Duration = Duration::from_millis(50);

/// The variables that say this process is already one rank of a launched
/// job: torchrun's (and `--nproc`'s own, against nesting). `SLURM_PROCID`
/// counts only in a step of several tasks (see [`launcher_variables`]).
const RANK_VARIABLES: [&str; 5] = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GEOSSL_LAUNCHER",
];

/// The longest the other ranks get between SIGTERM and SIGKILL once one
/// rank failed: torchrun's 30 s (`PContext.close(death_sig, timeout=30)`).
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// Runs `nproc` ranks of this executable (`std::env::current_exe`) with
/// `args` (the command line after the program name, without `--nproc`)
/// and waits for them: Ok when every rank exits 0.
///
/// After a rank fails the others get SIGTERM, then SIGKILL after
/// `exit_timeout` or [`STOP_GRACE`], whichever is shorter (pretrain passes
/// its `--dist-timeout`).
///
/// Errors: launcher variables already set (this process is a rank of a
/// torchrun or SLURM job: each rank would start `nproc` more), no free
/// port, a child that cannot be started, or a rank that failed (named with
/// its pid and exit status or signal; the others' outcomes follow).
pub fn run_local_ranks(
    args: &[OsString],
    nproc: usize,
    exit_timeout: Duration,
) -> anyhow::Result<()> {
    let exit_timeout = exit_timeout.min(STOP_GRACE);
    let set = launcher_variables(|name| std::env::var(name).ok());
    anyhow::ensure!(
        set.is_empty(),
        "--nproc starts its own ranks, but this process already is a rank of a launched job \
         ({}): leave out --nproc under torchrun or srun (each task is one rank), or run \
         --nproc outside them",
        set.join(", ")
    );
    anyhow::ensure!(nproc >= 1, "--nproc must be at least 1");
    let program = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("--nproc: cannot find this executable to start: {e}"))?;
    // Before the children start, so that a Ctrl-C meanwhile is forwarded
    // rather than killing the launcher.
    let signals = ForwardedSignals::register()?;
    let port = free_port()?;
    // torchrun's default (torch/distributed/run.py): one OpenMP thread per
    // rank unless set, so that N ranks of libtorch's default (all cores)
    // do not oversubscribe the machine; --threads still sets libtorch's.
    let one_omp_thread = nproc > 1 && std::env::var_os("OMP_NUM_THREADS").is_none();
    if one_omp_thread {
        tracing::info!(
            "--nproc: OMP_NUM_THREADS=1 for each rank, as torchrun (set it, or --threads, to tune)"
        );
    }
    let ranks = LocalRanks::spawn(&program, args, nproc, port, one_omp_thread)?;
    ranks.supervise(&signals, exit_timeout)
}

/// `NAME=value` of each launcher variable set in the environment `var`;
/// `SLURM_PROCID` only with `SLURM_NTASKS` above 1, because a batch script
/// or a one-task step (one task per node, `--nproc` per GPU) is a fair use
/// (and a single-process run for [`crate::dist::Rendezvous::from_env`]).
fn launcher_variables(var: impl Fn(&str) -> Option<String>) -> Vec<String> {
    // Empty is unset, as for Rendezvous::from_env.
    let value = |name: &str| var(name).filter(|v| !v.is_empty());
    let mut found: Vec<String> = RANK_VARIABLES
        .iter()
        .filter_map(|name| value(name).map(|value| format!("{name}={value}")))
        .collect();
    let tasks = value("SLURM_NTASKS").and_then(|n| n.trim().parse::<usize>().ok());
    if let (Some(procid), Some(tasks)) = (value("SLURM_PROCID"), tasks) {
        if tasks > 1 {
            found.push(format!("SLURM_PROCID={procid}"));
            found.push(format!("SLURM_NTASKS={tasks}"));
        }
    }
    found
}

/// A TCP port free on the loopback interface now (bound to port 0, then
/// released, as torchrun's `_get_free_port`): rank 0 binds it moments later.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind((LOCAL_MASTER_ADDR, 0))
        .map_err(|e| anyhow::anyhow!("--nproc: no free port on {LOCAL_MASTER_ADDR}: {e}"))?;
    Ok(listener.local_addr()?.port())
}

/// SIGINT and SIGTERM noted (not acted on) while the launcher runs, to be
/// forwarded; the signals' usual meaning returns when dropped.
struct ForwardedSignals {
    pending: Vec<(i32, Arc<AtomicBool>)>,
    ids: Vec<signal_hook::SigId>,
}

impl ForwardedSignals {
    fn register() -> anyhow::Result<Self> {
        let mut signals = Self::unregistered();
        for (sig, flag) in &signals.pending {
            signals
                .ids
                .push(signal_hook::flag::register(*sig, flag.clone())?);
        }
        Ok(signals)
    }

    /// The flags without handlers (tests raise them by hand).
    fn unregistered() -> Self {
        let pending = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
            .into_iter()
            .map(|sig| (sig, Arc::new(AtomicBool::new(false))))
            .collect();
        Self {
            pending,
            ids: Vec::new(),
        }
    }

    /// The signals received since the last call.
    fn take(&self) -> Vec<i32> {
        self.pending
            .iter()
            .filter(|(_, flag)| flag.swap(false, Ordering::SeqCst))
            .map(|(sig, _)| *sig)
            .collect()
    }
}

impl Drop for ForwardedSignals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// One started rank and, once reaped, how it ended.
struct LocalRank {
    rank: usize,
    child: Child,
    status: Option<ExitStatus>,
}

/// The ranks of one `--nproc` job, in rank order.
struct LocalRanks {
    ranks: Vec<LocalRank>,
}

impl LocalRanks {
    /// Starts `program args` `nproc` times with torchrun's variables for
    /// ranks 0..nproc meeting at 127.0.0.1:`port` (and OMP_NUM_THREADS=1
    /// with `one_omp_thread`). A child that cannot be started SIGKILLs
    /// those already running.
    fn spawn(
        program: &Path,
        args: &[OsString],
        nproc: usize,
        port: u16,
        one_omp_thread: bool,
    ) -> anyhow::Result<Self> {
        let mut ranks = Self { ranks: Vec::new() };
        for rank in 0..nproc {
            let mut command = rank_command(program, args, rank, nproc, port);
            if one_omp_thread {
                command.env("OMP_NUM_THREADS", "1");
            }
            match command.spawn() {
                Ok(child) => ranks.ranks.push(LocalRank {
                    rank,
                    child,
                    status: None,
                }),
                Err(e) => {
                    ranks.kill_running();
                    anyhow::bail!(
                        "--nproc: cannot start rank {rank} ({}): {e}",
                        program.display()
                    );
                }
            }
        }
        let pids: Vec<String> = (ranks.ranks.iter())
            .map(|r| format!("rank {} pid {}", r.rank, r.child.id()))
            .collect();
        tracing::info!(
            "--nproc: started {nproc} ranks on {LOCAL_MASTER_ADDR}:{port} ({})",
            pids.join(", ")
        );
        Ok(ranks)
    }

    /// Waits for every rank, forwarding the launcher's signals; after the
    /// first failure, the others get `exit_timeout` before SIGKILL.
    fn supervise(
        mut self,
        signals: &ForwardedSignals,
        exit_timeout: Duration,
    ) -> anyhow::Result<()> {
        let mut first_failure: Option<(usize, Instant)> = None;
        loop {
            for sig in signals.take() {
                self.signal_running(sig);
            }
            for i in self.reap()? {
                let r = &self.ranks[i];
                if first_failure.is_none() {
                    tracing::error!(
                        "--nproc: rank {} (pid {}) {}; stopping the other ranks (SIGTERM, \
                         SIGKILL after {} s), as torchrun does",
                        r.rank,
                        r.child.id(),
                        describe(r.status.unwrap()),
                        exit_timeout.as_secs()
                    );
                    first_failure = Some((i, Instant::now() + exit_timeout));
                    // A rank blocked in a collective may not notice the
                    // death (NCCL: until its watchdog's timeout); SIGTERM
                    // reaches it between steps.
                    self.signal_running(libc::SIGTERM);
                }
            }
            if self.ranks.iter().all(|r| r.status.is_some()) {
                break;
            }
            if let Some((_, deadline)) = first_failure {
                if Instant::now() >= deadline {
                    let killed = self.kill_running();
                    return Err(self.failure(first_failure.unwrap().0, &killed, exit_timeout));
                }
            }
            std::thread::sleep(POLL);
        }
        match first_failure {
            None => Ok(()),
            Some((i, _)) => Err(self.failure(i, &[], exit_timeout)),
        }
    }

    /// Reaps the ranks that ended; returns the indices of those that failed.
    fn reap(&mut self) -> anyhow::Result<Vec<usize>> {
        let mut failed = Vec::new();
        for (i, r) in self.ranks.iter_mut().enumerate() {
            if r.status.is_some() {
                continue;
            }
            if let Some(status) = r.child.try_wait()? {
                r.status = Some(status);
                if !status.success() {
                    failed.push(i);
                }
            }
        }
        Ok(failed)
    }

    /// Sends `sig` to every rank not reaped yet (an unreaped child's pid
    /// cannot have been reused, so this never hits another process).
    fn signal_running(&self, sig: i32) {
        for r in self.ranks.iter().filter(|r| r.status.is_none()) {
            // SAFETY: kill(2) on our own unreaped child's pid.
            unsafe { libc::kill(r.child.id() as libc::pid_t, sig) };
        }
    }

    /// SIGKILLs and reaps every rank still running; returns their ranks.
    fn kill_running(&mut self) -> Vec<usize> {
        let mut killed = Vec::new();
        for r in self.ranks.iter_mut().filter(|r| r.status.is_none()) {
            let _ = r.child.kill();
            r.status = r.child.wait().ok();
            killed.push(r.rank);
        }
        killed
    }

    /// The error of a failed job: the first failure, then every other
    /// rank's non-zero outcome.
    fn failure(&self, first: usize, killed: &[usize], exit_timeout: Duration) -> anyhow::Error {
        let r = &self.ranks[first];
        let mut text = format!(
            "rank {} of {} (pid {}) {}",
            r.rank,
            self.ranks.len(),
            r.child.id(),
            r.status.map_or("ended".into(), describe)
        );
        for other in self.ranks.iter().filter(|o| o.rank != r.rank) {
            if killed.contains(&other.rank) {
                text += &format!(
                    "; rank {} (pid {}) had not exited {} s later and was killed (SIGKILL)",
                    other.rank,
                    other.child.id(),
                    exit_timeout.as_secs()
                );
            } else if let Some(status) = other.status.filter(|s| !s.success()) {
                text += &format!(
                    "; then rank {} (pid {}) {}",
                    other.rank,
                    other.child.id(),
                    describe(status)
                );
            }
        }
        anyhow::anyhow!("--nproc: {text}")
    }
}

/// `program args` as local rank `rank` of `nproc` at 127.0.0.1:`port`.
fn rank_command(
    program: &Path,
    args: &[OsString],
    rank: usize,
    nproc: usize,
    port: u16,
) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    let (rank, nproc, port) = (rank.to_string(), nproc.to_string(), port.to_string());
    for (name, value) in [
        ("RANK", rank.as_str()),
        ("WORLD_SIZE", nproc.as_str()),
        ("LOCAL_RANK", rank.as_str()),
        ("LOCAL_WORLD_SIZE", nproc.as_str()),
        ("MASTER_ADDR", LOCAL_MASTER_ADDR),
        ("MASTER_PORT", port.as_str()),
        ("GEOSSL_LAUNCHER", NPROC_LAUNCHER),
    ] {
        command.env(name, value);
    }
    // Rank 0 hosts the store itself (no torchrun agent), from attempt 0.
    command.env_remove("TORCHELASTIC_USE_AGENT_STORE");
    command.env_remove("TORCHELASTIC_RESTART_COUNT");
    stop_with_parent(&mut command);
    command
}

/// The child gets SIGTERM when the launcher dies (`PR_SET_PDEATHSIG`), so
/// that a SIGKILLed launcher leaves no rank training on unsupervised: each
/// stops at a checkpoint as on a scheduler's SIGTERM.
fn stop_with_parent(command: &mut Command) {
    let launcher = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork
    // and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The launcher died before prctl: there is nobody to run for.
            if libc::getppid() != launcher {
                return Err(std::io::Error::other("the launcher exited"));
            }
            Ok(())
        });
    }
}

/// "exited with status 3" or "was killed by signal SIGKILL".
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {}", signal_name(sig)),
        (None, None) => format!("ended ({status})"),
    }
}

/// The usual name of signal `sig` (`SIGKILL`), else `signal N`.
fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// `args` without every `flag VALUE` and `flag=VALUE` (a flag with a
/// value, spelled in full: `--nproc`), for the children's command line.
pub fn without_flag(args: impl IntoIterator<Item = OsString>, flag: &str) -> Vec<OsString> {
    let with_value = format!("{flag}=");
    let mut kept = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == OsStr::new(flag) {
            args.next();
        } else if !arg.to_string_lossy().starts_with(&with_value) {
            kept.push(arg);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sh -c script sh dir` as the ranks' program: `$1` is `dir`.
    fn shell_ranks(script: &str, dir: &Path, nproc: usize) -> LocalRanks {
        let args: Vec<OsString> = ["-c", script, "sh"]
            .iter()
            .map(OsString::from)
            .chain([dir.as_os_str().to_owned()])
            .collect();
        let port = free_port().unwrap();
        LocalRanks::spawn(Path::new("/bin/sh"), &args, nproc, port, true).unwrap()
    }

    #[test]
    fn every_rank_gets_torchruns_variables_and_all_exiting_0_is_success() {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"test "$RANK" = "$LOCAL_RANK" && test "$WORLD_SIZE" = 3 &&
            test "$LOCAL_WORLD_SIZE" = 3 && test "$MASTER_ADDR" = 127.0.0.1 &&
            test "$MASTER_PORT" -gt 0 && test "$GEOSSL_LAUNCHER" = nproc &&
            test -z "$TORCHELASTIC_USE_AGENT_STORE" && test "$OMP_NUM_THREADS" = 1 && echo "$MASTER_PORT" > "$1/$RANK""#;
        let ranks = shell_ranks(script, dir.path(), 3);
        let signals = ForwardedSignals::unregistered();
        ranks.supervise(&signals, Duration::from_secs(5)).unwrap();
        let ports: Vec<String> = (0..3)
            .map(|r| std::fs::read_to_string(dir.path().join(r.to_string())).unwrap())
            .collect();
        assert!(ports.iter().all(|p| *p == ports[0]), "one port: {ports:?}");
    }

    #[test]
    fn a_rank_exiting_non_zero_fails_the_job_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let ranks = shell_ranks(r#"sleep 0.2; exit $((RANK * 3))"#, dir.path(), 2);
        let pid = ranks.ranks[1].child.id();
        let e = (ranks.supervise(&ForwardedSignals::unregistered(), Duration::from_secs(5)))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("--nproc: rank 1 of 2 (pid {pid}) exited with status 3")
        );
    }

    #[test]
    fn a_killed_rank_is_named_and_the_others_are_killed_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        // Rank 1 dies by SIGKILL; rank 0 ignores the SIGTERM that follows
        // and would run on for a minute.
        let script =
            r#"if [ "$RANK" = 1 ]; then sleep 0.2; kill -9 $$; fi; trap '' TERM; exec sleep 60"#;
        let ranks = shell_ranks(script, dir.path(), 2);
        let pids: Vec<u32> = ranks.ranks.iter().map(|r| r.child.id()).collect();
        let start = Instant::now();
        let e = (ranks.supervise(&ForwardedSignals::unregistered(), Duration::from_secs(1)))
            .unwrap_err()
            .to_string();
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(1),
            "the timeout is given: {took:?}"
        );
        assert!(took < Duration::from_secs(10), "no hang: {took:?}");
        assert_eq!(
            e,
            format!(
                "--nproc: rank 1 of 2 (pid {}) was killed by signal SIGKILL; rank 0 (pid {}) \
                 had not exited 1 s later and was killed (SIGKILL)",
                pids[1], pids[0]
            )
        );
    }

    #[test]
    fn the_launchers_signals_are_forwarded_to_every_rank() {
        let dir = tempfile::tempdir().unwrap();
        // Each rank says it is ready once its trap is set, and on SIGTERM
        // writes which signal it got and exits 0 (as geossl after its
        // checkpoint).
        let script = r#"trap 'echo TERM > "$1/$RANK"; exit 0' TERM; touch "$1/ready$RANK";
            while :; do sleep 0.05; done"#;
        let ranks = shell_ranks(script, dir.path(), 2);
        let signals = ForwardedSignals::unregistered();
        std::thread::scope(|s| {
            let job = s.spawn(|| ranks.supervise(&signals, Duration::from_secs(5)));
            let ready = |r: usize| dir.path().join(format!("ready{r}")).is_file();
            let start = Instant::now();
            while !(ready(0) && ready(1)) {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "ranks never ready"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let term = signals
                .pending
                .iter()
                .find(|(sig, _)| *sig == libc::SIGTERM);
            term.unwrap().1.store(true, Ordering::SeqCst);
            job.join().unwrap().unwrap();
        });
        for r in 0..2 {
            let got = std::fs::read_to_string(dir.path().join(r.to_string())).unwrap();
            assert_eq!(got.trim(), "TERM", "rank {r}");
        }
    }

    #[test]
    fn a_rank_of_a_launched_job_is_not_a_launcher() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                (vars.iter())
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(launcher_variables(env(&[])).is_empty());
        assert_eq!(
            launcher_variables(env(&[
                ("RANK", "1"),
                ("WORLD_SIZE", "2"),
                ("LOCAL_RANK", "")
            ])),
            ["RANK=1", "WORLD_SIZE=2"]
        );
        assert_eq!(
            launcher_variables(env(&[("GEOSSL_LAUNCHER", "nproc")])),
            ["GEOSSL_LAUNCHER=nproc"],
            "no nesting"
        );
        // A batch script or a one-task step may start its own ranks.
        const ONE_TASK: [(&str, &str); 2] = [("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")];
        assert!(launcher_variables(env(&ONE_TASK)).is_empty());
        const TASKS: [(&str, &str); 2] = [("SLURM_PROCID", "3"), ("SLURM_NTASKS", "8")];
        assert_eq!(
            launcher_variables(env(&TASKS)),
            ["SLURM_PROCID=3", "SLURM_NTASKS=8"]
        );
    }

    #[test]
    fn the_flag_and_its_value_are_left_out_of_the_ranks_arguments() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            without_flag(
                args(&[
                    "pretrain",
                    "--nproc",
                    "2",
                    "--out",
                    "r",
                    "--nproc=3",
                    "--lr",
                    "1"
                ]),
                "--nproc"
            ),
            args(&["pretrain", "--out", "r", "--lr", "1"])
        );
        assert_eq!(
            without_flag(args(&["pretrain", "--nprocs", "2"]), "--nproc"),
            args(&["pretrain", "--nprocs", "2"])
        );
    }

    #[test]
    fn signals_are_named() {
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(77), "signal 77");
    }
}
