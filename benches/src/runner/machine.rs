//! The header of a report: when and where it was run, and with what settings, read from the OS.

use crate::runner::args::Args;

/// A markdown paragraph naming the date, cores, kernel, transparent huge page mode and settings.
pub(crate) fn describe(args: &Args) -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!(
        "Run {}; {cores} cores; kernel {}; THP `{}`; {} repetitions{}.\n",
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        read_trimmed("/proc/sys/kernel/osrelease"),
        read_trimmed("/sys/kernel/mm/transparent_hugepage/enabled"),
        args.reps,
        if args.quick {
            ", quick (smoke) sizes"
        } else {
            ""
        },
    )
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|_| "?".to_owned(), |text| text.trim().to_owned())
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map_or_else(|| "?".to_owned(), |text| text.trim().to_owned())
}
