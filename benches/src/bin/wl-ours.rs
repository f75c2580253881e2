//! The workloads on alloc-core (see `benches::child`).

#[global_allocator]
static GLOBAL: alloc_core::SlabAlloc = alloc_core::SlabAlloc::new();

fn main() -> std::process::ExitCode {
    benches::child::child_main(benches::Peer::Ours)
}
