//! Starting data-parallel pretraining the three ways users do, end to end
//! with the binary on CPU (Gloo): `geossl pretrain --nproc N`, torchrun
//! (`--no-python`, the project venv's), and SLURM's `srun` (simulated by its
//! variables); SIGTERM to the launcher, or its death, stops every rank at
//! one checkpoint; a killed rank is named and stops the job; a launcher
//! inside a launched job is refused.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{geossl, world, TINY};

/// The variables of every launcher, removed from the children's
/// environment so that a test is not run as a rank of whatever started it.
const LAUNCHER_VARIABLES: [&str; 13] = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GEOSSL_LAUNCHER",
    "TORCHELASTIC_USE_AGENT_STORE",
    "TORCHELASTIC_RESTART_COUNT",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "SLURM_NTASKS_PER_NODE",
];

/// The longest any job here may take: none should come near it; past it
/// the job is killed and the test fails instead of hanging.
const JOB_BOUND: Duration = Duration::from_secs(300);

/// `pretrain` arguments of the tiny network on CPU, one thread per rank.
fn pretrain_args(manifest: &Path, out: &Path, epochs: usize) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["pretrain".into(), "--manifest".into()];
    args.push(manifest.into());
    args.extend(["--out".into(), out.into()]);
    args.extend(TINY.iter().map(OsString::from));
    let epochs = epochs.to_string();
    args.extend(["--epochs", &epochs, "--device", "cpu"].map(OsString::from));
    args
}

/// `program args`, outside any launched job, with stderr into `log`.
fn process(program: impl AsRef<std::ffi::OsStr>, args: &[OsString], log: &Path) -> Command {
    let mut c = Command::new(program);
    c.args(args).stdout(Stdio::null());
    c.stderr(File::create(log).unwrap());
    for name in LAUNCHER_VARIABLES {
        c.env_remove(name);
    }
    c
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_geossl"))
}

/// Waits for `child` up to `bound`; past it kills it and returns None.
fn wait_bounded(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `command` to its end within [`JOB_BOUND`]; returns its stderr.
fn run(mut command: Command, log: &Path, succeed: bool) -> String {
    let mut child = command.spawn().unwrap();
    let status = wait_bounded(&mut child, JOB_BOUND);
    let stderr = std::fs::read_to_string(log).unwrap();
    let status = status.unwrap_or_else(|| panic!("no end within {JOB_BOUND:?}:\n{stderr}"));
    assert_eq!(status.success(), succeed, "{status}:\n{stderr}");
    stderr
}

/// Each step's (epoch, step, lr) from `run/metrics.jsonl`.
fn steps(run: &Path) -> Vec<(u64, u64, String)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| {
            let n = |k: &str| v[k].as_u64().unwrap();
            (n("epoch"), n("step"), v["lr"].to_string())
        })
        .collect()
}

/// A world for these tests and the steps of a one-process run of
/// `epochs` on it (the run every distributed one must match step for
/// step: the global batch is the same).
fn world_and_reference(dir: &Path, epochs: usize) -> (PathBuf, Vec<(u64, u64, String)>) {
    let geo = world(dir, 40, 16, 3);
    let reference = dir.join("reference");
    geossl()
        .args(pretrain_args(&geo, &reference, epochs))
        .assert()
        .success();
    let steps = steps(&reference);
    assert!(steps.len() >= 2 * epochs, "a few steps an epoch: {steps:?}");
    (geo, steps)
}

/// The distributed run `out` has exactly the reference's steps, each
/// written once (rank 0 alone writes), and its last checkpoint.
fn assert_one_run_of(out: &Path, reference: &[(u64, u64, String)], epochs: usize) {
    assert_eq!(steps(out), reference, "every step once, the same lr");
    assert_eq!(
        std::fs::read_to_string(out.join("checkpoints/latest")).unwrap(),
        format!("epoch-{epochs:04}")
    );
}

