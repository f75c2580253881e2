//! Runs every workload on every allocator, interleaved, and prints tables of medians and of
//! ratios to mimalloc (see `benches::runner`). Build everything first:
//! `cargo build --release -p benches`, then `cargo run --release -p benches --bin bench-runner`.

fn main() -> std::process::ExitCode {
    benches::runner::runner_main()
}
