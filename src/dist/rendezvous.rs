//! Who this process is in a data-parallel job, from its launcher's
//! environment: torchrun (and `geossl pretrain --nproc`, which sets the same
//! variables) or SLURM's `srun`.

use anyhow::{bail, Context};

/// The launcher name of ranks started by `geossl pretrain --nproc`
/// ([`Rendezvous::launcher`]), for messages.
pub const NPROC_LAUNCHER: &str = "geossl --nproc";

/// Who this process is in the job, read from the launcher's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// This process's global rank, `0..world_size`.
    pub rank: usize,
    /// The number of processes in the job (at least 1).
    pub world_size: usize,
    /// This process's rank on its machine, `0..local_world_size`
    /// (which GPU it drives).
    pub local_rank: usize,
    /// The number of processes on this machine.
    pub local_world_size: usize,
    /// Where the TCPStore is (MASTER_ADDR).
    pub master_addr: String,
    /// Its port (MASTER_PORT, 1..=65535).
    pub master_port: u16,
    /// torchrun's agent hosts the TCPStore: every rank connects as client.
    pub agent_store: bool,
    /// Key prefix so a restarted attempt never reads stale keys
    /// (torchrun: TORCHELASTIC_RESTART_COUNT).
    pub store_prefix: String,
    /// "torchrun", "SLURM" or "geossl --nproc", for messages.
    pub launcher: &'static str,
}

/// The usual SLURM lines for the store's address, quoted in errors.
const SLURM_MASTER_HINT: &str = "under SLURM, export them in the batch script before srun, \
     e.g. `export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)` \
     and `export MASTER_PORT=29500` (any free port)";

/// What sets torchrun's variables, quoted in errors.
const TORCHRUN_SETS: &str = "torchrun (and `geossl pretrain --nproc`) sets RANK, WORLD_SIZE, \
     LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT for every rank";

