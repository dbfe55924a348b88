//! Finding the log files a process writes: with `--pid` and no `logs:`,
//! sidekick tails the regular files the target holds open for writing
//! (`/proc/PID/fd` links, with the access mode from `/proc/PID/fdinfo`).

use std::path::PathBuf;

/// Regular files `pid` has open for writing (or reading and writing),
/// sorted, without duplicates. Devices, pipes, sockets, deleted files and
/// files under `/proc`, `/sys` and `/dev` are left out.
///
/// Another user's process needs `CAP_SYS_PTRACE` (or running as that user):
/// the error then names the file that could not be read and the capability.
pub fn open_for_writing(pid: u32) -> std::io::Result<Vec<PathBuf>> {
    let denied = |what: String, e: std::io::Error| {
        std::io::Error::new(
            e.kind(),
            format!("cannot read {what}: {e} (another user's process: sidekick needs CAP_SYS_PTRACE, or to run as that user)"),
        )
    };
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => denied(dir.clone(), e),
        _ => e,
    })?;
    let own = own_output();
    let mut out = Vec::new();
    let mut link_denied = None;
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let target = match std::fs::read_link(entry.path()) {
            Ok(target) => target,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::PermissionDenied && link_denied.is_none() {
                    link_denied = Some(denied(entry.path().display().to_string(), e));
                }
                continue;
            }
        };
        let fd = entry.file_name();
        let Some(fd) = fd.to_str() else { continue };
        let flags = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
            .ok()
            .and_then(|s| fdinfo_flags(&s));
        let Some(flags) = flags else { continue };
        if !writes(flags) || !is_log_candidate(&target) {
            continue;
        }
        if std::fs::metadata(&target).is_ok_and(|m| m.is_file() && !own.contains(&id(&m))) {
            out.push(target);
        }
    }
    if let (true, Some(e)) = (out.is_empty(), link_denied) {
        return Err(e);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// The files sidekick's own stdout and stderr go to: a target launched by
/// sidekick (or sharing its terminal redirection) writes there too, and
/// sidekick must not ship its own log.
fn own_output() -> Vec<(u64, u64)> {
    ["/proc/self/fd/1", "/proc/self/fd/2"]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| id(&m))
        .collect()
}

/// The octal `flags:` field of an fdinfo file.
fn fdinfo_flags(fdinfo: &str) -> Option<u32> {
    let v = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))?
        .trim();
    u32::from_str_radix(v, 8).ok()
}

/// O_WRONLY or O_RDWR.
fn writes(flags: u32) -> bool {
    flags & 0o3 != 0
}

fn is_log_candidate(path: &std::path::Path) -> bool {
    let s = path.to_string_lossy();
    s.starts_with('/')
        && !s.ends_with(" (deleted)")
        && !["/proc/", "/sys/", "/dev/"]
            .iter()
            .any(|p| s.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn parses_fdinfo_flags() {
        assert_eq!(
            fdinfo_flags("pos:\t0\nflags:\t0102001\nmnt_id:\t25\n"),
            Some(0o102001)
        );
        assert!(writes(0o102001));
        assert!(!writes(0o100000));
        assert_eq!(fdinfo_flags("pos: 0\n"), None);
    }

    #[test]
    fn finds_the_log_a_running_process_writes_but_not_what_it_reads() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let input = dir.path().join("input.txt");
        std::fs::write(&input, "x").unwrap();
        let script = format!(
            "exec 3>>{} 4<{}; echo ready >&3; sleep 30",
            log.display(),
            input.display()
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            // Not the test runner's: CI may send its output to a file.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut found = Vec::new();
        while std::time::Instant::now() < deadline {
            found = open_for_writing(child.id()).unwrap();
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, vec![log]);
    }
}
