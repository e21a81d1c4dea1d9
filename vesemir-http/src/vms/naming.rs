//! A VM's default name: its owner's name as a DNS label and the lowest free number,
//! `alice-1`, `alice-2`...

use vesemir_core::provision::VmName;

/// The longest owner part of a default name: `{base}-{n}` stays within a label's 63
/// characters for any `n` up to 99 999.
const MAX_BASE: usize = 57;

/// `owner` as the first part of a VM name: lowercased, every run of characters a DNS label
/// does not allow (`.`, `_`, spaces...) made one `-`, no `-` at either end, at most 57
/// characters. `None` when nothing is left (an owner of only such characters).
pub fn base_of(owner: &str) -> Option<String> {
    let mut base = String::new();
    for c in owner.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            base.push(c);
        } else if !base.ends_with('-') {
            base.push('-');
        }
    }
    base.truncate(MAX_BASE);
    let base = base.trim_matches('-').to_owned();
    (!base.is_empty()).then_some(base)
}

/// The `n`th candidate name of `base` (from 1).
pub fn candidate(base: &str, n: u32) -> Option<VmName> {
    VmName::new(format!("{base}-{n}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_become_labels_or_nothing() {
        assert_eq!(base_of("alice").as_deref(), Some("alice"));
        assert_eq!(base_of("Alice.Smith_2").as_deref(), Some("alice-smith-2"));
        assert_eq!(base_of("..bob..").as_deref(), Some("bob"));
        assert_eq!(base_of("___"), None);
        assert_eq!(base_of("élise").as_deref(), Some("lise"));
        let long = "a".repeat(100);
        let base = base_of(&long).expect("a base");
        assert!(candidate(&base, 99_999).is_some(), "{base}");
        assert_eq!(candidate("alice", 2).map(|n| n.to_string()).as_deref(), Some("alice-2"));
    }
}
