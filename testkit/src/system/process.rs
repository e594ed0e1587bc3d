//! A child process that a fixture owns. It runs in a process group of its own, so that
//! dropping it ends the process *and* whatever it started (nginx's workers), even when the
//! process itself was killed first and its children would otherwise live on as orphans.
//! Signals go through `nix`, not through a `kill` binary.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// A running child in its own process group; stopped (group and all) on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    /// What `Drop` sends first: SIGTERM lets nginx's master stop its workers; others get
    /// SIGKILL straight away.
    stop_with: Signal,
    exited: Option<ExitStatus>,
}

impl Process {
    /// Spawns `command` in a new process group. Its own group keeps the terminal's Ctrl-C
    /// from reaching it, so it is also told to die with the test process
    /// (`PR_SET_PDEATHSIG`): an interrupted test run leaves no server behind.
    pub fn spawn(command: &mut Command, stop_with: Signal) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        // SAFETY: prctl is async-signal-safe and touches nothing but the new process.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = command.spawn()?;
        Ok(Self {
            child,
            stop_with,
            exited: None,
        })
    }

    /// The process id (also its process group's id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the process (not its group).
    pub fn signal(&self, signal: Signal) {
        if self.exited.is_none() {
            kill(Pid::from_raw(self.pid() as i32), signal)
                .unwrap_or_else(|err| panic!("sending {signal} to {}: {err}", self.pid()));
        }
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("polling a child process");
        }
        self.exited
    }

    /// Waits for the process to exit; panics if it still runs after `limit`.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "process {} still runs after {limit:?}",
                self.pid()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends the whole process group now: the polite signal, a short wait, then SIGKILL.
    pub fn stop(&mut self) {
        let group = Pid::from_raw(self.pid() as i32);
        // A paused process ignores everything but SIGKILL until continued.
        let _ = killpg(group, Signal::SIGCONT);
        if self.try_wait().is_none() {
            let _ = killpg(group, self.stop_with);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.try_wait().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Whatever is left of the group: the process, or children it left behind.
        let _ = killpg(group, Signal::SIGKILL);
        if self.exited.is_none() {
            self.exited = self.child.wait().ok();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}
