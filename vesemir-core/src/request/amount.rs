//! Counts that may be given as a number of hosts or as a percentage of the fleet.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of hosts, or a percentage of the whole fleet (`3` or `"25%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    /// This many hosts.
    Count(u32),
    /// This percentage (0 to 100) of the fleet.
    Percent(u8),
}

impl Amount {
    /// The count for a fleet of `fleet` hosts, rounding a percentage up (for concurrency: 10% of
    /// 5 hosts is 1 host, never 0).
    pub fn of_rounding_up(self, fleet: usize) -> usize {
        match self {
            Amount::Count(n) => n as usize,
            Amount::Percent(p) => (fleet * p as usize).div_ceil(100),
        }
    }

    /// The count for a fleet of `fleet` hosts, rounding a percentage down (for failure budgets:
    /// 10% of 5 hosts allows 0 failures).
    pub fn of_rounding_down(self, fleet: usize) -> usize {
        match self {
            Amount::Count(n) => n as usize,
            Amount::Percent(p) => fleet * p as usize / 100,
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Parses `"25%"` or `"3"`.
pub(crate) fn parse_amount(text: &str) -> Result<Amount, String> {
    let text = text.trim();
    if let Some(percent) = text.strip_suffix('%') {
        return parse_percent(percent.trim()).map(Amount::Percent);
    }
    text.parse::<u32>()
        .map(Amount::Count)
        .map_err(|_| format!("{text:?} is neither a whole number nor a percentage like \"25%\""))
}

/// Parses the number of a percentage, 0 to 100.
pub(crate) fn parse_percent(text: &str) -> Result<u8, String> {
    match text.parse::<u8>() {
        Ok(p) if p <= 100 => Ok(p),
        _ => Err(format!("{text:?}% is not a whole percentage from 0% to 100%")),
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Amount::Count(n) => serializer.serialize_u32(*n),
            Amount::Percent(_) => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AmountVisitor;
        impl Visitor<'_> for AmountVisitor {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number of hosts or a percentage like \"25%\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
                u32::try_from(v).map(Amount::Count).map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v} is negative: use 0 or more")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
                parse_amount(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(AmountVisitor)
    }
}

/// A JSON number of hosts, or a string percentage: what the OpenAPI document says of every
/// [`Amount`] field.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Amount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaType, Type};
        let count = ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Integer))
            .minimum(Some(0))
            .maximum(Some(u32::MAX))
            .description(Some("A number of hosts."));
        let percent = ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .pattern(Some(PERCENT))
            .description(Some("A percentage of the fleet, 0% to 100% (or a count, as a string)."));
        OneOfBuilder::new()
            .item(count)
            .item(percent)
            .description(Some("A number of hosts (`3`) or a percentage of the fleet (`\"25%\"`)."))
            .examples([serde_json::json!(1), serde_json::json!("25%")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Amount {}

/// An amount as [`Amount`] reads it from a string: a percentage (a whole number from 0 to 100
/// and `%`), or a count (0 to `u32::MAX`) written as a string; white space around both, a `+`
/// and leading zeros allowed, as Rust's integer parsing allows them.
#[cfg(feature = "openapi")]
pub const PERCENT: &str = concat!(
    "^\\s*\\+?0*(",
    // A count from 0 to 4294967295 (u32::MAX).
    "[0-9]{1,9}|[1-3][0-9]{9}|4[01][0-9]{8}|42[0-8][0-9]{7}|429[0-3][0-9]{6}|4294[0-8][0-9]{5}",
    "|42949[0-5][0-9]{4}|429496[0-6][0-9]{3}|4294967[01][0-9]{2}|42949672[0-8][0-9]|429496729[0-5]",
    // A percentage from 0% to 100%.
    "|(100|[1-9]?[0-9])\\s*%",
    ")\\s*$"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        assert_eq!(Amount::Percent(10).of_rounding_up(5), 1);
        assert_eq!(Amount::Percent(10).of_rounding_down(5), 0);
        assert_eq!(Amount::Percent(25).of_rounding_up(8), 2);
        assert_eq!(Amount::Count(3).of_rounding_up(100), 3);
    }

    #[test]
    fn parsing() {
        assert_eq!(parse_amount("25%"), Ok(Amount::Percent(25)));
        assert_eq!(parse_amount("7"), Ok(Amount::Count(7)));
        assert!(parse_amount("101%").is_err());
        assert!(parse_amount("many").is_err());
        let from_json: Amount = serde_json::from_str("\"50%\"").expect("percent");
        assert_eq!(from_json, Amount::Percent(50));
        assert!(serde_json::from_str::<Amount>("-1").is_err());
    }
}
