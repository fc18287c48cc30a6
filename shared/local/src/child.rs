//! Child processes that never outlive whoever started them: node processes of the local
//! scheduler and the execution client under the node agent.
//!
//! [`own_group_dying_with_parent`] puts the child in a process group of its own (so a stop
//! reaches the client's own children too: [`signal_group`]) and sets `PR_SET_PDEATHSIG` =
//! SIGKILL. The kernel sends that signal when the *thread* that forked the child exits, not
//! the process: callers fork from a thread that lives as long as the child.

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
