//! Detached processes tracked by pid files, so that `down` stops exactly what
//! `up` started, even from another invocation.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ProcessError + '_ {
    move |source| ProcessError::Io { path: path.to_path_buf(), source }
}

/// One long-running process of the stack: where its pid and log live.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub name: String,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
}

impl Tracked {
    pub fn new(name: &str, run_dir: &Path, logs_dir: &Path) -> Tracked {
        Tracked {
            name: name.to_owned(),
            pid_file: run_dir.join(format!("{name}.pid")),
            log_file: logs_dir.join(format!("{name}.log")),
        }
    }

    /// The pid recorded by the last start, if that process still runs.
    pub fn running_pid(&self) -> Option<Pid> {
        let text = fs::read_to_string(&self.pid_file).ok()?;
        let pid = Pid::from_raw(text.trim().parse().ok()?);
        is_alive(pid).then_some(pid)
    }

    /// Starts `command` in its own process group with stdout and stderr
    /// appended to the log file, and records its pid.
    pub fn spawn(&self, command: &mut Command) -> Result<Pid, ProcessError> {
        for dir in [self.pid_file.parent(), self.log_file.parent()].into_iter().flatten() {
            fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let log =
            OpenOptions::new().create(true).append(true).open(&self.log_file).map_err(io_error(&self.log_file))?;
        let log_err = log.try_clone().map_err(io_error(&self.log_file))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Own process group: a Ctrl-C in the terminal that ran `up` does not reach the stack.
            .process_group(0)
            .spawn()
            .map_err(|source| ProcessError::Spawn { program: format!("{:?}", command.get_program()), source })?;
        let pid = Pid::from_raw(child.id() as i32);
        fs::write(&self.pid_file, format!("{pid}\n")).map_err(io_error(&self.pid_file))?;
        Ok(pid)
    }

    /// Sends `signal`, waits up to `grace` for the exit, then kills. Removes the pid file.
    pub fn stop(&self, signal: Signal, grace: Duration) -> bool {
        let stopped = match self.running_pid() {
            Some(pid) => {
                let _ = kill(pid, signal);
                if !wait_for_exit(pid, grace) {
                    let _ = kill(pid, Signal::SIGKILL);
                    wait_for_exit(pid, Duration::from_secs(5));
                }
                true
            }
            None => false,
        };
        let _ = fs::remove_file(&self.pid_file);
        stopped
    }

    /// The last `max_lines` lines of the log, to explain a failed start.
    pub fn log_tail(&self, max_lines: usize) -> String {
        let Ok(mut file) = File::open(&self.log_file) else { return String::new() };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(max_lines)..].join("\n")
    }
}

/// True while `pid` runs. Reaps it first if it is our own exited child, so a
/// zombie does not count as alive.
pub fn is_alive(pid: Pid) -> bool {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => true,
        Ok(_) => false,
        // Not our child: ask the kernel, and treat a zombie as dead.
        Err(Errno::ECHILD) => {
            kill(pid, None).is_ok()
                && !fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
                    .unwrap_or(false)
        }
        Err(_) => false,
    }
}

fn wait_for_exit(pid: Pid, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !is_alive(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_track_and_stop_a_real_process() {
        let dir = std::env::temp_dir().join(format!("xtask-process-{}", std::process::id()));
        let tracked = Tracked::new("sleeper", &dir.join("run"), &dir.join("logs"));
        assert!(tracked.running_pid().is_none());
        let pid = tracked.spawn(Command::new("sh").args(["-c", "echo started; exec sleep 60"])).expect("spawn");
        assert_eq!(tracked.running_pid(), Some(pid));
        let deadline = Instant::now() + Duration::from_secs(10);
        while tracked.log_tail(5).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(tracked.stop(Signal::SIGTERM, Duration::from_secs(5)));
        assert!(tracked.running_pid().is_none());
        assert!(!tracked.pid_file.exists());
        assert_eq!(tracked.log_tail(5), "started");
        assert!(!tracked.stop(Signal::SIGTERM, Duration::from_secs(1)), "stopping twice is a no-op");
        let _ = fs::remove_dir_all(dir);
    }
}
