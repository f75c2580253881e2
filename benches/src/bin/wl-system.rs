//! The workloads on glibc malloc, through `std::alloc::System` (see `benches::child`).

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() -> std::process::ExitCode {
    benches::child::child_main(benches::Peer::System)
}
