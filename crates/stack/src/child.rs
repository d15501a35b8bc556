//! The link from a supervised process back to its supervisor: a child of `flotilla up` must not
//! outlive it, even when the supervisor is killed with SIGKILL and has no chance to stop it.
//!
//! The supervisor starts each child with [`SUPERVISOR_PID`] in its environment. At startup the
//! child asks the kernel for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), then checks that
//! its parent is still that supervisor: if the supervisor died between starting the child and
//! this call, no signal would ever come, so the child stops at once. SIGTERM lets the child drain
//! as it would on any shutdown.
//!
//! (The kernel sends the signal when the thread that started the child ends; the supervisor
//! starts children from its runtime's worker threads, which live as long as it does.)

use nix::sys::signal::Signal;
use nix::unistd::{Pid, getppid};

/// The variable that tells a child which process supervises it.
pub const SUPERVISOR_PID: &str = "FLOTILLA_SUPERVISOR_PID";

/// What became of the link to the supervisor.
#[derive(Debug, PartialEq, Eq)]
pub enum Link {
    /// Not started by a supervisor.
    None,
    /// The child gets SIGTERM when its supervisor dies.
    Linked,
    /// The supervisor is already gone: the child should stop now.
    Orphaned,
}

/// Links this process to its supervisor, if one started it (see the module docs).
pub fn follow_supervisor() -> std::io::Result<Link> {
    let Some(supervisor) = std::env::var(SUPERVISOR_PID)
        .ok()
        .and_then(|pid| pid.parse::<i32>().ok())
    else {
        return Ok(Link::None);
    };
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
    Ok(if getppid() == Pid::from_raw(supervisor) {
        Link::Linked
    } else {
        Link::Orphaned
    })
}
