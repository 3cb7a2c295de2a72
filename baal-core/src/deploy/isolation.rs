//! What this host lets the local deployer enforce between tenants, worked out at start: whether
//! Baal runs as root, the Landlock ABI, user and network namespaces, cgroup controllers, a usable
//! `/dev/net/tun`, and the programs tools' networking needs (slirp4netns or pasta, nft).
//!
//! [`Isolation::probe`] only looks: it forks two short-lived children to try `unshare`, reads
//! `/proc` and `/sys`, and searches `PATH`. [`Isolation::tenancy`] turns that into who may create
//! local agents: everyone only where every boundary of a shared host holds, else the operator
//! alone (see `SECURITY.md`).

use std::fmt;
use std::path::{Path, PathBuf};

use super::Tenancy;

/// One boundary between a local agent's tools and the rest of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Boundary {
    /// Tools read only the system's directories and write only their workspace and the shared
    /// scratch directories (Landlock).
    Filesystem,
    /// Tools run under an identity of their own (a uid per agent, or a user namespace).
    Identity,
    /// Tools have a network namespace of their own: no host loopback, no private ranges.
    Network,
    /// Every process an agent started dies with it (a cgroup or a PID namespace).
    KillScope,
    /// Processes, memory, CPU, files per agent (cgroups, else rlimits).
    Limits,
}

impl Boundary {
    /// Every boundary, in the order `doctor` prints them.
    pub const ALL: [Boundary; 5] =
        [Boundary::Filesystem, Boundary::Identity, Boundary::Network, Boundary::KillScope, Boundary::Limits];

    /// What it protects, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            Boundary::Filesystem => {
                "tools read only the system's directories and write only their workspace, /tmp and /dev/shm"
            }
            Boundary::Identity => "tools run as an identity of their own",
            Boundary::Network => "tools have their own network, without the host's loopback or private ranges",
            Boundary::KillScope => "every process an agent starts dies with it when it stops or is killed",
            Boundary::Limits => "processes, memory and CPU are limited per agent",
        }
    }
}

/// A cgroup hierarchy this process could create agent groups in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CgroupV2 {
    /// The directory (this process's own cgroup, or the hybrid `unified` mount).
    pub dir: PathBuf,
    /// Its enabled controllers (`cgroup.controllers`).
    pub controllers: Vec<String>,
    /// The kernel has `cgroup.kill` (Linux 5.14): one write kills every process in a group.
    pub kill: bool,
}

/// What the host offers, and what this build of Baal enforces with it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Isolation {
    /// Baal runs as root.
    pub root: bool,
    /// The kernel's Landlock ABI (0: none).
    pub landlock_abi: u32,
    /// A user namespace can be created.
    pub user_namespaces: bool,
    /// A network namespace can be created (in a user namespace when not root).
    pub network_namespaces: bool,
    /// A writable cgroup v2 directory, if any.
    pub cgroup_v2: Option<CgroupV2>,
    /// cgroup v1 hierarchies this process may write (`memory`, `pids`, `cpu`).
    pub cgroup_v1: Vec<String>,
    /// `/dev/net/tun` opens for reading and writing.
    pub tun: bool,
    /// `slirp4netns` on `PATH`.
    pub slirp4netns: Option<PathBuf>,
    /// `pasta` on `PATH`.
    pub pasta: Option<PathBuf>,
    /// `nft` on `PATH`.
    pub nft: Option<PathBuf>,
}

impl Isolation {
    /// Looks at this host as this process sees it.
    pub fn probe() -> Isolation {
        let root = rustix::process::geteuid().is_root();
        Isolation {
            root,
            landlock_abi: landlock_abi(),
            user_namespaces: can_unshare(libc::CLONE_NEWUSER),
            network_namespaces: can_unshare(if root {
                libc::CLONE_NEWNET
            } else {
                libc::CLONE_NEWUSER | libc::CLONE_NEWNET
            }),
            cgroup_v2: cgroup_v2(),
            cgroup_v1: ["memory", "pids", "cpu"]
                .into_iter()
                .filter(|c| is_writable(&Path::new("/sys/fs/cgroup").join(c)))
                .map(str::to_owned)
                .collect(),
            tun: std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").is_ok(),
            slirp4netns: on_path("slirp4netns"),
            pasta: on_path("pasta"),
            nft: on_path("nft"),
        }
    }

    /// The boundaries this build of Baal enforces on this host: the filesystem (Landlock, in the
    /// agent) and, as root, an identity per agent and a kill scope per agent (a cgroup with
    /// `cgroup.kill`). The tools' network namespace and the limits are not built yet, whatever
    /// the host offers; nor are an identity and a kill scope without root (a user namespace, a
    /// delegated cgroup).
    pub fn enforced(&self) -> Vec<Boundary> {
        let mut held = Vec::new();
        if self.landlock_abi >= 1 {
            held.push(Boundary::Filesystem);
        }
        // As root, each agent's tools run as a uid of their own (`local::tools_uid`).
        if self.root {
            held.push(Boundary::Identity);
        }
        if self.kill_scope_base().is_some() {
            held.push(Boundary::KillScope);
        }
        held
    }

