//! A cache's vacant slots ready for reuse, kept per unit of [`UNIT_SLOTS`] consecutive slots, so
//! that the units whose slots are all vacant can be found and taken off without a pass over every
//! slot.
//!
//! Each unit with listed slots has a list linked through the slots themselves (a vacant slot's
//! [`Slot::free_link`] names the next of its unit as index + 1, 0 ending the list), and a count.
//! Slots are taken from one unit, the current one, until it runs out; then from the unit that got
//! its first listed slot last. So a new object's slot usually lies near the last one's, and a unit
//! the cache stopped taking from can fill up with vacant slots and go back to a shared table
//! ([`FreeSlots::take_vacant_units`]) at the cost of a look at each unit with listed slots and of
//! its own slots, not a pass over the cache's.
//!
//! Invariants (all under the cache lock): a slot is on a list exactly when it says so
//! ([`Slot::is_listed`]); each unit's count is the length of its list; every unit in `others` has
//! at least one entry in `order` (entries of units no longer there are skipped when met).

use crate::slot::Slot;
use crate::table::SlotTable;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Slots in a unit: a shared table's run, which a cache claims and gives back whole.
pub(crate) const UNIT_SLOTS: u32 = 256;

/// One unit's listed slots: the first's index + 1 (0: none) and how many.
#[derive(Clone, Copy, Default, Debug)]
struct List {
    head: u32,
    count: u32,
}

/// See the module doc.
#[derive(Default)]
pub(crate) struct FreeSlots {
    /// The unit slots are taken from now, and its list (kept out of `others`).
    current_unit: u32,
    current: List,
    /// The other units with listed slots.
    others: HashMap<u32, List, BuildHasherDefault<UnitHasher>>,
    /// Units of `others`, the one to take next last; entries of units that have since been taken
    /// or given back are stale and skipped.
    order: Vec<u32>,
    /// Slots listed, over all units.
    len: usize,
}

impl FreeSlots {
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Puts the vacant slot `index` on its unit's list (lock holder only).
    pub(crate) fn push(&mut self, index: u32, slot: &Slot) {
        let unit = index / UNIT_SLOTS;
        let list = if unit == self.current_unit {
            &mut self.current
        } else {
            let list = self.others.entry(unit).or_default();
            if list.count == 0 {
                self.order.push(unit);
            }
            list
        };
        slot.set_free_link(list.head);
        list.head = index + 1;
        list.count += 1;
        self.len += 1;
    }

    /// Takes a listed slot off its list, from the current unit or, when that has none, from the
    /// unit that got its first listed slot last; `None` when no slot is listed.
    pub(crate) fn pop(&mut self, table: &SlotTable) -> Option<u32> {
        if self.current.count == 0 && !self.take_next_unit() {
            return None;
        }
        let index = self.current.head - 1;
        let slot = table.get(index).expect("a listed slot is accessible");
        self.current.head = slot.free_link();
        // Off the list, it must not say it is on one (see `Slot::is_listed`).
        slot.clear_free_link();
        self.current.count -= 1;
        self.len -= 1;
        Some(index)
    }

    /// Makes the next unit of `order` still in `others` current; false if there is none.
    fn take_next_unit(&mut self) -> bool {
        while let Some(unit) = self.order.pop() {
            if let Some(list) = self.others.remove(&unit) {
                self.current_unit = unit;
                self.current = list;
                return true;
            }
        }
        false
    }

    /// Takes every unit whose `UNIT_SLOTS` slots are all listed off the lists, clearing their
    /// links, and returns them sorted. A unit with a slot not listed (in use, on its way back
    /// through the epoch, retired for good, or never used) stays. Costs a look at each unit with
    /// a listed slot and a write to each slot that goes (and, when stale entries have piled up in
    /// `order`, its rebuilding from `others`, in no particular order).
    pub(crate) fn take_vacant_units(&mut self, table: &SlotTable) -> Vec<u32> {
        let mut units: Vec<u32> = (self.others.iter())
            .filter(|(_, list)| list.count == UNIT_SLOTS)
            .map(|(&unit, _)| unit)
            .collect();
        for &unit in &units {
            self.others.remove(&unit);
        }
        if self.current.count == UNIT_SLOTS {
            units.push(self.current_unit);
            self.current = List::default();
        }
        for &unit in &units {
            for index in unit * UNIT_SLOTS..(unit + 1) * UNIT_SLOTS {
                if let Some(slot) = table.get(index) {
                    debug_assert!(slot.is_listed());
                    slot.clear_free_link();
                }
            }
            self.len -= UNIT_SLOTS as usize;
        }
        // Stale entries would otherwise pile up in `order` as units go and come back.
        if self.order.len() > 2 * self.others.len() + 64 {
            self.order.clear();
            self.order.extend(self.others.keys());
        }
        units.sort_unstable();
        units
    }

