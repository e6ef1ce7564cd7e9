//! Settings with a fixed list of values ([`Choice`]: method, arch, ...) as
//! clap arguments, so the library types need no clap derive.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use crate::settings::{parse_choice, Choice};

/// The value parser of a [`Choice`] flag: `--help` lists its names (with
/// their help) in [`Choice::CHOICES`] order, and a name outside the list
/// gets clap's "invalid value" error with the list (exit status 2).
pub fn choice<T: Choice + Send + Sync>() -> impl TypedValueParser<Value = T> {
    let values = T::CHOICES.iter().map(|&(_, name, help)| {
        let value = PossibleValue::new(name);
        if help.is_empty() {
            value
        } else {
            value.help(help)
        }
    });
    PossibleValuesParser::new(values)
        .map(|name| parse_choice::<T>(&name).expect("clap accepts only the listed names"))
}

/// The most worker threads a `--threads` flag accepts. More than a few per
/// core only costs memory and start-up; an absurd count (99999) spent
/// minutes creating threads before any work.
pub const MAX_THREADS: usize = 1024;

/// `--threads N` of the worker pools: 0 (one per core) to [`MAX_THREADS`].
pub fn thread_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n <= MAX_THREADS => Ok(n),
        Ok(n) => Err(format!(
            "{n} threads: at most {MAX_THREADS} (0: one per core, {} here)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )),
        Err(e) => Err(format!("'{s}': {e}")),
    }
}
