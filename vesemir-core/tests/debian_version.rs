//! Debian version ordering: the tricky cases by hand, then random pairs from a realistic
//! alphabet checked against dpkg itself (`dpkg --compare-versions`, run by this test: the core
//! does no IO).

use std::cmp::Ordering;
use std::process::Command;

use proptest::prelude::*;
use vesemir_core::debian_version::{compare, DebianVersion};

fn v(text: &str) -> DebianVersion {
    DebianVersion::parse(text).unwrap_or_else(|e| panic!("{text:?} {e}"))
}

#[test]
fn the_tricky_cases() {
    use Ordering::{Equal, Greater, Less};
    for (a, b, expected) in [
        ("1.0~rc1", "1.0", Less),
        ("1.0~rc1", "1.0~rc2", Less),
        ("1.0~~", "1.0~", Less),
        ("1.0~", "1.0", Less),
        ("1:0.9", "2.0", Greater),
        ("0:2.0", "2.0", Equal),
        ("1.0-1", "1.0-1.1", Less),
        ("1.0-1", "1.0-1~bpo1", Greater),
        ("1.0", "1.0-0", Equal),
        ("1.0", "1.00", Equal),
        ("1.0", "1.0+b1", Less),
        ("1.0a", "1.0+", Less),
        ("1.0a", "1.0", Greater),
        ("1.0", "1.0.1", Less),
        ("1.9", "1.10", Less),
        ("1.01", "1.1", Equal),
        ("2.0-1", "10.0-1", Less),
        ("1.0-rc1-1", "1.0-1", Greater),
        ("1.2.3-4ubuntu1", "1.2.3-4", Greater),
        ("2:1.0", "1:9.9", Greater),
        ("1.0.0~beta", "1.0.0~alpha", Greater),
        ("1.0Z", "1.0a", Less),
    ] {
        assert_eq!(v(a).cmp(&v(b)), expected, "{a} vs {b}");
        assert_eq!(v(b).cmp(&v(a)), expected.reverse(), "{b} vs {a}");
        assert_eq!(compare(a, b), expected, "compare({a}, {b})");
    }
    let mut sorted: Vec<DebianVersion> =
        ["1.0", "1.0~rc1", "1:0.1", "1.0-1", "0.9", "1.0+b1"].into_iter().map(v).collect();
    sorted.sort();
    let texts: Vec<&str> = sorted.iter().map(DebianVersion::as_str).collect();
    assert_eq!(texts, ["0.9", "1.0~rc1", "1.0", "1.0-1", "1.0+b1", "1:0.1"]);
}

/// dpkg's answer for `a` against `b`.
fn dpkg_order(a: &str, b: &str) -> Ordering {
    let holds = |relation: &str| {
        let status = Command::new("dpkg").args(["--compare-versions", a, relation, b]).status();
        match status {
            Ok(status) => status.success(),
            Err(e) => panic!("dpkg could not be run ({e}): install the Debian package `dpkg`"),
        }
    };
    if holds("lt") {
        Ordering::Less
    } else if holds("gt") {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// A realistic version: an optional small epoch, an upstream starting with a digit built from
/// the pieces real versions use (so near-equal pairs are frequent), an optional revision.
fn version() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "0", "1", "2", "9", "10", "01", "00", ".", ".", "~", "~", "+", "-", "a", "b", "z", "A", "rc", "beta",
        "dfsg", "git", "~rc", "+b", ".0",
    ]);
    let revision_piece =
        prop::sample::select(vec!["0", "1", "2", "10", ".", "~", "+", "a", "ubuntu", "bpo", "deb"]);
    (
        prop::option::weighted(0.2, 0u32..3),
        0u32..12,
        prop::collection::vec(piece, 0..5),
        prop::option::weighted(0.5, prop::collection::vec(revision_piece, 1..4)),
    )
        .prop_map(|(epoch, first, pieces, revision)| {
            let mut text = String::new();
            if let Some(epoch) = epoch {
                text.push_str(&format!("{epoch}:"));
            }
            text.push_str(&first.to_string());
            for piece in pieces {
                // '-' in the upstream part only when a revision follows.
                if piece != "-" || revision.is_some() {
                    text.push_str(piece);
                }
            }
            if let Some(revision) = revision {
                text.push('-');
                text.extend(revision);
            }
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn orders_as_dpkg_does(a in version(), b in version()) {
        let (x, y) = (v(&a), v(&b));
        prop_assert_eq!(x.cmp(&y), dpkg_order(&a, &b), "{} vs {}", a, b);
        prop_assert_eq!(x.cmp(&x), Ordering::Equal);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn near_versions_order_as_dpkg_does(a in version(), suffix in prop::sample::select(vec!["~", "~1", "0", ".0", "+1", "a", "-1", "-0", "1"])) {
        // A version against itself with a little added: where ordering bugs hide.
        let b = format!("{a}{suffix}");
        prop_assume!(DebianVersion::parse(&b).is_ok());
        prop_assert_eq!(v(&a).cmp(&v(&b)), dpkg_order(&a, &b), "{} vs {}", a, b);
    }
}