#[test]
fn nproc_2_runs_to_the_end_as_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let (geo, reference) = world_and_reference(dir.path(), 2);
    let out = dir.path().join("nproc");
    let mut args = pretrain_args(&geo, &out, 2);
    args.extend(["--nproc", "2"].map(OsString::from));
    let log = dir.path().join("nproc.log");
    let stdout = dir.path().join("nproc.out");
    let mut launcher = process(bin(), &args, &log);
    launcher.stdout(File::create(&stdout).unwrap());
    let stderr = run(launcher, &log, true);
    assert!(stderr.contains("--nproc: started 2 ranks"), "{stderr}");
    assert!(
        stderr.contains("data-parallel: 2 ranks started by geossl --nproc"),
        "{stderr}"
    );
    assert_one_run_of(&out, &reference, 2);
    let done = format!("2 epochs, {} steps done", reference.len());
    let stdout = std::fs::read_to_string(stdout).unwrap();
    assert_eq!(stdout.matches(&done).count(), 1, "rank 0 alone: {stdout}");
}

#[test]
fn torchrun_no_python_runs_the_binary_as_its_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let (geo, reference) = world_and_reference(dir.path(), 2);
    let out = dir.path().join("torchrun");
    // The venv's torchrun, found as the other tests find its python.
    let torchrun = common::python().with_file_name("torchrun");
    // --standalone: a rendezvous on a free port, so parallel tests never
    // collide; the agent hosts the store (TORCHELASTIC_USE_AGENT_STORE).
    let mut args: Vec<OsString> = ["--standalone", "--nproc-per-node", "2", "--no-python"]
        .map(OsString::from)
        .into();
    args.push(bin().into());
    args.extend(pretrain_args(&geo, &out, 2));
    let log = dir.path().join("torchrun.log");
    let stderr = run(process(&torchrun, &args, &log), &log, true);
    assert!(
        stderr.contains("data-parallel: 2 ranks started by torchrun"),
        "{stderr}"
    );
    assert_one_run_of(&out, &reference, 2);
}

/// `srun` with two tasks on one node: each task gets SLURM's variables
/// and the batch script's MASTER_ADDR/MASTER_PORT, no RANK.
fn slurm_task(args: &[OsString], procid: usize, port: Option<u16>, log: &Path) -> Command {
    let mut c = process(bin(), args, log);
    let procid = procid.to_string();
    for (name, value) in [
        ("SLURM_PROCID", procid.as_str()),
        ("SLURM_NTASKS", "2"),
        ("SLURM_LOCALID", procid.as_str()),
        ("SLURM_NTASKS_PER_NODE", "2"),
    ] {
        c.env(name, value);
    }
    if let Some(port) = port {
        c.env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string());
    }
    c
}

#[test]
fn slurm_tasks_meet_at_master_addr_and_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let (geo, reference) = world_and_reference(dir.path(), 1);
    let out = dir.path().join("slurm");
    let args = pretrain_args(&geo, &out, 1);
    // A port free now (rank 0's store binds it moments later).
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let logs: Vec<PathBuf> = (0..2)
        .map(|r| dir.path().join(format!("task{r}.log")))
        .collect();
    let mut tasks: Vec<Child> = (0..2)
        .map(|r| slurm_task(&args, r, Some(port), &logs[r]).spawn().unwrap())
        .collect();
    for (r, task) in tasks.iter_mut().enumerate() {
        let status = wait_bounded(task, JOB_BOUND);
        let stderr = std::fs::read_to_string(&logs[r]).unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "task {r}: {status:?}\n{stderr}"
        );
        if r == 0 {
            let started = "data-parallel: 2 ranks started by SLURM";
            assert!(stderr.contains(started), "{stderr}");
        }
    }
    assert_one_run_of(&out, &reference, 1);

    let log = dir.path().join("no_master.log");
    let args = pretrain_args(&geo, &dir.path().join("no_master"), 1);
    let stderr = run(slurm_task(&args, 0, None, &log), &log, false);
    assert!(stderr.contains("MASTER_ADDR"), "{stderr}");
}

/// The pids of the processes whose parent is `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ppid = after_comm.split_whitespace().nth(1);
        if ppid.and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            children.push(pid);
        }
    }
    children
}

/// The value of variable `name` in the environment of process `pid`.
fn environment_variable(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    environ
        .split(|&b| b == 0)
        .map(String::from_utf8_lossy)
        .find_map(|v| v.strip_prefix(&prefix).map(str::to_string))
}

