//! What may be moved, and how: the type-level contract and the per-cache relocation callbacks.

use crate::handle::Handle;
#[cfg(doc)]
use crate::CacheError;

/// Types whose bytes may be copied to a new address while shared references to the old copy exist.
///
/// A compaction copies an object and publishes the copy while readers may still be reading the old
/// one through `&T`. That is only sound if nothing can change the old copy through `&T`: otherwise a
/// reader could write to the old copy after it was copied, and the write would be lost.
///
/// # Safety
/// - No interior mutability is reachable from `&T` (no `Cell`, `RefCell`, atomics, `Mutex`, …, directly
///   or behind pointers the type owns), so the bytes of a `T` do not change while it is shared.
/// - A bitwise copy of a `T` is a valid `T` at the new address, the old copy being abandoned without
///   drop (no self-references; heap data the type owns is shared by the two copies until the old one is
///   forgotten).
///
/// For a struct or enum whose fields all qualify, `#[derive(Relocatable)]` implements it without
/// `unsafe` (a field that does not qualify is a compile error there):
///
/// ```
/// use relocate_api::{RelocCache, Relocatable};
///
/// #[derive(Relocatable)]
/// struct Session {
///     user: String,
///     scores: Vec<(u32, f64)>,
///     expires: Option<u64>,
/// }
///
/// let cache: RelocCache<Session> = RelocCache::new().unwrap();
/// let session = Session { user: "ada".into(), scores: vec![(1, 2.5)], expires: None };
/// let handle = cache.insert(session).map_err(|(_, e)| e).unwrap();
/// let guard = cache.reader().pin();
/// assert_eq!(cache.get(handle, &guard).unwrap().user, "ada");
/// ```
///
/// ```compile_fail,E0277
/// #[derive(relocate_api::Relocatable)]
/// struct Counter {
///     hits: std::cell::Cell<u64>, // interior mutability: refused
/// }
/// ```
///
/// ```compile_fail,E0277
/// #[derive(relocate_api::Relocatable)]
/// struct Shared<T> {
///     value: std::sync::Mutex<T>, // refused whatever `T` is
/// }
/// ```
///
/// ```compile_fail,E0277
/// #[derive(relocate_api::Relocatable)]
/// enum Link {
///     End,
///     Next(*const Link), // a raw pointer may point into the object itself: refused
/// }
/// ```
///
/// ```compile_fail,E0793
/// #[derive(relocate_api::Relocatable)]
/// #[repr(packed)]
/// struct Packed {
///     tag: u8,
///     value: u32, // a reference to a packed field is not allowed: implement the trait by hand
/// }
/// ```
///
/// ```compile_fail
/// #[derive(relocate_api::Relocatable)]
/// union Either {
///     int: u64,
///     float: f64,
/// }
/// ```
///
/// Types that do not qualify can still live in a cache: they are reached with
/// [`crate::RelocCache::with_pinned`], which excludes moves while the closure runs (moves only:
/// see there for updates).
pub unsafe trait Relocatable {}

macro_rules! relocatable {
    ($($t:ty),*) => { $(
        // SAFETY: plain values without interior mutability or self-references.
        unsafe impl Relocatable for $t {}
    )* };
}
relocatable!(
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    bool,
    char,
    ()
);
// SAFETY: owned heap data without interior mutability; a bitwise copy shares the buffer and the old copy
// is forgotten.
unsafe impl Relocatable for String {}
// SAFETY: as for `String`, provided the elements qualify.
unsafe impl<T: Relocatable> Relocatable for Vec<T> {}
// SAFETY: as for `String`, provided the pointee qualifies.
unsafe impl<T: Relocatable + ?Sized> Relocatable for Box<T> {}
// SAFETY: an array of qualifying elements qualifies.
unsafe impl<T: Relocatable, const N: usize> Relocatable for [T; N] {}
// SAFETY: `Option` adds no interior mutability.
unsafe impl<T: Relocatable> Relocatable for Option<T> {}
// SAFETY: a slice of qualifying elements qualifies (behind a `Box`, which owns it).
unsafe impl<T: Relocatable> Relocatable for [T] {}
// SAFETY: plain bytes (behind a `Box`, which owns them).
unsafe impl Relocatable for str {}
// SAFETY: no data at all.
unsafe impl<T: ?Sized> Relocatable for std::marker::PhantomData<T> {}

