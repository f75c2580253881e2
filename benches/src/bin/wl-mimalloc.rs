//! The workloads on mimalloc (see `benches::child`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    benches::child::child_main(benches::Peer::Mimalloc)
}
