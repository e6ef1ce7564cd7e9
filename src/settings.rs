//! How messages below the command line name a setting.
//!
//! The libraries name their config fields (`batch_size`); the command line
//! registers its own spelling (`--batch-size`) once at start-up with
//! [`set_namer`], so that one error reads right both to a library caller and
//! to someone at a shell, and nothing below the CLI knows flags.

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

#[cfg(test)]
mod tests {
    #[test]
    fn without_a_namer_a_field_is_named_as_itself() {
        // Unit tests never register the CLI's namer.
        assert_eq!(super::name("batch_size"), "batch_size");
    }
}