macro_rules! relocatable_tuples {
    ($(($($t:ident),+)),*) => { $(
        // SAFETY: tuples of qualifying elements qualify.
        unsafe impl<$($t: Relocatable),+> Relocatable for ($($t,)+) {}
    )* };
}
relocatable_tuples!(
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F)
);

/// The most objects one [`Relocator::batch`] moves.
pub const MOVE_BATCH: usize = 64;

/// The result of asking a callback to move an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// The object may move; `migrate` will be called and must then succeed.
    Ready,
    /// The object is busy; the compactor leaves it where it is and counts a refused move.
    Busy,
}

/// How a cache moves its objects. The default, [`BitwiseMove`], copies bytes.
///
/// A move is two-phase, as in the kernel's isolate/migrate and zsmalloc's pin bit:
/// 1. [`isolate`](Self::isolate) is called with the object marked *moving*: no writer, remover or pin
///    can reach it until the move ends. It may refuse (`Busy`) and then nothing happens.
/// 2. [`migrate`](Self::migrate) receives the old address and uninitialised memory for the new copy.
///    It must leave a valid `T` at `new` (typically a bitwise copy) and fix every pointer that other
///    structures hold to the object, or that the object holds to itself. It cannot refuse.
///
/// Moves come in batches ([`batch`](Self::batch)) of up to [`MOVE_BATCH`] objects of one slab, so that
/// what every move needs (the lock of the structure whose pointers `migrate` fixes) can be taken once
/// per batch, as the kernel's migration takes its locks for a batch of pages.
///
/// What a callback may do: read the object and other structures, update pointers, take its own locks,
/// read the cache (`get`, `get_many`, views), remove other objects.
/// What it may not do: keep the `new` pointer beyond the publication rules of its own structures, or
/// make a call into the same cache that would wait for the compaction in progress (which holds the
/// cache's lock and has the object marked moving). The cache detects those calls and answers them
/// at once instead of deadlocking:
/// - `insert`, `update`, `compact`, `evacuate_*`, `reclaim*` return [`CacheError::Reentrant`]
///   (`update` without calling its closure); `release_*_arenas` release nothing and return 0;
/// - `remove`, `remove_with`, `remove_many` and `with_pinned` of the object being moved, a removal
///   of an object another thread is updating (whose closure may be waiting for the lock this thread
///   holds), and `len`, `is_empty`, `stats` and `for_each`, which have no error to return, panic
///   (so the move is abandoned, see below); other removals and pins work.
///
/// The callbacks of one cache may compact another cache, whose callbacks may call back into the
/// first: the caches whose callbacks a thread is running are all refused.
///
/// The compactor holds the cache's lock while callbacks run, so a thread that holds a lock a callback
/// takes must not call into the cache meanwhile (it would wait for the compactor, which waits for it).
/// Only a thread's own nesting is detected: callbacks of cache A that call into cache B while
/// another thread compacts B with callbacks that call into A wait for each other's locks, an
/// ordinary lock-order cycle (make such calls go one way only, e.g. only A's callbacks into B).
/// Nor may a callback stop or drop a [`crate::Compactor`] of its own cache: stopping waits for the
/// compactor's thread, which may be waiting for the lock the callback's compaction holds.
/// If a callback panics, the move is abandoned: the object stays at its old address, the new memory is
/// freed (without dropping it), and the panic is counted, not propagated. A `migrate` that panics after
/// changing outside pointers leaves them as it left them; keep `migrate` free of panics.
///
/// # Safety
/// The cache publishes whatever `migrate` leaves at `new` as the object, which moves there: the
/// cache never drops the `T` at `old`. So an implementation must:
/// - whenever `migrate` returns, have left a valid `T` at `new` that the cache may read, hand out as
///   `&T`, move again and drop;
/// - not drop or write to the `T` at `old`, nor keep a pointer to it to use after the move: readers
///   may read it until the epoch passes, and then its block is freed and reused;
/// - if `migrate` unwinds, leave nothing pointing at `new`: the cache then frees that block without
///   dropping what is in it (a `T` written there is leaked) and keeps the object at `old`.
///
/// The default methods meet this.
///
/// So a policy is written with `unsafe impl` (or made with [`FnRelocator::new`], which is unsafe);
/// safe code cannot make one whose `migrate` leaves `new` uninitialised:
///
/// ```compile_fail,E0200
/// struct Forgets;
/// impl relocate_api::Relocator<String> for Forgets {
///     unsafe fn migrate(&self, _: *const String, _: *mut String, _: relocate_api::Handle<String>) {}
/// }
/// ```
///
/// ```compile_fail,E0451
/// use relocate_api::{FnRelocator, Handle, Isolation};
/// let forgets = FnRelocator {
///     isolate: |_: &String, _: Handle<String>| Isolation::Ready,
///     migrate: |_: *const String, _: *mut String, _: Handle<String>| {},
/// };
/// ```
pub unsafe trait Relocator<T>: Send + Sync {
    /// Runs one batch of moves: `moves` makes the `isolate` and `migrate` calls of up to
    /// [`MOVE_BATCH`] objects, one object after another, on this thread. The default just runs it. A
    /// relocator whose moves all need one lock can take it here, hold it while `moves` runs, and so
    /// take it once per batch rather than once per move.
    ///
    /// If a callback panics inside `moves`, the panic unwinds through `batch` (a lock guard held
    /// here is dropped), that one move is abandoned, and the next batch starts with the next object.
    /// (A `batch` that catches the panic may run `moves` again: the interrupted move is abandoned
    /// first, and the moves go on with the next object.)
    /// If `batch` returns without running `moves` (or panics before), the batch's objects count as
    /// refused moves and stay where they are.
    fn batch(&self, moves: &mut dyn FnMut()) {
        moves();
    }