impl Rendezvous {
    /// None when no launcher variables are set (a single-process run);
    /// errors name the missing/invalid variable and say what sets it.
    /// See [`Rendezvous::from_vars`] for the rules.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Rendezvous::from_env`] over any variable source (`get(name)` is the
    /// variable's value, None when unset).
    ///
    /// - RANK or WORLD_SIZE set: torchrun's variables (RANK, WORLD_SIZE,
    ///   LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT all needed);
    ///   the launcher is "geossl --nproc" when GEOSSL_LAUNCHER=nproc. Like
    ///   torch.distributed.rendezvous's `_create_c10d_store`, the agent hosts
    ///   the store when TORCHELASTIC_USE_AGENT_STORE is "True" (or "1"); the
    ///   store prefix holds TORCHELASTIC_RESTART_COUNT. These win over
    ///   SLURM's (torchrun inside srun).
    /// - Else SLURM_PROCID set: SLURM's SLURM_PROCID, SLURM_NTASKS,
    ///   SLURM_LOCALID, SLURM_NTASKS_PER_NODE (or the first count of
    ///   SLURM_TASKS_PER_NODE, "4(x2)" -> 4), and MASTER_ADDR/MASTER_PORT
    ///   exported by the user. A one-task SLURM job without MASTER_ADDR and
    ///   MASTER_PORT is a single-process run (None).
    /// - Else None.
    ///
    /// A world size of 1 from a launcher still gives a Rendezvous.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let var = |name: &str| get(name).filter(|v| !v.is_empty());
        let nproc = match var("GEOSSL_LAUNCHER").as_deref() {
            None => false,
            Some("nproc") => true,
            Some(other) => bail!(
                "GEOSSL_LAUNCHER={other:?} is not a geossl launcher (only `geossl pretrain \
                 --nproc` sets it, to \"nproc\")"
            ),
        };
        let rdzv = if var("RANK").is_some() || var("WORLD_SIZE").is_some() {
            let launcher = if nproc { NPROC_LAUNCHER } else { "torchrun" };
            Some(Self::torchrun(&Vars {
                var: &var,
                launcher,
                sets: TORCHRUN_SETS,
            })?)
        } else if nproc {
            bail!("GEOSSL_LAUNCHER=nproc but RANK is not set: {TORCHRUN_SETS}");
        } else if var("SLURM_PROCID").is_some() {
            Self::slurm(&var)?
        } else {
            None
        };
        if let Some(r) = &rdzv {
            r.validate()?;
        }
        Ok(rdzv)
    }

    fn torchrun(v: &Vars<'_>) -> anyhow::Result<Self> {
        let agent_store = matches!(
            v.var("TORCHELASTIC_USE_AGENT_STORE").as_deref(),
            Some("True" | "1")
        );
        let restart = v
            .optional_number("TORCHELASTIC_RESTART_COUNT")?
            .unwrap_or(0);
        Ok(Self {
            rank: v.number("RANK")?,
            world_size: v.number("WORLD_SIZE")?,
            local_rank: v.number("LOCAL_RANK")?,
            local_world_size: v.number("LOCAL_WORLD_SIZE")?,
            master_addr: v.required("MASTER_ADDR")?,
            master_port: v.port()?,
            agent_store,
            store_prefix: format!("geossl/restart{restart}/"),
            launcher: v.launcher,
        })
    }

    fn slurm(var: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let v = Vars {
            var,
            launcher: "SLURM",
            sets: "srun sets SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and \
                   SLURM_TASKS_PER_NODE for every task",
        };
        let world_size = v.number("SLURM_NTASKS")?;
        if world_size == 1 && var("MASTER_ADDR").is_none() && var("MASTER_PORT").is_none() {
            return Ok(None);
        }
        let local_world_size = match v.optional_number("SLURM_NTASKS_PER_NODE")? {
            Some(n) => n,
            None => v.first_count("SLURM_TASKS_PER_NODE")?,
        };
        let v = Vars {
            sets: SLURM_MASTER_HINT,
            ..v
        };
        Ok(Some(Self {
            rank: v.number("SLURM_PROCID")?,
            world_size,
            local_rank: v.number("SLURM_LOCALID")?,
            local_world_size,
            master_addr: v.required("MASTER_ADDR")?,
            master_port: v.port()?,
            agent_store: false,
            store_prefix: "geossl/".into(),
            launcher: "SLURM",
        }))
    }

    /// Ranks within their world sizes, worlds not empty.
    fn validate(&self) -> anyhow::Result<()> {
        let (rank_var, world_var, local_var, local_world_var) = if self.launcher == "SLURM" {
            (
                "SLURM_PROCID",
                "SLURM_NTASKS",
                "SLURM_LOCALID",
                "the tasks per node",
            )
        } else {
            ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
        };
        let l = self.launcher;
        if self.world_size == 0 {
            bail!("{l}: {world_var}=0, a job needs at least one process");
        }
        if self.rank >= self.world_size {
            bail!(
                "{l}: {rank_var}={} is not below {world_var}={}",
                self.rank,
                self.world_size
            );
        }
        if self.local_world_size == 0 || self.local_world_size > self.world_size {
            bail!(
                "{l}: {local_world_var}={} is not within 1..={world_var}={}",
                self.local_world_size,
                self.world_size
            );
        }
        if self.local_rank >= self.local_world_size {
            bail!(
                "{l}: {local_var}={} is not below {local_world_var}={}",
                self.local_rank,
                self.local_world_size
            );
        }
        Ok(())
    }
}

/// Reads one launcher's variables; errors name the variable, its value and
/// what sets it.
struct Vars<'a> {
    var: &'a dyn Fn(&str) -> Option<String>,
    launcher: &'static str,
    /// Which launcher sets the variables read, for missing ones.
    sets: &'static str,
}

