//! A host's [`Phase`] as text, both ways: the wire's `phase` field and the database's `phase`
//! column hold the core's `Display` text ("step 1 (install)", "draining"), which people read.
//!
//! Why text and not the phase's JSON: that text has been the shape on the wire and in every
//! stored row since the first release, and it carries every field of the phase (a step's
//! number and name, a health check's attempt, a weight), so [`parse`] maps it back without loss
//! (`tests::every_phase_reads_back_as_itself` pins that against the core's `Display`). Rust code
//! holds a typed [`Phase`] and never compares the text.

use vesemir_core::event::Phase;
use vesemir_core::ports::Weight;

/// The phase whose `Display` text is `text`, or `None` if no phase displays so.
pub fn parse(text: &str) -> Option<Phase> {
    let fixed = match text {
        "pending" => Some(Phase::Pending),
        "connecting" => Some(Phase::Connecting),
        "checking the backend's out-of-rotation budget" => Some(Phase::CheckingBudget),
        "draining" => Some(Phase::Draining),
        "waiting for sessions to end" => Some(Phase::WaitingForDrain),
        "closing remaining sessions" => Some(Phase::ClosingSessions),
        "entering maintenance" => Some(Phase::Disabling),
        "waiting for load balancers to report UP" => Some(Phase::WaitingForUp),
        "ready at weight 0% (health checks only, no traffic)" => {
            Some(Phase::Enabling { weight: Weight::ZERO })
        }
        "restoring into rotation" => Some(Phase::Restoring),
        "taking out of rotation" => Some(Phase::Unwinding),
        "closing session" => Some(Phase::Closing),
        "done" => Some(Phase::Done),
        _ => None,
    };
    fixed.or_else(|| parse_with_fields(text)).filter(|phase| phase.to_string() == text)
}

fn parse_with_fields(text: &str) -> Option<Phase> {
    if let Some(rest) = text.strip_prefix("step ") {
        let (number, name) = rest.split_once(" (")?;
        let name = name.strip_suffix(')')?;
        return Some(Phase::Step { number: number.parse().ok()?, name: name.to_owned() });
    }
    if let Some(attempt) = text.strip_prefix("health check (attempt ").and_then(|r| r.strip_suffix(')')) {
        return Some(Phase::HealthCheck { attempt: attempt.parse().ok()? });
    }
    if let Some(weight) = text.strip_prefix("enabling at ") {
        return Some(Phase::Enabling { weight: weight_of(weight)? });
    }
    if let Some(weight) = text.strip_prefix("holding at ") {
        return Some(Phase::Holding { weight: weight_of(weight)? });
    }
    None
}

fn weight_of(text: &str) -> Option<Weight> {
    Weight::percent(text.strip_suffix('%')?.parse().ok()?).ok()
}

/// Serde helpers for a `Phase` field written as its text (`#[serde(with = "crate::phase_text")]`).
pub fn serialize<S: serde::Serializer>(phase: &Phase, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(phase)
}

/// Reads a `Phase` field written by [`serialize`].
pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Phase, D::Error> {
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
    parse(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a host phase")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_phase() -> Vec<Phase> {
        let weight = |p| Weight::percent(p).expect("a percentage");
        vec![
            Phase::Pending,
            Phase::Connecting,
            Phase::CheckingBudget,
            Phase::Draining,
            Phase::WaitingForDrain,
            Phase::ClosingSessions,
            Phase::Disabling,
            Phase::Step { number: 1, name: "install".into() },
            Phase::Step { number: 12, name: "odd ) name (with) parens".into() },
            Phase::Step { number: 2, name: String::new() },
            Phase::HealthCheck { attempt: 3 },
            Phase::WaitingForUp,
            Phase::Enabling { weight: Weight::ZERO },
            Phase::Enabling { weight: weight(25) },
            Phase::Enabling { weight: Weight::FULL },
            Phase::Holding { weight: Weight::ZERO },
            Phase::Holding { weight: weight(50) },
            Phase::Restoring,
            Phase::Unwinding,
            Phase::Closing,
            Phase::Done,
        ]
    }

    #[test]
    fn every_phase_reads_back_as_itself() {
        for phase in every_phase() {
            assert_eq!(parse(&phase.to_string()), Some(phase.clone()), "{phase}");
        }
    }

    #[test]
    fn text_no_phase_displays_is_refused() {
        for text in ["", "Pending", "step x (a)", "step 1 install", "enabling at 101%", "holding at 5"] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}
