//! How messages below the command line name a setting.
//!
//! The libraries name their config fields (`batch_size`); the command line
//! registers its own spelling (`--batch-size`) once at start-up with
//! [`set_namer`], so that one error reads right both to a library caller and
//! to someone at a shell, and nothing below the CLI knows flags.
//!
//! A setting with a fixed list of values (`method`, `arch`, ...) lists them
//! with their names and help as a [`Choice`]; the CLI turns that list into
//! its possible values, so the libraries do not depend on the parser.

use std::sync::OnceLock;

static NAMER: OnceLock<fn(&str) -> String> = OnceLock::new();

/// Registers how [`name`] spells a config field (the CLI: as its flag).
/// The first registration wins; later ones are ignored.
pub fn set_namer(namer: fn(&str) -> String) {
    let _ = NAMER.set(namer);
}

/// The config field `field` (`batch_size`) as the caller knows it: its flag
/// (`--batch-size`) under the CLI, else the field name itself.
pub fn name(field: &str) -> String {
    match NAMER.get() {
        Some(namer) => namer(field),
        None => field.to_string(),
    }
}

/// A setting that takes one of a fixed list of named values
/// (`method = "moco-tp"`).
pub trait Choice: Copy + PartialEq + 'static {
    /// Every value with its name (as configs and the command line spell it)
    /// and one line of help (empty: the name says it all), in the order the
    /// help lists them.
    const CHOICES: &'static [(Self, &'static str, &'static str)];
}

/// The name of `value` in [`Choice::CHOICES`].
pub fn choice_name<T: Choice>(value: T) -> &'static str {
    T::CHOICES
        .iter()
        .find(|(v, _, _)| *v == value)
        .map(|(_, name, _)| *name)
        .expect("every value of a Choice is in its CHOICES")
}

/// The value named `name` in [`Choice::CHOICES`]; the error lists the names.
pub fn parse_choice<T: Choice>(name: &str) -> Result<T, String> {
    T::CHOICES
        .iter()
        .find(|(_, n, _)| *n == name)
        .map(|(v, _, _)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = T::CHOICES.iter().map(|(_, n, _)| *n).collect();
            format!("unknown value {name} (one of {})", names.join(", "))
        })
}

/// Implements `FromStr` and `Display` of a [`Choice`] type by its names.
macro_rules! choice_by_name {
    ($t:ty) => {
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(name: &str) -> Result<Self, String> {
                $crate::settings::parse_choice(name)
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::settings::choice_name(*self))
            }
        }
    };
}
pub(crate) use choice_by_name;

#[cfg(test)]
mod tests {
    use super::Choice;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Side {
        Left,
        Right,
    }

    impl Choice for Side {
        const CHOICES: &'static [(Self, &'static str, &'static str)] =
            &[(Side::Left, "left", ""), (Side::Right, "right", "")];
    }

    super::choice_by_name!(Side);

    #[test]
    fn a_choice_parses_its_names_and_lists_them_on_error() {
        assert_eq!(super::parse_choice::<Side>("right"), Ok(Side::Right));
        assert_eq!(super::choice_name(Side::Left), "left");
        assert_eq!(
            super::parse_choice::<Side>("up"),
            Err("unknown value up (one of left, right)".to_string())
        );
        assert_eq!("left".parse::<Side>(), Ok(Side::Left));
        assert_eq!(Side::Right.to_string(), "right");
    }

    #[test]
    fn without_a_namer_a_field_is_named_as_itself() {
        // Unit tests never register the CLI's namer.
        assert_eq!(super::name("batch_size"), "batch_size");
    }
}
