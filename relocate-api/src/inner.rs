//! A cache's state under its lock: its movable heap, the slots it has claimed from the table and
//! how vacant ones are found again (free lists, home slots parked for their block's next object,
//! runs given back to a shared table), and its running totals.

use crate::free::{FreeSlots, UNIT_SLOTS};
use crate::home::Homes;
use crate::slot::Slot;
use crate::table::SlotTable;
use alloc_core::movable::MovableHeap;
use std::ops::Range;

/// Spare slots a cache with homes claims at a time (see `home`): objects take them only when their
/// block's home slot is not free. Also the slack in the bound on slots used (`may_touch_more`).
pub(crate) const SPARE_CLAIM_SLOTS: usize = 256;

pub(crate) struct Inner {
    pub(crate) heap: MovableHeap,
    /// The vacant slots ready for reuse (see `free`).
    pub(crate) free: FreeSlots,
    /// The runs of table slots this cache has claimed and not given back, in the order claimed, a
    /// run that continues the last merged into it: every slot it uses lies in them (the table may be
    /// shared, see `table`).
    pub(crate) claimed: Vec<Range<u32>>,
    /// The claimed slots never used yet (the end of the last run).
    pub(crate) fresh: Range<u32>,
    /// For a cache with homes (see `home`): slots at or above this index are spares, claimed from
    /// the top of the table down; below it, home slots. 0 for a cache without homes, whose slots are
    /// all claimed runs (so every slot that comes back is listed in `free`).
    pub(crate) spare_floor: u32,
    /// The units whose home slots have been used, sorted (with `claimed`, where `for_each` looks).
    pub(crate) home_units: Vec<u32>,
    /// With homes: slots ever used (each took a page's worth of table the first time, so this bounds
    /// the table's size; see `may_touch_more`).
    pub(crate) touched: usize,
    /// With homes: parked slots (see `release_slot`).
    pub(crate) parked: usize,
    /// Objects inserted, less those taken (see [`RelocCache::live`]).
    pub(crate) inserted: usize,
    /// Slots listed in `free` as they came back so far, and how many had been when the cache last
    /// gave vacant runs back (see `give_back_vacant_slots`).
    pub(crate) listed: usize,
    pub(crate) listed_at_scan: usize,
    /// The arena group (the cache's tag) its heap joins once its live objects fill an arena (0:
    /// joined). Until then its slabs share arenas with other small caches' (group 0); from then on
    /// they go to arenas of its own (a byte-blob cache's classes share its tag, and so its
    /// arenas), so that evicting its oldest arena evicts its oldest objects and frees 2 MiB. Live
    /// objects, not slabs: slabs emptied by moves hold their old copies until the epoch passes, so
    /// an evacuation would count both. (An arena per cache from the start made 1,000 small caches
    /// take 1.7-3.6 times the memory, and their creation 9 times slower.)
    pub(crate) arena_group: u32,
    /// Whether the cache decides that itself (a byte-blob class's `BlobCache` decides for all its
    /// classes: the insert tells it a check is due), and the mask of `inserted` at whose zeros a
    /// check is due (see `join_check_mask`).
    pub(crate) joins_itself: bool,
    pub(crate) join_check_mask: usize,
    pub(crate) counters: Counters,
}

impl Inner {
    /// A slot never used before (or, with homes, a free home slot the spares reached), claiming
    /// `claim_slots` more when none is left: from `table` for a cache without homes, from the top of
    /// the table down for one with homes (see `home`).
    pub(crate) fn fresh_slot(
        &mut self,
        table: &SlotTable,
        claim_slots: usize,
        homes: bool,
    ) -> Option<u32> {
        loop {
            if self.fresh.is_empty() {
                let run = if homes {
                    let top = self.spare_floor;
                    self.spare_floor =
                        top.checked_sub(1)? / claim_slots as u32 * claim_slots as u32;
                    self.spare_floor..top
                } else {
                    table.claim(claim_slots)?
                };
                match self.claimed.last_mut() {
                    Some(last) if last.end == run.start => last.end = run.end,
                    Some(last) if last.start == run.end => last.start = run.start,
                    _ => self.claimed.push(run.clone()),
                }
                self.fresh = run;
            }
            let index = self.fresh.start;
            self.fresh.start += 1;
            if !homes {
                return Some(index);
            }
            // A home slot the spares reached may be in use: it is linked when it comes back.
            let slot = table.get_or_commit(index)?;
            if slot.is_free_home() {
                self.took_home_slot(slot.is_fresh());
                return Some(index);
            }
        }
    }

