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
