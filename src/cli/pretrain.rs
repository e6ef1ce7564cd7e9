//! `pretrain`: flags over the run config.

use std::path::PathBuf;

use clap::builder::{
    BoolValueParser, NonEmptyStringValueParser, PossibleValue, PossibleValuesParser,
    TypedValueParser,
};
use clap::{Arg, ArgAction, ArgMatches, Args};

use crate::train::config::{Field, FieldKind, Settings};
use crate::train::PretrainConfig;

/// Flags override `--config`, which overrides the defaults (the paper's).
/// A flag given twice takes its last value, so scripts can append overrides.
#[derive(Args, Debug)]
#[command(args_override_self = true)]
pub struct PretrainArgs {
    /// Run folder: config.toml, metrics.jsonl/.csv, checkpoints/.
    #[arg(long, display_order = 1)]
    pub out: PathBuf,
    /// TOML file with any of the run's settings (keys as in RUN_DIR/config.toml).
    #[arg(long, display_order = 2)]
    pub config: Option<PathBuf>,
    /// Continue from RUN_DIR/checkpoints/latest with the run's settings (flags may change only epochs, device, threads, monitoring, checkpointing and the manifest's location; others are refused). Without a checkpoint yet (a new folder, or a run killed before its first checkpoint) start from the beginning, so that a scheduler can re-run the same command line.
    #[arg(long, display_order = 3)]
    pub resume: bool,
    /// Stop this invocation after N epochs (continue later with --resume).
    #[arg(long, value_name = "N", display_order = 4)]
    pub stop_after: Option<usize>,
    /// Start N ranks of this command on this machine, data-parallel, as `torchrun --nproc-per-node N` would (Gloo on CPU; NCCL on CUDA, rank r on cuda:r). --batch-size stays the global batch. SIGINT/SIGTERM reach every rank; one failing stops the others. Under torchrun or srun leave it out: each of their tasks is one rank.
    #[arg(long, value_name = "N", display_order = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub nproc: Option<u32>,
    /// In a run of several processes (torchrun, srun, --nproc): how long joining the ranks and each collective wait for the other ranks before the job fails (a rank died or hangs). Work rank 0 does alone while the others wait (writing a checkpoint, the --knn-every monitor) must fit in it too. The default is PyTorch's, 30 minutes.
    #[arg(long, value_name = "SECONDS", display_order = 6,
          default_value_t = crate::dist::DEFAULT_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub dist_timeout: u64,
    /// Every setting of [`PretrainConfig`] as a flag.
    #[command(flatten)]
    pub settings: ConfigFlags,
}

/// The flag of every [`PretrainConfig`] field (`--batch-size` for
/// `batch_size`), built from [`PretrainConfig::describe`]: its help is the
/// field's doc and `[default: X]` from [`PretrainConfig::default`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigFlags {
    /// The flags given, as (config key, command-line text); a list's items
    /// joined by commas.
    pub given: Vec<(&'static str, String)>,
}

impl ConfigFlags {
    /// Sets the given flags' fields of `config`.
    pub fn apply(&self, config: &mut PretrainConfig) -> anyhow::Result<()> {
        for (key, text) in &self.given {
            match config.set(key, text) {
                Some(done) => done.map_err(|e| anyhow::anyhow!("--{}: {e}", flag(key)))?,
                None => anyhow::bail!("no config key {key}"),
            }
        }
        Ok(())
    }
}

/// The flag (without dashes) of config key `key`: `batch-size`.
fn flag(key: &str) -> String {
    key.replace('_', "-")
}

/// A config field's flag: the manifest first (as before the run folder),
/// the others after the command's own flags, in the order of config.toml.
fn config_arg(field: &Field, order: usize) -> Arg {
    let help = match (field.help.is_empty(), field.value.is_empty()) {
        // As clap's derive: without a period at the end.
        (_, true) => field.help.trim_end_matches('.').to_string(),
        (true, false) => format!("[default: {}]", field.value),
        (false, false) => format!("{} [default: {}]", field.help, field.value),
    };
    let value_name = field
        .value_name
        .map_or_else(|| field.key.to_uppercase(), str::to_string);
    let key = field.key;
    // Typed at parse time, so that a bad value is clap's usage error
    // naming the flag (exit 2), as for a derived flag.
    let check = move |text: &str| -> Result<String, String> {
        match PretrainConfig::default().set(key, text) {
            Some(Ok(())) => Ok(text.to_string()),
            Some(Err(e)) => Err(e),
            None => Err(format!("no config key {key}")),
        }
    };
    let arg = Arg::new(key)
        .long(flag(key))
        .help(help)
        .value_name(value_name)
        .required(false)
        .display_order(if key == "manifest" { 0 } else { 10 + order });
    match &field.kind {
        FieldKind::Value => arg.action(ArgAction::Set).value_parser(check),
        // Empty is clap's usage error, as for a derived `PathBuf`.
        FieldKind::Path => arg
            .action(ArgAction::Set)
            .value_parser(NonEmptyStringValueParser::new()),
        FieldKind::Switch => arg
            .action(ArgAction::Set)
            .num_args(0..=1)
            .default_missing_value("true")
            .value_parser(BoolValueParser::new().map(|b| b.to_string())),
        FieldKind::List => arg
            .action(ArgAction::Append)
            .value_delimiter(',')
            .value_parser(check),
        FieldKind::Choice(names) => {
            arg.action(ArgAction::Set)
                .value_parser(PossibleValuesParser::new(names.iter().map(
                    |&(name, help)| {
                        let value = PossibleValue::new(name);
                        if help.is_empty() {
                            value
                        } else {
                            value.help(help)
                        }
                    },
                )))
        }
    }
}