    /// Puts the heap in `arena_group`, if it is not in it yet.
    pub(crate) fn join_arena_group(&mut self) {
        if self.arena_group != 0 {
            self.heap.set_arena_group(self.arena_group);
            self.arena_group = 0;
        }
    }

    /// Counts a free home slot, `fresh` or parked, as taken.
    pub(crate) fn took_home_slot(&mut self, fresh: bool) {
        if fresh {
            self.touched += 1;
        } else {
            self.parked -= 1;
        }
    }

    /// Whether a cache with homes may use a slot it never used (a block's fresh home slot) rather
    /// than a vacant one: while it has used fewer than one and a half times as many slots as it
    /// holds objects, plus a run. A cache whose objects wander over the region (slabs emptied and
    /// made again elsewhere) would otherwise use a home slot in every unit it ever had, and its
    /// table would grow with the region rather than with its objects. Past the bound, new objects
    /// take vacant slots, away from home.
    /// `live()` (which sums a striped counter) is asked only when `touched` is past the run: never
    /// for a cache without homes, which touches no home slot.
    pub(crate) fn may_touch_more(&self, live: impl FnOnce() -> usize) -> bool {
        self.touched < SPARE_CLAIM_SLOTS || {
            let live = live();
            self.touched < live + live / 2 + SPARE_CLAIM_SLOTS
        }
    }

    /// Lists every parked home slot in `free`, when a cache at its bound (`may_touch_more`)
    /// needs a vacant slot and a quarter of the slots it used are parked (so the scan, of every
    /// used unit's slots, pays for itself): parked slots whose blocks are gone or taken would
    /// otherwise wait for nothing.
    pub(crate) fn list_parked_slots(&mut self, table: &SlotTable, homes: &Homes) {
        if self.parked < self.touched / 4 {
            return;
        }
        for &unit in &self.home_units {
            for index in homes.unit_slots(unit) {
                if let Some(slot) = table.get(index).filter(|slot| slot.is_parked()) {
                    self.free.push(index, slot);
                }
            }
        }
        self.parked = 0;
    }

    /// Takes a vacant slot back: parks a home slot for its block's next object, lists any other in
    /// `free`, and only counts one the removal retired, its generations spent (it is never used
    /// again, so no old handle can ever name a new object).
    pub(crate) fn release_slot(&mut self, index: u32, slot: &Slot) {
        if slot.is_retired() {
            self.counters.retired_slots += 1;
        } else if index < self.spare_floor {
            slot.park();
            self.parked += 1;
        } else {
            self.free.push(index, slot);
            self.listed += 1;
        }
    }

    /// Notes that a home slot of `unit` holds an object, for `slot_ranges`.
    pub(crate) fn note_home_unit(&mut self, unit: u32) {
        if self.home_units.last() == Some(&unit) {
            return;
        }
        if let Err(at) = self.home_units.binary_search(&unit) {
            self.home_units.insert(at, unit);
        }
    }

