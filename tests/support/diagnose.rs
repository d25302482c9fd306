//! What a failure message says about a server process that did not come up: its state and
//! each thread's (from /proc), the kernel stacks where readable, a user-space backtrace of every
//! thread when gdb is installed, and the free space where its data lives. A start that hangs
//! on a machine the author cannot log into (CI) is then explained by its own report.

use std::path::Path;
use std::process::Command;

/// A multi-line report on process `pid` whose data dir is `data_dir`.
pub fn process_report(pid: u32, data_dir: &Path) -> String {
    let mut out = String::new();
    let proc_dir = format!("/proc/{pid}");
    let status = std::fs::read_to_string(format!("{proc_dir}/status")).unwrap_or_default();
    for line in status.lines().filter(|l| {
        ["State:", "Threads:", "VmRSS:", "voluntary_ctxt_switches:"]
            .iter()
            .any(|p| l.starts_with(p))
    }) {
        out.push_str(&format!("  {line}\n"));
    }
    if let Ok(tasks) = std::fs::read_dir(format!("{proc_dir}/task")) {
        for task in tasks.flatten() {
            let dir = task.path();
            let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            let stat = read("stat");
            // The state is the field after the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?")
                .to_string();
            out.push_str(&format!(
                "  thread {} {:?} state {state} wchan {}\n",
                task.file_name().to_string_lossy(),
                read("comm").trim(),
                read("wchan").trim(),
            ));
            for frame in read("stack").lines().take(6) {
                out.push_str(&format!("      {frame}\n"));
            }
        }
    }
    out.push_str(&command_output(
        "df",
        &[
            "-h",
            &data_dir.parent().unwrap_or(data_dir).to_string_lossy(),
        ],
    ));
    out.push_str(&command_output(
        "timeout",
        &[
            "30",
            "gdb",
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 12",
        ],
    ));
    out
}

/// What a diagnostic command printed (nothing when it is not installed or fails to start).
fn command_output(program: &str, args: &[&str]) -> String {
    let Ok(output) = Command::new(program).args(args).output() else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&output.stdout);
    // gdb's backtraces are long; the frames that explain a hang are near each thread's top.
    let lines: Vec<&str> = text.lines().take(400).collect();
    format!("  $ {program} {}\n{}\n", args.join(" "), lines.join("\n"))
}
