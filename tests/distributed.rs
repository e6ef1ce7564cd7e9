//! Data-parallel pretraining end to end, with the binary: two ranks
//! started as torchrun starts them (RANK, WORLD_SIZE, LOCAL_RANK,
//! LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) on Gloo, each with one CPU
//! thread. Two ranks at global batch B compute what one process at batch B
//! with `--bn-groups 2` does; a rank killed mid-run makes the other fail
//! at once, and `--resume` then ends bit for bit like an uninterrupted
//! two-rank run, as does a SIGTERM to both (a pre-emption).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::world;

/// The tiny network and data of every run here (32 px crops of the
/// built-in world's 32 px images, global batch 16).
const TINY: [&str; 22] = [
    "--method",
    "moco-tp-geo",
    "--arch",
    "resnet18",
    "--width",
    "4",
    "--small-input",
    "true",
    "--image-size",
    "32",
    "--batch-size",
    "16",
    "--moco-k",
    "64",
    "--moco-t",
    "0.2",
    "--threads",
    "1",
    "--device",
    "cpu",
    "--lr",
    "0.03",
];

/// A port nobody listens on now (other test binaries run jobs on this
/// machine at the same time: never a fixed port).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `geossl pretrain` as rank `rank` of `world`, torchrun's variables set,
/// its stderr into `log`.
fn rank_process(rank: usize, world: usize, port: u16, args: &[String], log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_geossl"))
        .arg("pretrain")
        .args(args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("LOCAL_WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("geossl starts")
}

/// A 2-rank job: rank 0 writes `out`, rank 1 is given `rank1_out` (the
/// same folder in real use; another one shows that it writes nothing).
struct Job {
    ranks: Vec<Child>,
    logs: Vec<PathBuf>,
}

impl Job {
    fn start(dir: &Path, name: &str, args: &[String], out: &Path, rank1_out: &Path) -> Self {
        let port = free_port();
        let (mut ranks, mut logs) = (Vec::new(), Vec::new());
        for (rank, out) in [out, rank1_out].iter().enumerate() {
            let log = dir.join(format!("{name}-rank{rank}.log"));
            let mut all = args.to_vec();
            all.extend(["--out".to_string(), out.display().to_string()]);
            ranks.push(rank_process(rank, 2, port, &all, &log));
            logs.push(log);
        }
        Self { ranks, logs }
    }

    fn log(&self, rank: usize) -> String {
        std::fs::read_to_string(&self.logs[rank]).unwrap()
    }

    /// Waits for both ranks (at most `limit`); fails unless both succeed.
    fn succeeds(mut self, limit: Duration) -> Self {
        for rank in 0..2 {
            let status = wait(&mut self.ranks[rank], limit);
            assert!(
                status.is_some_and(|s| s.success()),
                "rank {rank}: {status:?}\n{}",
                self.log(rank)
            );
        }
        self
    }
}

/// The child's exit status, or None after `limit` (then it is killed).
fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn args(manifest: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec!["--manifest".to_string(), manifest.display().to_string()];
    a.extend(TINY.iter().chain(extra).map(|s| s.to_string()));
    a
}

fn rows(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every metrics row without its wall-clock fields.
fn history(run: &Path) -> Vec<serde_json::Value> {
    rows(run)
        .into_iter()
        .map(|mut v| {
            let o = v.as_object_mut().unwrap();
            for k in ["pairs_per_s", "seconds", "time"] {
                o.remove(k);
            }
            v
        })
        .collect()
}

fn tensors(run: &Path, checkpoint: &str) -> BTreeMap<String, tch::Tensor> {
    let file = run
        .join("checkpoints")
        .join(checkpoint)
        .join("model.safetensors");
    tch::Tensor::read_safetensors(file)
        .unwrap()
        .into_iter()
        .collect()
}

fn model_bytes(run: &Path, checkpoint: &str) -> Vec<u8> {
    let dir = run.join("checkpoints").join(checkpoint);
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

/// BatchNorm running statistics: each rank keeps its own (no SyncBN, as
/// the reference), so they are not the one-process run's, whose groups
/// update them one after the other.
fn is_bn_statistic(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
}

#[test]
fn two_ranks_compute_what_one_process_with_two_bn_groups_does() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 60, 32, 4);
    // One unreadable training image: whichever rank meets it, rank 0
    // lists it, and its replacement is the one process's.
    let broken = std::fs::read_to_string(&geo)
        .unwrap()
        .lines()
        .find(|l| l.contains(",train,"))
        .map(|l| l.split(',').next().unwrap().to_string())
        .unwrap();
    std::fs::write(geo.parent().unwrap().join(&broken), b"not a JPEG").unwrap();
    let epochs = ["--epochs", "4", "--checkpoint-every", "4"];
    let alone = dir.path().join("alone");
    let mut one = args(&geo, &epochs);
    one.extend(["--bn-groups", "2", "--out"].map(String::from));
    one.push(alone.display().to_string());
    let status = Command::new(env!("CARGO_BIN_EXE_geossl"))
        .arg("pretrain")
        .args(&one)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");

    let (two, rank1_out) = (dir.path().join("two"), dir.path().join("rank1"));
    let job = Job::start(
        dir.path(),
        "two",
        &args(&geo, &[&epochs[..], &["--bn-groups", "1"]].concat()),
        &two,
        &rank1_out,
    )
    .succeeds(Duration::from_secs(300));
    assert!(!rank1_out.exists(), "rank 1 wrote nothing");
    assert!(job.log(1).is_empty(), "rank 1 is quiet: {}", job.log(1));
    assert!(
        job.log(0).contains("data-parallel: 2 ranks"),
        "{}",
        job.log(0)
    );

    let bad_list = |run: &Path| std::fs::read_to_string(run.join("bad_images.csv")).unwrap();
    assert!(bad_list(&two).contains(&broken), "{}", bad_list(&two));
    assert_eq!(bad_list(&two), bad_list(&alone));

    // Per-step losses: the same steps, once each (rank 0 alone logs).
    let (a, b) = (rows(&alone), rows(&two));
    assert_eq!(a.len(), b.len(), "one row per step and epoch");
    let mut loss_diff = 0f64;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x["kind"], &x["step"]), (&y["kind"], &y["step"]));
        for k in ["loss", "moco_loss", "geo_loss", "moco_acc", "geo_acc"] {
            let (x, y) = (x[k].as_f64().unwrap(), y[k].as_f64().unwrap());
            loss_diff = loss_diff.max((x - y).abs());
        }
    }
    // The trained weights and the queue of the final checkpoint.
    let (wa, wb) = (tensors(&alone, "epoch-0004"), tensors(&two, "epoch-0004"));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    let diff = |name: &str| (&wa[name] - &wb[name]).abs().max().double_value(&[]);
    let (mut weight_diff, mut buffer_diff) = (0f64, 0f64);
    for name in wa.keys().filter(|n| !is_bn_statistic(n)) {
        match name.starts_with("optimizer.") {
            false => weight_diff = weight_diff.max(diff(name)),
            true => buffer_diff = buffer_diff.max(diff(name)),
        }
    }
    eprintln!(
        "{} steps: max |loss difference| {loss_diff:.3e}, max |weight or queue difference| {weight_diff:.3e} (SGD momentum buffers {buffer_diff:.3e})",
        a.iter().filter(|r| r["kind"] == "step").count()
    );
    // Not bit for bit: float32 sums in another order (each rank's mean
    // over 8 samples, then the all-reduce and a halving, against one mean
    // over 16; the same BN groups' statistics and gradients accumulated in
    // another order): an ulp or so per step, which training carries on.
    assert!(loss_diff < LOSS_TOLERANCE, "losses differ by {loss_diff}");
    assert!(
        weight_diff < WEIGHT_TOLERANCE,
        "weights differ by {weight_diff}"
    );
}