    /// Every listed slot, sorted (walks of the lists, for checks; a list longer than its count is
    /// cut there, and then differs from the slots that say they are listed).
    pub(crate) fn listed_sorted(&self, table: &SlotTable) -> Vec<u32> {
        let mut on_lists = Vec::with_capacity(self.len);
        let current = (self.current.count > 0).then_some(&self.current);
        for list in current.into_iter().chain(self.others.values()) {
            let mut next = list.head;
            for _ in 0..list.count {
                let Some(slot) = next.checked_sub(1).and_then(|index| table.get(index)) else {
                    break;
                };
                on_lists.push(next - 1);
                next = slot.free_link();
            }
            debug_assert_eq!(next, 0, "a list ends after as many slots as it counts");
        }
        on_lists.sort_unstable();
        on_lists
    }
}

/// Hashes a unit number by one multiplication (Fibonacci hashing): units are small integers, and
/// a removal looks its slot's unit up.
#[derive(Default)]
struct UnitHasher(u64);

impl Hasher for UnitHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, unit: u32) {
        self.0 = u64::from(unit).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: u32 = UNIT_SLOTS;

    fn push_all(free: &mut FreeSlots, table: &SlotTable, indices: impl IntoIterator<Item = u32>) {
        for index in indices {
            free.push(index, table.get(index).expect("claimed"));
        }
    }

    #[test]
    fn slots_come_from_one_unit_until_it_runs_out() {
        let table = SlotTable::new(4 * UNIT as usize).expect("reservation");
        table.claim(4 * UNIT as usize).expect("claim");
        let mut free = FreeSlots::default();
        assert_eq!(free.pop(&table), None);
        // Unit 0 is current at first; units 2 and then 3 get their first slots later.
        push_all(
            &mut free,
            &table,
            [3, 2 * UNIT + 1, 5, 3 * UNIT + 7, 2 * UNIT + 2],
        );
        assert_eq!(
            free.listed_sorted(&table),
            [3, 5, 2 * UNIT + 1, 2 * UNIT + 2, 3 * UNIT + 7]
        );
        let popped: Vec<u32> = std::iter::from_fn(|| free.pop(&table)).collect();
        assert_eq!(popped, [5, 3, 3 * UNIT + 7, 2 * UNIT + 2, 2 * UNIT + 1]);
        assert!(free.is_empty());
        for index in popped {
            assert!(
                !table.get(index).expect("claimed").is_listed(),
                "off its list"
            );
        }
    }

    #[test]
    fn only_wholly_listed_units_are_taken_and_the_rest_stays_usable() {
        let table = SlotTable::new(8 * UNIT as usize).expect("reservation");
        table.claim(8 * UNIT as usize).expect("claim");
        let mut free = FreeSlots::default();
        // Units 1 and 5 whole (5 in reverse), unit 2 but its last slot, unit 0 (current) whole.
        push_all(&mut free, &table, UNIT..2 * UNIT);
        push_all(&mut free, &table, (5 * UNIT..6 * UNIT).rev());
        push_all(&mut free, &table, 2 * UNIT..3 * UNIT - 1);
        push_all(&mut free, &table, 0..UNIT);
        assert_eq!(free.take_vacant_units(&table), [0, 1, 5]);
        for index in (0..2 * UNIT).chain(5 * UNIT..6 * UNIT) {
            assert!(!table.get(index).expect("claimed").is_listed(), "unlinked");
        }
        assert_eq!(
            free.listed_sorted(&table),
            (2 * UNIT..3 * UNIT - 1).collect::<Vec<_>>()
        );
        assert_eq!(free.take_vacant_units(&table), Vec::<u32>::new());
        // A unit that went comes back (claimed again) and is listed and taken as before, past
        // its stale entry in the order.
        push_all(&mut free, &table, [UNIT + 9]);
        let mut popped: Vec<u32> = std::iter::from_fn(|| free.pop(&table)).collect();
        assert_eq!(
            popped.len(),
            UNIT as usize,
            "unit 2's slots and the one of unit 1"
        );
        popped.sort_unstable();
        assert_eq!(popped[0], UNIT + 9);
        assert_eq!(popped[1..], (2 * UNIT..3 * UNIT - 1).collect::<Vec<_>>());
        assert!(free.is_empty() && free.listed_sorted(&table).is_empty());
    }

    #[test]
    fn stale_order_entries_do_not_pile_up() {
        let table = SlotTable::new(2 * UNIT as usize).expect("reservation");
        table.claim(2 * UNIT as usize).expect("claim");
        let mut free = FreeSlots::default();
        for _ in 0..1000 {
            push_all(&mut free, &table, UNIT..2 * UNIT);
            assert_eq!(free.take_vacant_units(&table), [1]);
        }
        assert!(free.order.len() <= 64, "{} entries", free.order.len());
        assert!(free.is_empty());
    }
}