    /// Every slot that may hold an object: the claimed runs and the home slots of the units used,
    /// each once, in index order.
    pub(crate) fn slot_ranges(&self, homes: &Homes) -> Vec<Range<u32>> {
        let mut ranges: Vec<Range<u32>> = (self.home_units.iter())
            .map(|&unit| homes.unit_slots(unit))
            .chain(self.claimed.iter().cloned())
            .collect();
        ranges.sort_unstable_by_key(|r| r.start);
        let mut merged: Vec<Range<u32>> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                _ => merged.push(range),
            }
        }
        merged
    }

    /// Every slot index this cache has claimed (for a cache without homes: all its slots).
    pub(crate) fn claimed_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.claimed.iter().flat_map(Range::clone)
    }

    /// Gives back to `table` every claimed run of slots (`UNIT_SLOTS` of them, aligned, as a shared
    /// table's runs are) that lies wholly on the free lists, and returns how many slots that was.
    ///
    /// Only listed slots count: a vacant slot still waiting in a batch or on `retired` will be
    /// listed here later, so its run stays; a retired-for-good slot is never listed, so a run with
    /// one stays too (its generation must not be handed out again); and so does the run with the
    /// unused end of the last claim (`fresh`, never listed). The free lists are kept per run, so
    /// this costs a look at each run with a listed slot and a write to each slot that goes, not a
    /// pass over the claimed slots (which took 10.5-12.4 ms for a table of 2.9 million slots in
    /// `benches`' `blob-slots`, against 0.12-0.16 ms now).
    pub(crate) fn give_back_vacant_runs(&mut self, table: &SlotTable) -> usize {
        debug_assert!(
            {
                let listed = |index: &u32| table.get(*index).is_some_and(Slot::is_listed);
                let mut listed_claimed: Vec<u32> = self.claimed_slots().filter(listed).collect();
                listed_claimed.sort_unstable();
                listed_claimed == self.free.listed_sorted(table)
            },
            "the free lists are the claimed slots that say they are listed"
        );
        let going = self.free.take_vacant_units(table);
        if going.is_empty() {
            return 0;
        }
        self.claimed = (self.claimed.iter())
            .flat_map(|c| split_out(c.clone(), UNIT_SLOTS, &going))
            .collect();
        // Highest first: the table hands out the last given first, so a claimer gets them in order
        // and merges adjacent ones.
        for &unit in going.iter().rev() {
            table.give_back(unit * UNIT_SLOTS..(unit + 1) * UNIT_SLOTS);
        }
        going.len() * UNIT_SLOTS as usize
    }
}

/// `range` less the runs `units` (of `run` slots each, sorted) that lie in it.
pub(crate) fn split_out(range: Range<u32>, run: u32, units: &[u32]) -> Vec<Range<u32>> {
    let mut pieces = Vec::new();
    let mut start = range.start;
    for &unit in units {
        let gone = unit * run..(unit + 1) * run;
        if gone.start >= range.start && gone.end <= range.end {
            if start < gone.start {
                pieces.push(start..gone.start);
            }
            start = gone.end;
        }
    }
    if start < range.end {
        pieces.push(start..range.end);
    }
    pieces
}

/// Running totals kept under the cache lock.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub moved_objects: u64,
    pub moved_bytes: u64,
    pub refused_moves: u64,
    pub callback_panics: u64,
    pub evicted_objects: u64,
    pub released_bytes: u64,
    pub compaction_nanos: u64,
    /// Slots retired for good because their generation would have wrapped (see [`MAX_OBJECTS`](crate::MAX_OBJECTS)):
    /// each keeps 8 bytes of handle table.
    pub retired_slots: u64,
    /// Slots handed back to a table shared with other caches (a [`crate::BlobCache`]'s classes), for
    /// them to reuse.
    pub returned_slots: u64,
    /// Removed (or replaced) values whose drop panicked when the epoch let them go. The drop runs
    /// in whichever thread pins or flushes then, so its panic is caught there, counted here, and the
    /// value's block freed all the same; the panic hook has reported it.
    pub drop_panics: u64,
}

/// Sums every counter (destructured, so that a counter added later cannot be left out).
impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, other: Counters) {
        let Counters {
            moved_objects,
            moved_bytes,
            refused_moves,
            callback_panics,
            evicted_objects,
            released_bytes,
            compaction_nanos,
            retired_slots,
            returned_slots,
            drop_panics,
        } = other;
        self.moved_objects += moved_objects;
        self.moved_bytes += moved_bytes;
        self.refused_moves += refused_moves;
        self.callback_panics += callback_panics;
        self.evicted_objects += evicted_objects;
        self.released_bytes += released_bytes;
        self.compaction_nanos += compaction_nanos;
        self.retired_slots += retired_slots;
        self.returned_slots += returned_slots;
        self.drop_panics += drop_panics;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_out_cuts_runs_out_of_ranges() {
        assert_eq!(split_out(0..1024, 256, &[1, 2]), vec![0..256, 768..1024]);
        assert_eq!(split_out(0..512, 256, &[0, 1]), Vec::<Range<u32>>::new());
        assert_eq!(
            split_out(256..512, 256, &[0, 3]),
            vec![256..512],
            "not in it"
        );
        assert_eq!(split_out(0..768, 256, &[2]), vec![0..512]);
    }
}
