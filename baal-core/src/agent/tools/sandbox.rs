//! Keeping the agent's secrets out of reach of the processes its tools start.
//!
//! Three layers, because any one alone leaks: tool processes get a cleared environment (so
//! `env` and `/proc/self/environ` show nothing secret); the agent makes itself non-dumpable (so a
//! same-user child cannot read `/proc/<agent>/environ` or `/proc/<agent>/mem`, which still hold
//! the settings the agent started with); and an agent running as root runs its tools as an
//! unprivileged user (so they cannot read root-only settings files or touch the agent's code).

use std::ffi::{CStr, CString};
use std::io;
use std::path::Path;

/// Makes the calling process non-dumpable, which closes `/proc/<pid>/environ`, `/proc/<pid>/mem`
/// and `ptrace` to processes of the same user (its tool children included). Call it once at
/// start, after reading the settings. Children reset the flag when they exec, so it does not
/// spread to them. A no-op outside Linux.
pub fn harden_process() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether the process runs in a state where `/proc/<pid>/environ` is closed to same-user peers.
pub fn is_hardened() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_GET_DUMPABLE takes no pointer arguments.
        unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// The unprivileged identity tool processes run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ToolIdentity {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// The identity tools must switch to: `None` when the agent is not root (tools then run as the
/// agent's own user, shielded by [`harden_process`] and the cleared environment), or the uid/gid
/// of `user` when it is. Refusing is better than running tools as root, hence the error.
pub(crate) fn tool_identity(user: &str) -> Result<Option<ToolIdentity>, String> {
    // SAFETY: geteuid cannot fail and has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    lookup_user(user).map(Some)
}

/// Looks `user` up in the password database (getpwnam_r: thread-safe, unlike getpwnam).
fn lookup_user(user: &str) -> Result<ToolIdentity, String> {
    let not_found =
        || format!("the tools user `{user}` does not exist; set TOOLS_USER to an existing unprivileged user");
    let name = CString::new(user).map_err(|_| not_found())?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: zeroed passwd is a valid out-parameter (plain integers and null pointers).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; `buf` outlives every use of `pwd`'s strings.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return Err(not_found());
    }
    if pwd.pw_uid == 0 {
        // SAFETY: pw_name points into `buf`, NUL-terminated by getpwnam_r.
        let shown = unsafe { CStr::from_ptr(pwd.pw_name) }.to_string_lossy().into_owned();
        return Err(format!("the tools user `{shown}` is root; set TOOLS_USER to an unprivileged user"));
    }
    Ok(ToolIdentity { uid: pwd.pw_uid, gid: pwd.pw_gid })
}

/// Hands `path` (and, for a directory, everything below it) to the tools user, without following
/// symlinks, so tool processes can write where the file tools wrote.
pub(crate) fn give_to(identity: ToolIdentity, path: &Path) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(identity.uid), Some(identity.gid))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            give_to(identity, &entry?.path())?;
        }
    }
    Ok(())
}

/// Hands only `path` itself to the tools user.
pub(crate) fn give_one_to(identity: ToolIdentity, path: &Path) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(identity.uid), Some(identity.gid))
}
