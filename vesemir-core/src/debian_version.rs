//! Debian version numbers and their order, as `dpkg --compare-versions` orders them: what a
//! package repository's watcher uses to tell which of a package's versions is the newest.
//!
//! A version is `[epoch:]upstream[-revision]`. Versions compare by epoch (a number, 0 when
//! absent), then upstream, then revision (empty when absent), the last two with dpkg's
//! algorithm: alternately a run of non-digits, compared character by character where `~`
//! sorts before everything (even the end of the string), letters before every other
//! character, and a run of digits, compared as a number. So `1.0~rc1 < 1.0 < 1.0+b1 < 1.0a`,
//! `1:0.9 > 2.0`, `1.0-1 < 1.0-1.1`, and `1.0 == 1.00 == 1.0-0`.
//!
//! Parsing is as strict as dpkg's (without its warnings): upstream starts with a digit and
//! holds only `A-Za-z0-9.+~-:`, the revision only `A-Za-z0-9.+~`, the epoch is a number up to
//! 2147483647, and none is empty when its separator is present.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A Debian package version, ordered as dpkg orders them (equal versions may be written
/// differently: `1.0` and `1.0-0`; [`DebianVersion::as_str`] keeps the text as given).
#[derive(Debug, Clone)]
pub struct DebianVersion {
    text: String,
    epoch: u32,
    /// Byte range of the upstream part in `text`.
    upstream: (usize, usize),
    /// Byte range of the revision in `text` (empty when there is none).
    revision: (usize, usize),
}

/// Why a text is not a Debian version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DebianVersionError {
    /// Nothing, or only whitespace.
    #[error("is empty")]
    Empty,
    /// Whitespace inside it.
    #[error("has embedded spaces")]
    Spaces,
    /// The part before `:` is not a number up to 2147483647.
    #[error("has an epoch (before ':') that is not a number up to 2147483647")]
    Epoch,
    /// Nothing between the epoch's `:` and the revision's `-`.
    #[error("has an empty upstream version")]
    EmptyUpstream,
    /// The upstream version does not start with a digit.
    #[error("has an upstream version that does not start with a digit")]
    UpstreamStart,
    /// A character outside `A-Za-z0-9.+~-:` in the upstream version.
    #[error("has an invalid character {0:?} in its upstream version")]
    UpstreamCharacter(char),
    /// Nothing after the last `-`.
    #[error("has an empty revision after '-'")]
    EmptyRevision,
    /// A character outside `A-Za-z0-9.+~` in the revision.
    #[error("has an invalid character {0:?} in its revision")]
    RevisionCharacter(char),
}

impl DebianVersion {
    /// Parses `text` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, DebianVersionError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(DebianVersionError::Empty);
        }
        if text.chars().any(char::is_whitespace) {
            return Err(DebianVersionError::Spaces);
        }
        let (epoch, start) = match text.find(':') {
            Some(colon) => {
                let digits = &text[..colon];
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(DebianVersionError::Epoch);
                }
                let epoch = digits.parse::<u32>().map_err(|_| DebianVersionError::Epoch)?;
                if epoch > i32::MAX as u32 {
                    return Err(DebianVersionError::Epoch);
                }
                (epoch, colon + 1)
            }
            None => (0, 0),
        };
        let (upstream, revision) = match text[start..].rfind('-') {
            Some(dash) => ((start, start + dash), (start + dash + 1, text.len())),
            None => ((start, text.len()), (text.len(), text.len())),
        };
        let up = &text[upstream.0..upstream.1];
        let rev = &text[revision.0..revision.1];
        if up.is_empty() {
            return Err(DebianVersionError::EmptyUpstream);
        }
        if revision.0 > upstream.1 && rev.is_empty() {
            return Err(DebianVersionError::EmptyRevision);
        }
        if !up.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(DebianVersionError::UpstreamStart);
        }
        if let Some(c) = up.chars().find(|&c| !(c.is_ascii_alphanumeric() || ".-+~:".contains(c))) {
            return Err(DebianVersionError::UpstreamCharacter(c));
        }
        if let Some(c) = rev.chars().find(|&c| !(c.is_ascii_alphanumeric() || ".+~".contains(c))) {
            return Err(DebianVersionError::RevisionCharacter(c));
        }
        Ok(Self { text: text.to_owned(), epoch, upstream, revision })
    }

    /// The version as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The epoch (0 when absent).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The upstream version: between the epoch's `:` and the last `-`.
    pub fn upstream(&self) -> &str {
        &self.text[self.upstream.0..self.upstream.1]
    }

    /// The Debian revision: after the last `-` (empty when there is none).
    pub fn revision(&self) -> &str {
        &self.text[self.revision.0..self.revision.1]
    }
}

