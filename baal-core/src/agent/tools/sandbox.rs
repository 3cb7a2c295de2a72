//! Keeping the agent's secrets out of reach of the processes its tools start.
//!
//! Three layers, because any one alone leaks: tool processes get a cleared environment (so
//! `env` and `/proc/self/environ` show nothing secret); the agent makes itself non-dumpable (so a
//! same-user child cannot read `/proc/<agent>/environ` or `/proc/<agent>/mem`, which still hold
//! the settings the agent started with); and an agent running as root runs its tools as an
//! unprivileged user (so they cannot read root-only settings files or touch the agent's code).

use std::ffi::{CStr, CString};
use std::io;

/// Makes the calling process non-dumpable, which closes `/proc/<pid>/environ`, `/proc/<pid>/mem`
/// and `ptrace` to processes of the same user (its tool children included). Call it once at
/// start, after reading the settings. Children reset the flag when they exec, so it does not
/// spread to them. A no-op outside Linux.
pub fn harden_process() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// Whether the process runs in a state where `/proc/<pid>/environ` is closed to same-user peers.
pub fn is_hardened() -> bool {
    #[cfg(target_os = "linux")]
    {
        matches!(rustix::process::dumpable_behavior(), Ok(rustix::process::DumpableBehavior::NotDumpable))
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
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    lookup_user(user).map(Some)
}

/// `user` as a numeric `uid` or `uid:gid` (an identity with no account, such as the local
/// deployer's one per agent; the gid defaults to the uid), else looked up in the password
/// database (getpwnam_r: thread-safe, unlike getpwnam).
fn lookup_user(user: &str) -> Result<ToolIdentity, String> {
    let numeric = |text: &str| text.parse::<u32>().ok();
    if let Some((uid, gid)) = match user.split_once(':') {
        Some((uid, gid)) => numeric(uid).zip(numeric(gid)),
        None => numeric(user).map(|uid| (uid, uid)),
    } {
        if uid == 0 || gid == 0 {
            return Err(format!("the tools user `{user}` is root; set TOOLS_USER to an unprivileged user"));
        }
        return Ok(ToolIdentity { uid, gid });
    }
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

/// System directories tool processes may read and execute from. Nothing else outside the
/// workspace is readable: the agent's settings file and database sit beside the workspace, owned
/// by the agent's own user when it is not root, and only this list keeps them out of reach.
/// `/opt`, `/srv` and `/home` are not system directories: operators install Baal there, with its
/// `.env` (bot token, sealing key, wallet key) beside it.
const READ_ONLY_PATHS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/run/systemd/resolve",
    "/nix",
    "/snap",
];
/// Devices tool processes may write (terminals, sinks, random sources).
const WRITABLE_DEVICES: &[&str] =
    &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/pts"];

/// What a tool process may touch besides the system directories.
pub(crate) struct Reachable<'a> {
    /// The workspace: everything.
    pub(crate) workspace: &'a std::path::Path,
    /// The agent's scratch directory (the tools' `/tmp`): everything.
    pub(crate) scratch: &'a std::path::Path,
    /// Directories to read and execute from, besides the system ones.
    pub(crate) extra_read: &'a [std::path::PathBuf],
    /// Each call mounts a fresh `/dev/shm` of its own, so it may be written; without the
    /// namespaces the host's one is shared by every agent, and stays closed.
    pub(crate) private_shm: bool,
    /// Refuse every TCP connect and bind (tools that should have no network but got no network
    /// namespace); needs Landlock ABI 4.
    pub(crate) deny_tcp: bool,
}

/// Builds the Landlock ruleset tool processes enter before exec: read and execute in the system
/// directories (plus `extra_read`), everything in the workspace and scratch directory, no
/// signals to processes outside the sandbox (the agent), no abstract sockets outside it; and,
/// with `deny_tcp`, no TCP. `Ok(None)` when the kernel has no Landlock (tools then run without
/// this layer).
#[cfg(target_os = "linux")]
pub(crate) fn prepare_fs_ruleset(reach: &Reachable<'_>) -> Result<Option<std::os::fd::OwnedFd>, String> {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, path_beneath_rules,
    };

    // The newest ABI this code knows; older kernels get the subset they support (best effort).
    let abi = ABI::V6;
    let build = || -> Result<Option<std::os::fd::OwnedFd>, landlock::RulesetError> {
        let read = AccessFs::from_read(abi);
        let mut ruleset = Ruleset::default().handle_access(AccessFs::from_all(abi))?.scope(Scope::from_all(abi))?;
        if reach.deny_tcp {
            // Handled with no rule allowing any port: every connect and bind is refused.
            ruleset = ruleset.handle_access(AccessNet::from_all(abi))?;
        }
        let shm: &[&str] = if reach.private_shm { &["/dev/shm"] } else { &[] };
        let created = ruleset
            .create()?
            .add_rules(path_beneath_rules(READ_ONLY_PATHS, read))?
            .add_rules(path_beneath_rules(reach.extra_read, read))?
            .add_rules(path_beneath_rules(WRITABLE_DEVICES, read | AccessFs::WriteFile | AccessFs::IoctlDev))?
            .add_rules(path_beneath_rules(shm, AccessFs::from_all(abi)))?
            .add_rules(path_beneath_rules([reach.workspace, reach.scratch], AccessFs::from_all(abi)))?;
        Ok(created.into())
    };
    build().map_err(|e| format!("cannot prepare the file-system sandbox for tools: {e}"))
}

/// Enters the prepared ruleset. Runs in the child between fork and exec, so it only makes
/// system calls (no allocation, no locks): `no_new_privs` (which Landlock requires, and which
/// also stops setuid programs from regaining privileges) and `landlock_restrict_self`.
#[cfg(target_os = "linux")]
pub(crate) fn enter_fs_ruleset(ruleset: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: both calls take plain integers and touch no memory of ours.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Without Landlock (not Linux), tool processes run without the file-system sandbox.
#[cfg(not(target_os = "linux"))]
pub(crate) fn prepare_fs_ruleset(_reach: &Reachable<'_>) -> Result<Option<std::os::fd::OwnedFd>, String> {
    Ok(None)
}

/// Nothing to enter outside Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) fn enter_fs_ruleset(_ruleset: std::os::fd::RawFd) -> io::Result<()> {
    Ok(())
}
