//! Addresses: the configured range of a subnet new VMs get their IPv4 address from, and the
//! pure choice of the lowest address in it that no one holds (found in DNS, in Chef, or
//! reserved).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// A range of IPv4 addresses, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RangeSpec", into = "RangeSpec")]
pub struct AddressRange {
    first: Ipv4Addr,
    last: Ipv4Addr,
}

/// The serde form of [`AddressRange`]: `{ first = "10.0.0.10", last = "10.0.0.200" }`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeSpec {
    first: Ipv4Addr,
    last: Ipv4Addr,
}

/// A range whose first address comes after its last.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address range {first}..{last} is empty: the first address comes after the last")]
pub struct EmptyRange {
    /// The first address given.
    pub first: Ipv4Addr,
    /// The last address given.
    pub last: Ipv4Addr,
}

impl AddressRange {
    /// The range `first..=last`; refused when empty.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> Result<Self, EmptyRange> {
        if first <= last {
            Ok(Self { first, last })
        } else {
            Err(EmptyRange { first, last })
        }
    }

    /// The first address.
    pub fn first(&self) -> Ipv4Addr {
        self.first
    }

    /// The last address.
    pub fn last(&self) -> Ipv4Addr {
        self.last
    }

    /// Whether `address` is in the range.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        self.first <= address && address <= self.last
    }

    /// How many addresses the range has.
    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }

    /// Never: a range has at least one address (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl TryFrom<RangeSpec> for AddressRange {
    type Error = EmptyRange;
    fn try_from(spec: RangeSpec) -> Result<Self, EmptyRange> {
        Self::new(spec.first, spec.last)
    }
}

impl From<AddressRange> for RangeSpec {
    fn from(range: AddressRange) -> Self {
        Self { first: range.first, last: range.last }
    }
}

/// The lowest address of `range` not in `taken`, or `None` when every one is taken. The walk
/// skips taken addresses by their sorted order, so it costs `O(taken)`, not `O(range)`.
pub fn free_address(range: AddressRange, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let mut candidate = u32::from(range.first);
    for address in taken.range(range.first..=range.last) {
        let address = u32::from(*address);
        if address > candidate {
            break;
        }
        if address == candidate {
            candidate = candidate.checked_add(1)?;
        }
    }
    let candidate = Ipv4Addr::from(candidate);
    range.contains(candidate).then_some(candidate)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn skips_taken_addresses() {
        let range = AddressRange::new(Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 12)).unwrap();
        let mut taken = BTreeSet::from([Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 1)]);
        assert_eq!(free_address(range, &taken), Some(Ipv4Addr::new(10, 0, 0, 11)));
        taken.insert(Ipv4Addr::new(10, 0, 0, 11));
        taken.insert(Ipv4Addr::new(10, 0, 0, 12));
        assert_eq!(free_address(range, &taken), None);
        let top = AddressRange::new(Ipv4Addr::BROADCAST, Ipv4Addr::BROADCAST).unwrap();
        assert_eq!(free_address(top, &BTreeSet::from([Ipv4Addr::BROADCAST])), None);
        assert!(AddressRange::new(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1)).is_err());
    }
}