    /// Where agents' kill scopes go: a writable cgroup v2 directory with `cgroup.kill`, as root
    /// (unprivileged, moving the agent there needs a delegated tree, not used yet).
    pub fn kill_scope_base(&self) -> Option<&Path> {
        self.cgroup_v2.as_ref().filter(|c| self.root && c.kill).map(|c| c.dir.as_path())
    }

    /// The boundaries that do not hold, each with what would make it hold.
    pub fn missing(&self) -> Vec<(Boundary, String)> {
        let enforced = self.enforced();
        Boundary::ALL
            .into_iter()
            .filter(|b| !enforced.contains(b))
            .map(|boundary| (boundary, self.what_it_needs(boundary)))
            .collect()
    }

    fn what_it_needs(&self, boundary: Boundary) -> String {
        let host = match boundary {
            Boundary::Filesystem => {
                Some("a kernel with Landlock (Linux 5.13 or later, with `landlock` in the LSM list)")
            }
            Boundary::Identity if !self.root => {
                Some("root: run Baal as root for a uid per agent (user namespaces are not used yet)")
            }
            Boundary::Network if !self.network_namespaces => Some("network namespaces (run Baal as root)"),
            Boundary::Network if self.slirp4netns.is_none() && self.pasta.is_none() => {
                Some("slirp4netns (apt-get install slirp4netns) for tools' outbound access")
            }
            Boundary::Network if self.nft.is_none() => Some("nft (apt-get install nftables) for the tools' deny list"),
            Boundary::KillScope if !self.root || self.cgroup_v2.as_ref().is_none_or(|c| !c.kill) => {
                Some("root and a cgroup v2 hierarchy with cgroup.kill (Linux 5.14 or later)")
            }
            Boundary::Limits if self.cgroup_v2.is_none() && self.cgroup_v1.is_empty() => {
                Some("writable cgroups (run Baal as root); rlimits alone are per user, not per agent")
            }
            _ => None,
        };
        match host {
            Some(needs) => format!("this host lacks {needs}"),
            None => "this version of Baal does not enforce it yet".to_owned(),
        }
    }

    /// Who may create local agents: everyone only when every [`Boundary`] holds, or when the
    /// operator opened the deployer anyway (`open_anyway`); otherwise the operator alone.
    pub fn tenancy(&self, open_anyway: bool) -> Tenancy {
        if open_anyway || self.missing().is_empty() { Tenancy::Everyone } else { Tenancy::OperatorOnly }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let found = |p: &Option<PathBuf>| p.as_ref().map_or("missing".to_owned(), |p| p.display().to_string());
        write!(
            f,
            "root: {}, Landlock ABI: {}, user namespaces: {}, network namespaces: {}, cgroup v2: {}, \
             cgroup v1: {}, /dev/net/tun: {}, slirp4netns: {}, pasta: {}, nft: {}",
            yes(self.root),
            self.landlock_abi,
            yes(self.user_namespaces),
            yes(self.network_namespaces),
            self.cgroup_v2.as_ref().map_or("not writable".to_owned(), |c| format!(
                "{} [{}]{}",
                c.dir.display(),
                c.controllers.join(" "),
                if c.kill { " with cgroup.kill" } else { "" }
            )),
            if self.cgroup_v1.is_empty() { "not writable".to_owned() } else { self.cgroup_v1.join(" ") },
            if self.tun { "usable" } else { "not usable" },
            found(&self.slirp4netns),
            found(&self.pasta),
            found(&self.nft),
        )
    }
}

/// One agent's cgroup: everything the agent and its tools start stays in it, `setsid` or not, and
/// one write to `cgroup.kill` ends it all. Written by hand rather than with cgroups-rs: the whole
/// use is mkdir, two one-line writes and rmdir, and on hybrid hosts (v1 controllers, a bare v2
/// tree, like these machines) that crate picks the v1 hierarchies, which have no `cgroup.kill`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillScope {
    dir: PathBuf,
    procs: std::ffi::CString,
}