    /// Phase 1: may the object move now?
    fn isolate(&self, _object: &T, _handle: Handle<T>) -> Isolation {
        Isolation::Ready
    }

    /// Phase 2: move the object from `old` to `new`.
    ///
    /// # Safety
    /// - `old` points to a live `T` that stays readable (and unchanged, for `Relocatable` types) until
    ///   every reader that may hold it has unpinned; it is never dropped.
    /// - `new` is valid for writes of one `T`, aligned, and uninitialised.
    unsafe fn migrate(&self, old: *const T, new: *mut T, _handle: Handle<T>) {
        // SAFETY: the caller's contract: distinct, valid, aligned regions of one `T` each.
        unsafe { core::ptr::copy_nonoverlapping(old, new, 1) };
    }
}

/// The default policy: a move is a bitwise copy.
#[derive(Clone, Copy, Debug, Default)]
pub struct BitwiseMove;

// SAFETY: the default methods: `migrate` copies the valid `T` at `old` to `new` and leaves `old` as it
// was.
unsafe impl<T> Relocator<T> for BitwiseMove {}

/// A policy built from closures (for callbacks that fix outside pointers): `isolate(object, handle)`
/// and `migrate(old, new, handle)` are [`Relocator`]'s methods.
pub struct FnRelocator<I, M> {
    isolate: I,
    migrate: M,
}

impl<I, M> FnRelocator<I, M> {
    /// A policy that calls `isolate` and `migrate`.
    ///
    /// # Safety
    /// `migrate` must meet [`Relocator`]'s contract: whenever it returns, a valid `T` is at `new`,
    /// and the `T` at `old` was neither dropped nor written.
    pub unsafe fn new<T>(isolate: I, migrate: M) -> Self
    where
        I: Fn(&T, Handle<T>) -> Isolation + Send + Sync,
        M: Fn(*const T, *mut T, Handle<T>) + Send + Sync,
    {
        Self { isolate, migrate }
    }
}

// SAFETY: `FnRelocator::new`'s caller promised that `migrate` meets the contract.
unsafe impl<T, I, M> Relocator<T> for FnRelocator<I, M>
where
    I: Fn(&T, Handle<T>) -> Isolation + Send + Sync,
    M: Fn(*const T, *mut T, Handle<T>) + Send + Sync,
{
    fn isolate(&self, object: &T, handle: Handle<T>) -> Isolation {
        (self.isolate)(object, handle)
    }

    unsafe fn migrate(&self, old: *const T, new: *mut T, handle: Handle<T>) {
        (self.migrate)(old, new, handle)
    }
}