impl clap::Args for ConfigFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let fields = PretrainConfig::default().describe();
        fields
            .iter()
            .enumerate()
            .fold(cmd, |cmd, (i, field)| cmd.arg(config_arg(field, i)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for ConfigFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = ConfigFlags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for field in PretrainConfig::default().describe() {
            let Some(values) = matches.get_many::<String>(field.key) else {
                continue;
            };
            let text = values.cloned().collect::<Vec<_>>().join(",");
            self.given.retain(|(key, _)| *key != field.key);
            self.given.push((field.key, text));
        }
        Ok(())
    }
}

impl PretrainArgs {
    /// Defaults, then --config (or, on --resume, the run's saved config), then flags.
    pub fn resolve(&self) -> anyhow::Result<PretrainConfig> {
        let saved = crate::train::RunDir::new(&self.out).config_toml();
        let mut c = match &self.config {
            Some(path) => PretrainConfig::from_toml_file(path)?,
            None if self.resume && saved.is_file() => PretrainConfig::from_run_dir(&self.out)?,
            None => PretrainConfig::default(),
        };
        self.settings.apply(&mut c)?;
        anyhow::ensure!(
            !c.manifest.as_os_str().is_empty(),
            "no manifest: pass --manifest (or set manifest in --config)"
        );
        Ok(c)
    }
}

