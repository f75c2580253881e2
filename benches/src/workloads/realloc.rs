//! `realloc`: growth of `Vec<u32>` and `String` by one push at a time.
//!
//! Sixty-four growing containers are active at once and each push goes to a random one, so
//! growth reallocations of neighbours interleave (an allocator cannot simply extend the last
//! block). Final sizes: 90 % up to 4 KiB, 10 % from 4 KiB to 4 MiB, spread evenly over the powers
//! of two. A container that reaches its final length is checked and dropped, and a new one takes
//! its place.

use std::time::Instant;

use crate::block::note_corrupt;
use crate::report::Report;
use crate::rng::Rng;
use crate::workloads::Ctx;

/// Containers growing at once.
const ACTIVE: usize = 64;
/// Pushes in a full run.
const PUSHES: usize = 40_000_000;
/// Largest final size of a container in bytes.
const MAX_FINAL_BYTES: usize = 4 << 20;

/// A container being grown, with the length at which it is done.
enum Growing {
    Words(Vec<u32>, usize),
    Text(String, usize),
}

impl Growing {
    fn new(rng: &mut Rng) -> Self {
        let final_bytes = if rng.percent(90) {
            rng.log_uniform(1, 4096)
        } else {
            rng.log_uniform(4096, MAX_FINAL_BYTES)
        };
        if rng.percent(50) {
            Growing::Words(Vec::new(), (final_bytes / 4).max(1))
        } else {
            Growing::Text(String::new(), final_bytes)
        }
    }

    /// Pushes one element; true when the container has reached its final length.
    #[inline]
    fn push(&mut self) -> bool {
        match self {
            Growing::Words(words, target) => {
                words.push(words.len() as u32);
                words.len() == *target
            }
            Growing::Text(text, target) => {
                text.push(letter(text.len()));
                text.len() == *target
            }
        }
    }

    /// Whether the content is what the pushes wrote (first, middle and last element).
    fn intact(&self) -> bool {
        match self {
            Growing::Words(words, _) => [0, words.len() / 2, words.len() - 1]
                .into_iter()
                .all(|i| words[i] == i as u32),
            Growing::Text(text, _) => [0, text.len() / 2, text.len() - 1]
                .into_iter()
                .all(|i| text.as_bytes()[i] == letter(i) as u8),
        }
    }
}

fn letter(i: usize) -> char {
    char::from(b'a' + (i % 26) as u8)
}

pub(crate) fn run(ctx: &Ctx, report: &mut Report) {
    let pushes = ctx.scaled(PUSHES);
    let mut rng = Rng::new(0x2EA1);
    let mut active: Vec<Growing> = (0..ACTIVE).map(|_| Growing::new(&mut rng)).collect();
    let mut finished = 0usize;

    let start = Instant::now();
    for _ in 0..pushes {
        let slot = rng.below(ACTIVE);
        if active[slot].push() {
            let next = Growing::new(&mut rng);
            let done = std::mem::replace(&mut active[slot], next);
            if !done.intact() {
                note_corrupt(format_args!("container {finished} after growth"));
            }
            finished += 1;
        }
    }
    drop(active);
    report.set("secs", start.elapsed().as_secs_f64());
    report.set("ops", pushes);
    report.set("finished", finished);

    ctx.after_free(report);
    ctx.release(report);
}
