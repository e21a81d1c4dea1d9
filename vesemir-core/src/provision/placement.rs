//! Placement: flavors and hypervisors from the operator's config, and the pure choice of a
//! hypervisor with room for one more guest by what it holds (guests and their sizes as read
//! from libvirt, plus reservations not yet visible there). Never over a limit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::names::{FlavorName, HypervisorName, VmName};

/// A guest's size: virtual cores, memory and disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Size {
    /// Virtual CPUs.
    pub cores: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disk in GiB.
    pub disk_gib: u64,
}

impl Size {
    /// The sum of two sizes (saturating: sizes read from a hypervisor are not trusted).
    pub fn plus(self, other: Size) -> Size {
        Size {
            cores: self.cores.saturating_add(other.cores),
            memory_mib: self.memory_mib.saturating_add(other.memory_mib),
            disk_gib: self.disk_gib.saturating_add(other.disk_gib),
        }
    }

    /// Whether every dimension of `self` is at most the same dimension of `limit`.
    pub fn fits_in(self, limit: Size) -> bool {
        self.cores <= limit.cores && self.memory_mib <= limit.memory_mib && self.disk_gib <= limit.disk_gib
    }
}

/// A flavor the operator offers: a name and a guest size.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flavor {
    /// The name people ask for, e.g. `small`.
    pub name: FlavorName,
    /// What a guest of this flavor gets.
    #[serde(flatten)]
    pub size: Size,
}

/// A hypervisor as configured: its name and what it may hold at most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hypervisor {
    /// Its name in the config (and in events and records).
    pub name: HypervisorName,
    /// The most guests it may run, whatever their sizes.
    pub max_guests: u32,
    /// The most cores, memory and disk its guests may have together.
    pub capacity: Size,
}

/// One guest a hypervisor holds, as read (a libvirt domain, running or not) or as reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guest {
    /// The domain's name.
    pub name: String,
    /// Its size.
    pub size: Size,
}

/// A hypervisor and what it holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypervisorLoad {
    /// The configured hypervisor.
    pub hypervisor: Hypervisor,
    /// Its guests as read, plus reservations for guests not defined yet.
    pub guests: Vec<Guest>,
}

impl HypervisorLoad {
    /// The sizes of its guests added up.
    pub fn used(&self) -> Size {
        self.guests.iter().fold(Size::default(), |sum, guest| sum.plus(guest.size))
    }

    /// Whether one more guest of `size` stays within every limit.
    pub fn has_room_for(&self, size: Size) -> bool {
        self.guests.len() < self.hypervisor.max_guests as usize
            && self.used().plus(size).fits_in(self.hypervisor.capacity)
    }

    /// Free memory after placing `size` (the ranking: the most free memory wins).
    fn free_memory_after(&self, size: Size) -> u64 {
        self.hypervisor.capacity.memory_mib.saturating_sub(self.used().plus(size).memory_mib)
    }
}

/// Why no hypervisor was chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// No hypervisor is configured.
    #[error("no hypervisor is configured")]
    NoHypervisors,
    /// Every hypervisor is full for this size.
    #[error("no hypervisor has room for {cores} cores, {memory_mib} MiB and {disk_gib} GiB (all {count} full)", cores = size.cores, memory_mib = size.memory_mib, disk_gib = size.disk_gib)]
    Full {
        /// The size asked for.
        size: Size,
        /// How many hypervisors were considered.
        count: usize,
    },
}

/// Chooses the hypervisor with room for a guest of `size` that keeps the most memory free
/// after it (ties: the fewest guests, then the name), so guests spread out. Never one that
/// would go over its guest count or any capacity.
pub fn choose_hypervisor(loads: &[HypervisorLoad], size: Size) -> Result<HypervisorName, PlacementError> {
    if loads.is_empty() {
        return Err(PlacementError::NoHypervisors);
    }
    loads
        .iter()
        .filter(|load| load.has_room_for(size))
        .min_by(|a, b| {
            b.free_memory_after(size)
                .cmp(&a.free_memory_after(size))
                .then(a.guests.len().cmp(&b.guests.len()))
                .then(a.hypervisor.name.cmp(&b.hypervisor.name))
        })
        .map(|load| load.hypervisor.name.clone())
        .ok_or(PlacementError::Full { size, count: loads.len() })
}

/// The placement config: flavors and hypervisors by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Flavors by name.
    pub flavors: BTreeMap<FlavorName, Flavor>,
    /// Hypervisors by name.
    pub hypervisors: BTreeMap<HypervisorName, Hypervisor>,
}

impl Catalog {
    /// Joins the hypervisors of the catalog with the guests read from each (a hypervisor not in
    /// `read` counts as empty) and the reservations not yet defined there (`reserved`: VM,
    /// hypervisor, size). A reserved VM already read as a guest is counted once.
    pub fn loads(
        &self,
        read: &BTreeMap<HypervisorName, Vec<Guest>>,
        reserved: &[(VmName, HypervisorName, Size)],
    ) -> Vec<HypervisorLoad> {
        self.hypervisors
            .values()
            .map(|hypervisor| {
                let mut guests = read.get(&hypervisor.name).cloned().unwrap_or_default();
                for (vm, on, size) in reserved {
                    if *on == hypervisor.name && !guests.iter().any(|guest| guest.name == vm.as_str()) {
                        guests.push(Guest { name: vm.to_string(), size: *size });
                    }
                }
                HypervisorLoad { hypervisor: hypervisor.clone(), guests }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn size(cores: u32, memory_mib: u64, disk_gib: u64) -> Size {
        Size { cores, memory_mib, disk_gib }
    }

    fn load(name: &str, max_guests: u32, guests: &[Size]) -> HypervisorLoad {
        HypervisorLoad {
            hypervisor: Hypervisor {
                name: HypervisorName::new(name).unwrap(),
                max_guests,
                capacity: size(22, 11 * 5120, 440),
            },
            guests: guests
                .iter()
                .enumerate()
                .map(|(i, s)| Guest { name: format!("g{i}"), size: *s })
                .collect(),
        }
    }

    #[test]
    fn the_issue_s_hypervisors_hold_eleven_guests() {
        let small = size(2, 5120, 40);
        let ten = vec![small; 10];
        let eleven = vec![small; 11];
        let loads = [load("hv-1", 11, &eleven), load("hv-2", 11, &ten)];
        assert_eq!(choose_hypervisor(&loads, small).unwrap().as_str(), "hv-2");
        let full = [load("hv-1", 11, &eleven)];
        assert_eq!(choose_hypervisor(&full, small), Err(PlacementError::Full { size: small, count: 1 }));
        assert_eq!(choose_hypervisor(&[], small), Err(PlacementError::NoHypervisors));
    }

    #[test]
    fn the_emptier_hypervisor_wins() {
        let small = size(2, 5120, 40);
        let loads = [load("hv-1", 11, &[small, small]), load("hv-2", 11, &[small])];
        assert_eq!(choose_hypervisor(&loads, small).unwrap().as_str(), "hv-2");
    }
}