impl FromStr for DebianVersion {
    type Err = DebianVersionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for DebianVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Ord for DebianVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(self.upstream(), other.upstream()))
            .then_with(|| compare_part(self.revision(), other.revision()))
    }
}

impl PartialOrd for DebianVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for DebianVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for DebianVersion {}

/// Compares two version texts as dpkg does; a text that is not a version sorts before every
/// version (and such texts among themselves as strings), so a bad entry never wins.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (DebianVersion::parse(a), DebianVersion::parse(b)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        (Ok(_), Err(_)) => Ordering::Greater,
        (Err(_), Ok(_)) => Ordering::Less,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// A character's weight in a run of non-digits: `~` first (below the end of the string, 0),
/// then letters, then every other character; digits and the end weigh 0.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternating runs of non-digits (by [`weight`]) and digits (as numbers).
fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let at = |s: &[u8], k: usize| s.get(k).copied();
    let non_digit = |c: Option<u8>| c.is_some_and(|c| !c.is_ascii_digit());
    while i < a.len() || j < b.len() {
        while non_digit(at(a, i)) || non_digit(at(b, j)) {
            let (wa, wb) = (weight(at(a, i)), weight(at(b, j)));
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }
        while at(a, i) == Some(b'0') {
            i += 1;
        }
        while at(b, j) == Some(b'0') {
            j += 1;
        }
        let mut first_difference = Ordering::Equal;
        while let (Some(x), Some(y)) = (at(a, i), at(b, j)) {
            if !x.is_ascii_digit() || !y.is_ascii_digit() {
                break;
            }
            if first_difference == Ordering::Equal {
                first_difference = x.cmp(&y);
            }
            i += 1;
            j += 1;
        }
        if at(a, i).is_some_and(|c| c.is_ascii_digit()) {
            return Ordering::Greater;
        }
        if at(b, j).is_some_and(|c| c.is_ascii_digit()) {
            return Ordering::Less;
        }
        if first_difference != Ordering::Equal {
            return first_difference;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> DebianVersion {
        DebianVersion::parse(text).unwrap_or_else(|e| panic!("{text:?} {e}"))
    }

    #[test]
    fn parts() {
        let x = v(" 2:1.0-rc-3ubuntu1 ");
        assert_eq!(
            (x.epoch(), x.upstream(), x.revision(), x.as_str()),
            (2, "1.0-rc", "3ubuntu1", "2:1.0-rc-3ubuntu1")
        );
        let y = v("1.0");
        assert_eq!((y.epoch(), y.upstream(), y.revision()), (0, "1.0", ""));
    }

    #[test]
    fn refusals() {
        for (text, error) in [
            ("", DebianVersionError::Empty),
            ("1 0", DebianVersionError::Spaces),
            ("a:1.0", DebianVersionError::Epoch),
            (":1.0", DebianVersionError::Epoch),
            ("99999999999:1", DebianVersionError::Epoch),
            ("1:", DebianVersionError::EmptyUpstream),
            ("1:-1", DebianVersionError::EmptyUpstream),
            ("1.0-", DebianVersionError::EmptyRevision),
            ("rc1", DebianVersionError::UpstreamStart),
            ("1.0_2", DebianVersionError::UpstreamCharacter('_')),
            ("1:1.0-a:b", DebianVersionError::RevisionCharacter(':')),
        ] {
            assert_eq!(DebianVersion::parse(text).err(), Some(error), "{text:?}");
        }
    }

    #[test]
    fn a_bad_text_sorts_first() {
        assert_eq!(compare("rubbish", "0"), Ordering::Less);
        assert_eq!(compare("0", ""), Ordering::Greater);
    }
}