/// Largest per-step difference of losses and accuracies allowed. Measured
/// on this run: 6.0e-6 (7.2e-7 without the broken image), growing from
/// 1 ulp of float32 at the first steps; bound at 15 times that. A real
/// difference is far larger: 2 ranks with 2 BN groups each (4 groups, not
/// 2) move the FIRST step's loss by 3.5e-2. This tiny run is sensitive to
/// float order: ANY reordering, e.g. `--threads 2` instead of 1 in the one
/// process, moves its losses by 6e-2 within the 28 steps (and by 1e-2 in
/// 15 steps at lr 0.12, hence lr 0.03 here).
const LOSS_TOLERANCE: f64 = 1e-4;
/// Largest difference of a trained weight or queue key after the 28
/// steps: measured 1.8e-5 (`--threads 2` vs 1 in one process: 1.3e-3),
/// bound ~10 times that. The SGD momentum buffers are not bounded: they
/// are mostly the last steps' gradients, whose early BatchNorm parts are
/// ill-conditioned in a width-4 network (measured 4.4e-2 here, and 0.93
/// for `--threads 2` vs 1); the losses above check the gradients' mean.
const WEIGHT_TOLERANCE: f64 = 2e-4;

#[test]
fn a_killed_or_stopped_job_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 60, 32, 4);
    let flags = args(
        &geo,
        &[
            "--epochs",
            "2",
            "--checkpoint-every",
            "2",
            "--checkpoint-every-steps",
            "3",
            "--resume",
        ],
    );
    let straight = dir.path().join("straight");
    Job::start(dir.path(), "straight", &flags, &straight, &straight)
        .succeeds(Duration::from_secs(300));
    let last = "epoch-0002";

    // SIGKILL of rank 1 once a mid-epoch checkpoint exists: rank 0 fails
    // at once, naming the collective and the last good checkpoint.
    let run = dir.path().join("killed");
    let mut job = Job::start(dir.path(), "killed", &flags, &run, &run);
    let t0 = Instant::now();
    while !run.join("checkpoints/latest").exists() && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    job.ranks[1].kill().unwrap();
    let killed = Instant::now();
    let status = wait(&mut job.ranks[0], Duration::from_secs(60));
    let took = killed.elapsed();
    let _ = job.ranks[1].wait();
    let log = job.log(0);
    eprintln!("rank 0 exited {took:?} after rank 1 was killed: {status:?}");
    assert!(status.is_some_and(|s| !s.success()), "{status:?}: {log}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(log.contains("The last good checkpoint is /"), "{log}");
    let failed = ["all_reduce", "all_gather", "broadcast", "barrier"]
        .iter()
        .any(|op| log.contains(&format!("rank 0 of 2: {op} failed after")));
    assert!(failed, "names the collective: {log}");
    eprintln!("{}", log.lines().last().unwrap_or(""));
    assert!(!rows(&run).is_empty());
    Job::start(dir.path(), "killed-resumed", &flags, &run, &run).succeeds(Duration::from_secs(300));
    assert_eq!(model_bytes(&run, last), model_bytes(&straight, last));
    assert_eq!(history(&run), history(&straight));

    // SIGTERM to both ranks (torchrun's or SLURM's pre-emption): one
    // checkpoint, a clean exit, and --resume finishes the same run.
    let run = dir.path().join("stopped");
    let mut job = Job::start(dir.path(), "stopped", &flags, &run, &run);
    let t0 = Instant::now();
    let logged = |run: &Path| {
        std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count())
    };
    while logged(&run) < 5 && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    for child in &job.ranks {
        // SAFETY: a plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    }
    for rank in 0..2 {
        let status = wait(&mut job.ranks[rank], Duration::from_secs(60));
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
    }
    let log = job.log(0);
    assert!(log.contains("SIGTERM: stopped at epoch"), "{log}");
    assert_eq!(log.matches("SIGTERM").count(), 1, "{log}");
    Job::start(dir.path(), "stopped-resumed", &flags, &run, &run)
        .succeeds(Duration::from_secs(300));
    assert_eq!(model_bytes(&run, last), model_bytes(&straight, last));
    assert_eq!(history(&run), history(&straight));

    // Ranks that see different run folders (node-local disks): rank 0
    // resumes the finished run, rank 1 finds no checkpoint. Both refuse at
    // once, before any rank writes, instead of training different epochs
    // or waiting for each other until the timeout.
    let mut more = flags.clone();
    let epochs = more.iter().position(|f| f == "--epochs").unwrap();
    more[epochs + 1] = "3".to_string();
    let elsewhere = dir.path().join("elsewhere");
    let before = history(&straight);
    let mut job = Job::start(dir.path(), "split", &more, &straight, &elsewhere);
    for rank in 0..2 {
        let status = wait(&mut job.ranks[rank], Duration::from_secs(60));
        assert!(status.is_some_and(|s| !s.success()), "{status:?}");
        let log = job.log(rank);
        assert!(
            log.contains(
                "rank 1 starts at a new run (no checkpoint) but rank 0 at epoch 2, batch 0"
            ),
            "rank {rank}: {log}"
        );
        assert!(
            log.contains("every rank must see the same run folder"),
            "{log}"
        );
    }
    assert_eq!(history(&straight), before, "nothing written");
    assert!(!elsewhere.join("metrics.jsonl").exists());
}
