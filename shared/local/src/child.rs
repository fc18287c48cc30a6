//! Child processes that never outlive whoever started them: node processes of the local
//! scheduler and the execution client under the node agent.
//!
//! [`own_group_dying_with_parent`] puts the child in a process group of its own (so a stop
//! reaches the client's own children too: [`signal_group`]) and sets `PR_SET_PDEATHSIG` =
//! SIGKILL. The kernel sends that signal when the *thread* that forked the child exits, not
//! the process: callers fork from a thread that lives as long as the child.
//!
//! [`parent_of`] and [`kill_outright`] are for a process that is not one's own child: `nodefleet chaos
//! kill-node` signals a node of a running `up`, after checking that `up` is its parent.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Puts the child in its own process group and makes it die (SIGKILL) with the thread that
/// forks it.
#[allow(unsafe_code)]
pub fn own_group_dying_with_parent(command: &mut Command) {
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe calls setpgid(2), prctl(2) and getppid(2); it does not allocate and
    // touches no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::setpgid(0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: no signal would come then.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Sends `signal` to the process group led by `leader` (a child not reaped yet, so the id
/// cannot have been reused).
#[allow(unsafe_code)]
pub fn signal_group(leader: u32, signal: libc::c_int) {
    let Ok(group) = libc::pid_t::try_from(leader) else {
        return;
    };
    if group <= 1 {
        return;
    }
    // SAFETY: kill(2) on our own child's process group with a valid signal has no memory
    // effects.
    unsafe {
        libc::kill(-group, signal);
    }
}

/// The parent of process `pid` (from `/proc/<pid>/stat`), or `None` if there is no such
/// process.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses (which may hold anything): the state, then the
    // parent's pid.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Sends SIGKILL to process `pid` (not to its group: whatever it started must notice on its
/// own, as after a crash).
#[allow(unsafe_code)]
pub fn kill_outright(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|pid| *pid > 1)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a process id to signal"))?;
    // SAFETY: kill(2) with a positive pid and a valid signal has no memory effects.
    if unsafe { libc::kill(pid, libc::SIGKILL) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