pub(super) fn pretrain_cmd(a: &PretrainArgs) -> anyhow::Result<()> {
    let config = a.resolve()?;
    if let Some(nproc) = a.nproc {
        // The ranks run this command line without --nproc; a bad setting
        // fails once, here, rather than once per rank.
        config.validate()?;
        let launcher = crate::dist::NPROC_LAUNCHER;
        crate::train::pretrain::check_batch_split(&config, nproc as usize, launcher)?;
        let args = crate::dist::launch::without_flag(std::env::args_os().skip(1), "--nproc");
        let exit_timeout = std::time::Duration::from_secs(a.dist_timeout);
        return crate::dist::launch::run_local_ranks(&args, nproc as usize, exit_timeout);
    }
    let options = crate::train::RunOptions {
        resume: a.resume,
        stop_after: a.stop_after,
        quiet: false,
        rendezvous: crate::dist::Rendezvous::from_env()?,
        dist_timeout: std::time::Duration::from_secs(a.dist_timeout),
    };
    let monitor: &crate::train::BuildMonitor = &crate::eval::knn::KnnMonitor::build;
    let outcome = crate::train::pretrain(&config, &a.out, &options, Some(monitor))?;
    // Rank 0 alone talks (every rank's outcome is the same).
    if options.rendezvous.as_ref().is_some_and(|r| r.rank != 0) {
        return Ok(());
    }
    println!(
        "{} epochs, {} steps done{}; last checkpoint {}",
        outcome.epochs_done,
        outcome.steps_done,
        if outcome.already_finished {
            " (already finished before this invocation)"
        } else {
            ""
        },
        outcome
            .last_checkpoint
            .map_or("none".to_string(), |p| p.display().to_string())
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        pretrain: PretrainArgs,
    }

    fn parse(args: &[&str]) -> Result<PretrainArgs, clap::Error> {
        let args = ["pretrain", "--out", "run"].iter().chain(args);
        Cli::try_parse_from(args).map(|cli| cli.pretrain)
    }

    #[test]
    fn every_config_key_is_a_flag_whose_help_shows_its_default() {
        let cmd = Cli::command();
        let defaults = toml::Table::try_from(PretrainConfig::default()).unwrap();
        let fields = PretrainConfig::default().describe();
        let keys: Vec<&str> = fields.iter().map(|f| f.key).collect();
        // Every TOML key has its field and every field a TOML key.
        let mut toml_keys: Vec<&str> = defaults.keys().map(String::as_str).collect();
        toml_keys.sort();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, toml_keys);
        let own = [
            "out",
            "config",
            "resume",
            "stop_after",
            "nproc",
            "dist_timeout",
            "help",
        ];
        let flags: Vec<&str> = cmd
            .get_arguments()
            .map(|a| a.get_id().as_str())
            .filter(|id| !own.contains(id))
            .collect();
        assert_eq!(flags, keys, "one flag per key, in the order of config.toml");
        for field in &fields {
            let arg = cmd.get_arguments().find(|a| a.get_id() == field.key);
            let arg = arg.unwrap();
            assert_eq!(arg.get_long(), Some(field.key.replace('_', "-").as_str()));
            let help = arg.get_help().unwrap().to_string();
            // Paths whose default is "none given" show no default.
            if matches!(field.key, "manifest" | "packed" | "init") {
                assert!(!help.contains("[default:"), "{help}");
                continue;
            }
            let default = help.rsplit_once("[default: ").unwrap().1;
            // The help's default is the Default's value: set from that text,
            // a config equals the default one.
            let text = default.strip_suffix(']').unwrap();
            let mut config = PretrainConfig::default();
            config.set(field.key, text).unwrap().unwrap();
            assert_eq!(config, PretrainConfig::default(), "{}", field.key);
        }
    }

    #[test]
    fn the_help_spells_defaults_as_before() {
        let help = |key: &str| {
            let cmd = Cli::command();
            let arg = cmd.get_arguments().find(|a| a.get_id() == key).unwrap();
            arg.get_help().unwrap().to_string()
        };
        assert_eq!(
            help("weight_decay"),
            "Weight decay, on all parameters as the paper. [default: 0.0001]"
        );
        assert_eq!(
            help("schedule"),
            "Step-decay milestones (epochs), comma separated. [default: 120,160]"
        );
        assert_eq!(help("method"), "[default: moco-tp-geo]");
        assert_eq!(help("alpha"), "Weight of the InfoNCE loss. [default: 1]");
    }

    #[test]
    fn flags_override_the_config_file_which_overrides_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run.toml");
        std::fs::write(&file, "lr = 0.5\nmomentum = 0.8\nmanifest = \"m.csv\"\n").unwrap();
        let a = parse(&[
            "--config",
            file.to_str().unwrap(),
            "--lr",
            "0.1",
            "--lr",
            "0.2",
            "--schedule",
            "5,7",
            "--amp",
            "--method",
            "moco-geo",
        ])
        .unwrap();
        let c = a.resolve().unwrap();
        assert_eq!(c.optimizer.lr, 0.2, "the last of a flag given twice");
        assert_eq!(c.optimizer.momentum, 0.8, "from the file");
        assert_eq!(c.optimizer.weight_decay, 1e-4, "the default");
        assert_eq!(c.optimizer.schedule, [5, 7]);
        assert!(c.run.amp);
        assert_eq!(c.method, crate::train::Method::MocoGeo);
        let c = parse(&["--manifest", "m.csv", "--amp", "false"])
            .unwrap()
            .resolve()
            .unwrap();
        assert!(!c.run.amp);
        assert_eq!(c, {
            let mut d = PretrainConfig {
                manifest: "m.csv".into(),
                ..Default::default()
            };
            d.run.amp = false;
            d
        });
    }

    #[test]
    fn nproc_and_dist_timeout_default_to_one_process_and_pytorchs_timeout() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.nproc, a.dist_timeout), (None, 1800));
        let a = parse(&["--nproc", "2", "--dist-timeout", "60"]).unwrap();
        assert_eq!((a.nproc, a.dist_timeout), (Some(2), 60));
        for args in [["--nproc", "0"], ["--dist-timeout", "0"]] {
            let e = parse(&args).err().unwrap();
            assert_eq!(e.exit_code(), 2, "a usage error");
            assert!(e.to_string().contains(args[0]), "{e}");
        }
        let cmd = Cli::command();
        let arg = cmd.get_arguments().find(|a| a.get_id() == "dist_timeout");
        assert_eq!(arg.unwrap().get_default_values(), ["1800"]);
    }

    #[test]
    fn a_bad_value_is_a_usage_error_naming_the_flag() {
        for (args, flag) in [
            (["--lr", "abc"], "--lr"),
            (["--method", "foo"], "--method"),
            (["--schedule", "1,x"], "--schedule"),
            (["--amp", "yes"], "--amp"),
            (["--image-size", "99999999999"], "--image-size"),
            (["--manifest", ""], "--manifest"),
        ] {
            let e = parse(&args).err().unwrap();
            assert_eq!(e.exit_code(), 2, "a usage error");
            assert!(e.to_string().contains(flag), "{e}");
        }
    }
}
