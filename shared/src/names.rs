//! Device names: what a receiver may be called.
//!
//! A device name is part of MQTT topics (`syncstream/drift/<device>`), of the MQTT
//! client id and of file names (`profiles/<device>.json`), so it is restricted to
//! ASCII letters, digits, `-` and `_`, 1 to [`MAX_DEVICE_NAME_LEN`] characters. A `/`
//! would split the topic (its reports would be dropped), `+` and `#` are MQTT
//! wildcards, and an unbounded name is an unbounded allocation on every peer.

/// Longest device name, characters (bytes: names are ASCII).
pub const MAX_DEVICE_NAME_LEN: usize = 64;

/// A name that is not a valid device name, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device name {shown}: {reason}")]
pub struct NameError {
    /// The name as shown in the message (quoted, cut to 80 characters).
    pub shown: String,
    /// Why it is refused.
    pub reason: String,
}

/// Checks `name` against the rules above.
///
/// Errors: empty, longer than [`MAX_DEVICE_NAME_LEN`], or holding a character other
/// than an ASCII letter, digit, `-` or `_`; the message quotes the name (cut short if
/// long) and names the first offending character and its position.
pub fn check_device_name(name: &str) -> Result<(), NameError> {
    let shown = {
        let cut: String = name.chars().take(80).collect();
        if cut.len() < name.len() {
            format!("'{cut}…' ({} bytes)", name.len())
        } else {
            format!("'{cut}'")
        }
    };
    let err = |reason: String| NameError {
        shown: shown.clone(),
        reason,
    };
    if name.is_empty() {
        return Err(err("must not be empty".into()));
    }
    if name.len() > MAX_DEVICE_NAME_LEN {
        return Err(err(format!(
            "is {} characters long; at most {MAX_DEVICE_NAME_LEN} are allowed",
            name.chars().count()
        )));
    }
    if let Some((i, c)) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(err(format!(
            "{c:?} at position {} is not allowed (only letters a-z and A-Z, digits, '-' and '_')",
            i + 1
        )));
    }
    Ok(())
}

/// Whether `name` is a valid device name (see [`check_device_name`]).
pub fn is_valid_device_name(name: &str) -> bool {
    check_device_name(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["kitchen", "tv", "Living_Room-2", "a", &"x".repeat(64)] {
            assert!(check_device_name(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_with_a_reason() {
        for (bad, needle) in [
            ("", "empty"),
            ("a/b", "'/' at position 2"),
            ("kitchen+", "'+' at position 8"),
            ("#", "'#'"),
            ("küche", "'ü'"),
            ("two words", "' '"),
            (&"x".repeat(65), "at most 64"),
        ] {
            let e = check_device_name(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let huge = "y".repeat(1 << 20);
        let e = check_device_name(&huge).unwrap_err().to_string();
        assert!(e.len() < 300, "the message stays short: {} bytes", e.len());
    }
}
