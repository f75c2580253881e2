//! The workloads on jemalloc (see `benches::child`).

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    benches::child::child_main(benches::Peer::Jemalloc)
}