/// `geossl pretrain --nproc 2` of many epochs on a small world, started in
/// `dir/NAME` with stderr into `dir/NAME.log`, and returned once training
/// is under way (rank 0 has logged a step) with the pid of rank `rank`.
fn training_launcher(dir: &Path, name: &str, rank: &str) -> (Child, u32) {
    let geo = world(dir, 40, 16, 3);
    let out = dir.join(name);
    let mut args = pretrain_args(&geo, &out, 500);
    // A long timeout: a rank must stop on the broken connection, not by
    // waiting for it (nor by the launcher's SIGKILL after it).
    args.extend(["--nproc", "2", "--dist-timeout", "900"].map(OsString::from));
    let log = dir.join(format!("{name}.log"));
    let mut launcher = process(bin(), &args, &log).spawn().unwrap();
    let start = Instant::now();
    loop {
        let pid = (children_of(launcher.id()).into_iter())
            .find(|&pid| environment_variable(pid, "RANK").as_deref() == Some(rank));
        let stepped = std::fs::read_to_string(out.join("metrics.jsonl"))
            .is_ok_and(|m| m.contains("\"kind\":\"step\""));
        if let (Some(pid), true) = (pid, stepped) {
            return (launcher, pid);
        }
        if start.elapsed() > JOB_BOUND || launcher.try_wait().unwrap().is_some() {
            let _ = launcher.kill();
            panic!(
                "training never started:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_to_the_launcher_stops_every_rank_at_one_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut launcher, _) = training_launcher(dir.path(), "stopped", "0");
    // SAFETY: kill(2) on our own child, not reaped yet.
    assert_eq!(
        unsafe { libc::kill(launcher.id() as i32, libc::SIGTERM) },
        0
    );
    let status = wait_bounded(&mut launcher, Duration::from_secs(120));
    let stderr = std::fs::read_to_string(dir.path().join("stopped.log")).unwrap();
    let status = status.unwrap_or_else(|| panic!("no stop:\n{stderr}"));
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("SIGTERM: stopped at epoch"), "{stderr}");
    let latest = dir.path().join("stopped/checkpoints/latest");
    assert!(latest.is_file(), "a checkpoint: {stderr}");
}

/// Whether process `pid` is still running (a zombie is not: it waits only
/// to be reaped, by whoever adopted it).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

#[test]
fn a_killed_launcher_leaves_no_rank_training() {
    let dir = tempfile::tempdir().unwrap();
    let (mut launcher, _) = training_launcher(dir.path(), "orphaned", "0");
    let ranks = children_of(launcher.id());
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    // The kernel sends each rank SIGTERM (PR_SET_PDEATHSIG): they stop
    // together at a checkpoint.
    let start = Instant::now();
    while ranks.iter().any(|&pid| running(pid)) {
        assert!(start.elapsed() < Duration::from_secs(120), "ranks run on");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stderr = std::fs::read_to_string(dir.path().join("orphaned.log")).unwrap();
    assert!(stderr.contains("SIGTERM: stopped at epoch"), "{stderr}");
}

#[test]
fn the_launcher_names_a_killed_rank_and_stops_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let (mut launcher, rank1) = training_launcher(dir.path(), "killed", "1");
    let log = dir.path().join("killed.log");
    // SAFETY: kill(2) on a child of our child, alive (its parent reaps it).
    assert_eq!(unsafe { libc::kill(rank1 as i32, libc::SIGKILL) }, 0);
    let killed_at = Instant::now();
    let status = wait_bounded(&mut launcher, Duration::from_secs(120));
    let took = killed_at.elapsed();
    let stderr = std::fs::read_to_string(&log).unwrap();
    let status = status.unwrap_or_else(|| panic!("the launcher hung:\n{stderr}"));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "rank 1 of 2 (pid {rank1}) was killed by signal SIGKILL"
        )),
        "{stderr}"
    );
    // Within the bound, far below --dist-timeout: rank 0 failed on its own.
    assert!(stderr.contains("then rank 0 (pid "), "{stderr}");
    eprintln!("the launcher exited {took:?} after the SIGKILL");
}

#[test]
fn nproc_inside_a_launched_job_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = pretrain_args(Path::new("m.csv"), &dir.path().join("run"), 1);
    let log = dir.path().join("refused.log");
    let mut c = process(bin(), &args, &log);
    c.args(["--nproc", "2"])
        .env("RANK", "0")
        .env("WORLD_SIZE", "2");
    let stderr = run(c, &log, false);
    assert!(
        stderr.contains("--nproc") && stderr.contains("RANK=0, WORLD_SIZE=2"),
        "{stderr}"
    );
    assert!(!dir.path().join("run").exists(), "nothing started");
}
