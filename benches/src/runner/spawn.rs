//! Running one workload binary: spawn it, wait with a deadline, and turn its output into a
//! [`Record`] or a description of what went wrong (exit status or signal, the end of stderr).

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::report::{parse_output, Record};

/// How often a running child is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Lines of a failed child's stderr quoted in its failure.
const STDERR_TAIL_LINES: usize = 6;

/// Runs `binary --workload NAME [--variant NAME] [--quick]` and returns its result line, or why
/// there is none.
pub(crate) fn run_child(
    binary: &Path,
    workload: &str,
    variant: Option<&str>,
    quick: bool,
    timeout: Duration,
) -> Result<Record, String> {
    let mut command = Command::new(binary);
    command.arg("--workload").arg(workload);
    if let Some(variant) = variant {
        command.arg("--variant").arg(variant);
    }
    if quick {
        command.arg("--quick");
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
    // Readers drain both pipes while the child runs, so a chatty child cannot block on a full pipe.
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());

    let status = wait_with_deadline(&mut child, timeout);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(format!(
            "timed out after {} s (killed){}",
            timeout.as_secs(),
            tail(&stderr)
        ));
    };
    match parse_output(&stdout) {
        Some(record) if status.success() => Ok(record),
        Some(record) => Err(format!(
            "{} with corrupt={}{}",
            describe(status),
            record.get("corrupt").map_or("?", String::as_str),
            tail(&stderr)
        )),
        None => Err(format!(
            "{} without a result line{}",
            describe(status),
            tail(&stderr)
        )),
    }
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            // A read error leaves what was read; the caller reports a missing result line.
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// The child's exit status, or `None` if it ran past `timeout` (it is then killed and reaped).
fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
            Ok(None) | Err(_) => {
                // Killing can only fail if it already exited; reaping below settles that.
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal} ({})", signal_name(signal)),
        (None, None) => format!("ended with {status}"),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGKILL => "SIGKILL",
        libc::SIGFPE => "SIGFPE",
        _ => "other",
    }
}

/// The last lines of `stderr`, prefixed for appending to a failure message.
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    if start == lines.len() {
        return String::new();
    }
    format!("; stderr: {}", lines[start..].join(" | "))
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(""), "");
        let text: String = (0..10).map(|i| format!("line {i}\n")).collect();
        assert_eq!(
            tail(&text),
            "; stderr: line 4 | line 5 | line 6 | line 7 | line 8 | line 9"
        );
    }
}