impl Vars<'_> {
    fn var(&self, name: &str) -> Option<String> {
        (self.var)(name)
    }

    fn required(&self, name: &str) -> anyhow::Result<String> {
        self.var(name)
            .with_context(|| format!("{}: {name} is not set; {}", self.launcher, self.sets))
    }

    fn parse(&self, name: &str, value: &str) -> anyhow::Result<usize> {
        value.trim().parse().map_err(|_| {
            anyhow::anyhow!("{}: {name}={value:?} is not a whole number", self.launcher)
        })
    }

    fn number(&self, name: &str) -> anyhow::Result<usize> {
        self.parse(name, &self.required(name)?)
    }

    fn optional_number(&self, name: &str) -> anyhow::Result<Option<usize>> {
        self.var(name).map(|v| self.parse(name, &v)).transpose()
    }

    /// MASTER_PORT: a TCP port the store listens on, 1..=65535.
    fn port(&self) -> anyhow::Result<u16> {
        let value = self.required("MASTER_PORT")?;
        match value.trim().parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => bail!(
                "{}: MASTER_PORT={value:?} is not a TCP port (1 to 65535)",
                self.launcher
            ),
        }
    }

    /// The first count of a SLURM task list such as "4(x2),3": 4.
    fn first_count(&self, name: &str) -> anyhow::Result<usize> {
        let value = self.required(name)?;
        let first = value.split([',', '(']).next().unwrap_or("");
        self.parse(name, first)
            .with_context(|| format!("{name} is read as SLURM's task list, e.g. \"4(x2)\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `from_vars` over exactly `vars`.
    fn rdzv(vars: &[(&str, &str)]) -> anyhow::Result<Option<Rendezvous>> {
        Rendezvous::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    /// The full error text (with its causes).
    fn error(vars: &[(&str, &str)]) -> String {
        format!("{:#}", rdzv(vars).unwrap_err())
    }

    const TORCHRUN: &[(&str, &str)] = &[
        ("RANK", "3"),
        ("WORLD_SIZE", "4"),
        ("LOCAL_RANK", "1"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "node7"),
        ("MASTER_PORT", "29500"),
        ("TORCHELASTIC_RESTART_COUNT", "2"),
        ("TORCHELASTIC_USE_AGENT_STORE", "True"),
    ];

    const SLURM: &[(&str, &str)] = &[
        ("SLURM_PROCID", "5"),
        ("SLURM_NTASKS", "8"),
        ("SLURM_LOCALID", "1"),
        ("SLURM_TASKS_PER_NODE", "4(x2)"),
        ("MASTER_ADDR", "gpu01"),
        ("MASTER_PORT", "29400"),
    ];

    /// Launcher variables, as (name, value).
    type Env = &'static [(&'static str, &'static str)];
    /// Changes to them: a value replaces or adds, None removes.
    type Changes = &'static [(&'static str, Option<&'static str>)];

    /// `base` with `changes` applied: a value replaces or adds, None removes.
    fn with<'a>(
        base: &[(&'a str, &'a str)],
        changes: &[(&'a str, Option<&'a str>)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut out: Vec<_> = base
            .iter()
            .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
            .copied()
            .collect();
        out.extend(changes.iter().filter_map(|(k, v)| v.map(|v| (*k, v))));
        out
    }

    #[test]
    fn no_launcher_is_a_single_process_run() {
        assert_eq!(rdzv(&[]).unwrap(), None);
        assert_eq!(
            rdzv(&[("MASTER_ADDR", "x"), ("LOCAL_RANK", "0")]).unwrap(),
            None
        );
    }

    #[test]
    fn torchrun_with_its_agent_store() {
        let r = rdzv(TORCHRUN).unwrap().unwrap();
        let expected = Rendezvous {
            rank: 3,
            world_size: 4,
            local_rank: 1,
            local_world_size: 2,
            master_addr: "node7".into(),
            master_port: 29500,
            agent_store: true,
            store_prefix: "geossl/restart2/".into(),
            launcher: "torchrun",
        };
        assert_eq!(r, expected);
    }

    #[test]
    fn torchrun_without_agent_store_has_rank_0_host_it() {
        for value in [None, Some("False"), Some("0")] {
            let vars = with(TORCHRUN, &[("TORCHELASTIC_USE_AGENT_STORE", value)]);
            assert!(!rdzv(&vars).unwrap().unwrap().agent_store, "{value:?}");
        }
        let vars = with(TORCHRUN, &[("TORCHELASTIC_USE_AGENT_STORE", Some("1"))]);
        assert!(rdzv(&vars).unwrap().unwrap().agent_store);
        let vars = with(TORCHRUN, &[("TORCHELASTIC_RESTART_COUNT", None)]);
        assert_eq!(
            rdzv(&vars).unwrap().unwrap().store_prefix,
            "geossl/restart0/"
        );
    }

    #[test]
    fn geossl_nproc_uses_torchruns_variables() {
        let vars = with(TORCHRUN, &[("GEOSSL_LAUNCHER", Some("nproc"))]);
        assert_eq!(rdzv(&vars).unwrap().unwrap().launcher, "geossl --nproc");
        let e = error(&[("GEOSSL_LAUNCHER", "nproc")]);
        assert!(
            e.contains("GEOSSL_LAUNCHER=nproc but RANK is not set"),
            "{e}"
        );
        let e = error(&with(TORCHRUN, &[("GEOSSL_LAUNCHER", Some("mpirun"))]));
        assert!(e.contains("GEOSSL_LAUNCHER=\"mpirun\""), "{e}");
    }

    #[test]
    fn slurm_with_srun_task_lists() {
        let r = rdzv(SLURM).unwrap().unwrap();
        assert_eq!(
            (r.rank, r.world_size, r.local_rank, r.local_world_size),
            (5, 8, 1, 4)
        );
        assert_eq!((r.master_addr.as_str(), r.master_port), ("gpu01", 29400));
        assert_eq!((r.agent_store, r.launcher), (false, "SLURM"));
        let vars = with(SLURM, &[("SLURM_TASKS_PER_NODE", Some("3,2(x2)"))]);
        assert_eq!(rdzv(&vars).unwrap().unwrap().local_world_size, 3);
        // --ntasks-per-node wins over the task list.
        let vars = with(
            SLURM,
            &[
                ("SLURM_NTASKS_PER_NODE", Some("2")),
                ("SLURM_LOCALID", Some("0")),
            ],
        );
        assert_eq!(rdzv(&vars).unwrap().unwrap().local_world_size, 2);
    }

    #[test]
    fn a_one_task_slurm_job_without_a_master_is_single_process() {
        let one = [
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
            ("SLURM_LOCALID", "0"),
        ];
        assert_eq!(rdzv(&one).unwrap(), None);
        let vars = with(
            SLURM,
            &[
                ("SLURM_PROCID", Some("0")),
                ("SLURM_NTASKS", Some("1")),
                ("SLURM_LOCALID", Some("0")),
                ("SLURM_TASKS_PER_NODE", Some("1")),
            ],
        );
        assert_eq!(rdzv(&vars).unwrap().unwrap().world_size, 1);
    }

    #[test]
    fn torchruns_variables_win_over_slurms() {
        let mut vars = SLURM.to_vec();
        vars.extend(with(
            TORCHRUN,
            &[("MASTER_ADDR", None), ("MASTER_PORT", None)],
        ));
        let r = rdzv(&vars).unwrap().unwrap();
        assert_eq!((r.launcher, r.rank, r.world_size), ("torchrun", 3, 4));
    }

    #[test]
    fn errors_name_the_variable_and_its_value() {
        let cases: &[(Env, Changes, &str)] = &[
            (
                TORCHRUN,
                &[("WORLD_SIZE", None)],
                "torchrun: WORLD_SIZE is not set; torchrun",
            ),
            (
                TORCHRUN,
                &[("RANK", Some("two"))],
                "torchrun: RANK=\"two\" is not a whole number",
            ),
            (
                TORCHRUN,
                &[("RANK", Some("4"))],
                "torchrun: RANK=4 is not below WORLD_SIZE=4",
            ),
            (
                TORCHRUN,
                &[("WORLD_SIZE", Some("0")), ("RANK", Some("0"))],
                "WORLD_SIZE=0",
            ),
            (
                TORCHRUN,
                &[("LOCAL_RANK", Some("2"))],
                "LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2",
            ),
            (
                TORCHRUN,
                &[("LOCAL_WORLD_SIZE", Some("5"))],
                "LOCAL_WORLD_SIZE=5 is not within 1..=WORLD_SIZE=4",
            ),
            (
                TORCHRUN,
                &[("MASTER_PORT", Some("70000"))],
                "MASTER_PORT=\"70000\" is not a TCP port",
            ),
            (
                TORCHRUN,
                &[("MASTER_PORT", Some("0"))],
                "MASTER_PORT=\"0\" is not a TCP port",
            ),
            (
                TORCHRUN,
                &[("TORCHELASTIC_RESTART_COUNT", Some("x"))],
                "TORCHELASTIC_RESTART_COUNT=\"x\"",
            ),
            (
                SLURM,
                &[("SLURM_PROCID", Some("8"))],
                "SLURM: SLURM_PROCID=8 is not below SLURM_NTASKS=8",
            ),
            (
                SLURM,
                &[("SLURM_NTASKS", None)],
                "SLURM: SLURM_NTASKS is not set; srun sets",
            ),
            (
                SLURM,
                &[("SLURM_TASKS_PER_NODE", Some("(x2)"))],
                "SLURM_TASKS_PER_NODE=\"\" is not a whole number",
            ),
            (
                SLURM,
                &[("SLURM_TASKS_PER_NODE", None)],
                "SLURM_TASKS_PER_NODE is not set",
            ),
            (
                SLURM,
                &[("SLURM_LOCALID", Some("4"))],
                "SLURM_LOCALID=4 is not below the tasks per node=4",
            ),
            (
                SLURM,
                &[("MASTER_ADDR", None)],
                "MASTER_ADDR is not set; under SLURM, export them",
            ),
        ];
        for (base, changes, expected) in cases {
            let e = error(&with(base, changes));
            assert!(e.contains(expected), "{changes:?}: {e}");
        }
        let e = error(&with(SLURM, &[("MASTER_PORT", None)]));
        assert!(
            e.contains("scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1"),
            "{e}"
        );
    }
}