impl KillScope {
    /// The scope `name` under `base` (see [`Isolation::kill_scope_base`]); nothing is created.
    pub fn new(base: &Path, name: &str) -> std::io::Result<KillScope> {
        let dir = base.join(name);
        let procs = std::ffi::CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes())
            .map_err(std::io::Error::other)?;
        Ok(KillScope { dir, procs })
    }

    /// Creates the scope if missing and empties it: processes an earlier run left there (a
    /// platform killed outright) are killed.
    pub fn prepare(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        self.kill();
        Ok(())
    }

    /// Moves the calling process into the scope. Meant for a child between fork and exec: it only
    /// makes the system calls open, write and close.
    pub fn enter(&self) -> std::io::Result<()> {
        // SAFETY: `procs` is a valid NUL-terminated path; the buffer is a static byte.
        unsafe {
            let fd = libc::open(self.procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Kills every process in the scope and waits (briefly) until the kernel has reaped them.
    pub fn kill(&self) {
        if std::fs::write(self.dir.join("cgroup.kill"), "1").is_err() {
            return;
        }
        for _ in 0..200 {
            match std::fs::read_to_string(self.dir.join("cgroup.procs")) {
                Ok(procs) if !procs.trim().is_empty() => std::thread::sleep(std::time::Duration::from_millis(5)),
                _ => return,
            }
        }
        tracing::warn!(scope = %self.dir.display(), "processes of a stopped agent are still dying");
    }

    /// Kills what is left and removes the scope.
    pub fn remove(&self) {
        self.kill();
        let _ = std::fs::remove_dir(&self.dir);
    }

    /// The processes in the scope now.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }
}

fn landlock_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute and size 0 and the VERSION flag, the call only returns the
    // ABI version (or -1); it touches no memory of ours.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(abi).unwrap_or(0)
}

/// Whether a child can `unshare(flags)`: tried in a forked child that then execs `true`, so this
/// (multi-threaded) process changes nothing.
fn can_unshare(flags: libc::c_int) -> bool {
    use std::os::unix::process::CommandExt as _;
    let Some(program) = ["/bin/true", "/usr/bin/true"].into_iter().find(|p| Path::new(p).is_file()) else {
        return false;
    };
    let mut command = std::process::Command::new(program);
    command.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    // SAFETY: only async-signal-safe calls (unshare) between fork and exec.
    unsafe {
        command.pre_exec(move || if libc::unshare(flags) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) });
    }
    command.status().is_ok_and(|status| status.success())
}

/// This process's own cgroup v2 directory if it may create groups there, else the hybrid
/// `unified` mount's root (which root may use even where v1 owns the controllers).
fn cgroup_v2() -> Option<CgroupV2> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mounts.lines().find_map(|line| {
        let (fields, fs) = line.split_once(" - ")?;
        fs.starts_with("cgroup2 ").then(|| fields.split(' ').nth(4).map(PathBuf::from)).flatten()
    })?;
    let candidates = own.map(|path| mount.join(path.trim_start_matches('/'))).into_iter().chain([mount]);
    candidates.filter(|dir| is_writable(dir)).find_map(|dir| {
        let controllers = std::fs::read_to_string(dir.join("cgroup.controllers")).ok()?;
        Some(CgroupV2 {
            controllers: controllers.split_whitespace().map(str::to_owned).collect(),
            kill: has_cgroup_kill(&dir),
            dir,
        })
    })
}

/// Whether groups under `dir` get `cgroup.kill` (Linux 5.14). A root cgroup never has the file,
/// so a short-lived child group is made to look.
fn has_cgroup_kill(dir: &Path) -> bool {
    let probe = dir.join(format!("baal-probe-{}", std::process::id()));
    if std::fs::create_dir(&probe).is_err() {
        return false;
    }
    let kill = probe.join("cgroup.kill").exists();
    let _ = std::fs::remove_dir(&probe);
    kill
}

fn is_writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

/// The first `name` on `PATH` that is a file.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    // Searching PATH by hand: a few lines, where a crate (`which`) would add a dependency for it.
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_sees_this_host() {
        let isolation = Isolation::probe();
        assert_eq!(isolation.root, rustix::process::geteuid().is_root());
        let shown = isolation.to_string();
        assert!(shown.contains("Landlock ABI"), "{shown}");
        // The boundaries not built yet are missing whatever the host offers, so no host hosts
        // everyone unless the operator opens it.
        let missing: Vec<Boundary> = isolation.missing().into_iter().map(|(b, _)| b).collect();
        assert!(missing.contains(&Boundary::Network) && missing.contains(&Boundary::Limits), "{missing:?}");
        assert_eq!(isolation.tenancy(false), Tenancy::OperatorOnly);
        assert_eq!(isolation.tenancy(true), Tenancy::Everyone);
    }

    #[test]
    fn what_is_missing_names_the_package_or_the_privilege() {
        let bare = Isolation {
            root: false,
            landlock_abi: 0,
            user_namespaces: false,
            network_namespaces: false,
            cgroup_v2: None,
            cgroup_v1: Vec::new(),
            tun: false,
            slirp4netns: None,
            pasta: None,
            nft: None,
        };
        let missing = bare.missing();
        assert_eq!(missing.len(), Boundary::ALL.len());
        let text = |b: Boundary| missing.iter().find(|(m, _)| *m == b).unwrap().1.clone();
        assert!(text(Boundary::Filesystem).contains("Landlock"));
        assert!(text(Boundary::Network).contains("root"));
        let root = Isolation { root: true, network_namespaces: true, ..bare.clone() };
        assert!(root.what_it_needs(Boundary::Network).contains("apt-get install slirp4netns"));
        let tools = Isolation { slirp4netns: Some("/usr/bin/slirp4netns".into()), ..root };
        assert!(tools.what_it_needs(Boundary::Network).contains("apt-get install nftables"));
    }
}
