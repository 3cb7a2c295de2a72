//! What this host lets the local deployer enforce between tenants, worked out at start: whether
//! Baal runs as root, the Landlock ABI, user and network namespaces, cgroup controllers, a usable
//! `/dev/net/tun`, and the programs tools' networking needs (slirp4netns or pasta, nft).
//!
//! [`Isolation::probe`] only looks: it forks three short-lived children to try `unshare`, reads
//! `/proc` and `/sys`, and searches `PATH`. [`Isolation::tenancy`] turns that into who may create
//! local agents: everyone only where every boundary of a shared host holds, else the operator
//! alone (see `SECURITY.md`).
//!
//! It also holds the two cgroup types the local deployer puts each agent in: a [`KillScope`]
//! (everything the agent starts dies with it) and a [`LimitScope`] (memory, processes and CPU of
//! everything the agent starts, counted together). Where [`Isolation::limit_mechanism`] finds
//! neither cgroup v2 controllers nor writable v1 hierarchies, agents run without cgroup limits
//! and only the rlimits the agent sets on each tool process apply.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Tenancy;

/// One boundary between a local agent's tools and the rest of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Boundary {
    /// Tools read only the system's directories and write only their workspace and their own
    /// scratch directories (Landlock).
    Filesystem,
    /// Tools run under an identity of their own (a uid per agent, or a user namespace).
    Identity,
    /// Tools have a network namespace of their own: no host loopback, no private ranges.
    Network,
    /// Every process an agent started dies with it (a cgroup or a PID namespace).
    KillScope,
    /// Memory, processes and CPU per agent, everything its tools start included (cgroups).
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
                "tools read only the system's directories and write only their workspace and a /tmp of their own"
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
    /// The controllers a group created in it gets (`cgroup.subtree_control`): what limits may use.
    pub subtree_control: Vec<String>,
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
    /// A PID namespace can be created (in a user namespace when not root).
    pub pid_namespaces: bool,
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
            pid_namespaces: can_unshare(if root {
                libc::CLONE_NEWPID
            } else {
                libc::CLONE_NEWUSER | libc::CLONE_NEWPID
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
    /// agent); an identity, a network and a kill scope of their own for tools (as root a uid per
    /// agent, a network namespace per agent and a cgroup with `cgroup.kill`; otherwise a user,
    /// network and PID namespace per tool call, see `agent::tools::jail`); and limits per agent
    /// (see [`Isolation::limit_mechanism`]).
    pub fn enforced(&self) -> Vec<Boundary> {
        let mut held = Vec::new();
        if self.landlock_abi >= 1 {
            held.push(Boundary::Filesystem);
        }
        // As root, each agent's tools run as a uid of their own (`local::tools_uid`); otherwise
        // each call is in a user namespace of its own.
        if self.root || self.user_namespaces {
            held.push(Boundary::Identity);
        }
        // An empty namespace holds the boundary as well as one with slirp4netns does: the way out
        // to public addresses is a service on top (see `tools_network`).
        if self.network_namespaces {
            held.push(Boundary::Network);
        }
        // A call's PID namespace dies with its first process, which dies with the agent
        // (parent-death signals); a cgroup catches the agent's other children too.
        if self.kill_scope_base().is_some() || self.pid_namespaces {
            held.push(Boundary::KillScope);
        }
        if self.limit_mechanism().is_some() {
            held.push(Boundary::Limits);
        }
        held
    }

    /// What local agents' tools can reach on this host, in words, with what to install for more.
    pub fn tools_network(&self) -> String {
        match (self.network_namespaces, self.root, &self.slirp4netns, &self.nft) {
            (false, _, _, _) => "the host's network (no network namespaces here), minus TCP where Landlock \
                                 has network rules"
                .to_owned(),
            (true, true, Some(_), Some(_)) => "public addresses only, through slirp4netns behind an nftables deny \
                                              list (no host loopback, private, link-local or host addresses)"
                .to_owned(),
            (true, true, _, _) => "nothing (an empty network namespace); apt-get install slirp4netns nftables to let \
                                   them reach public addresses"
                .to_owned(),
            (true, false, _, _) => "nothing (an empty network namespace per call); run Baal as root to let them \
                                    reach public addresses"
                .to_owned(),
        }
    }

    /// How each agent's memory, processes and CPU are limited here, as root: with the v2
    /// controllers on its kill scope when the kill scopes' directory hands them to its groups,
    /// else with a group in each writable v1 hierarchy (hybrid hosts, where v1 owns the
    /// controllers). `None` when neither offers all three: a partial limit is not a boundary.
    pub fn limit_mechanism(&self) -> Option<LimitMechanism> {
        if let (Some(base), Some(v2)) = (self.kill_scope_base(), &self.cgroup_v2)
            && LIMIT_CONTROLLERS.iter().all(|c| v2.subtree_control.iter().any(|have| have == c))
        {
            return Some(LimitMechanism::CgroupV2(base.to_owned()));
        }
        let v1 = LIMIT_CONTROLLERS.iter().all(|c| self.cgroup_v1.iter().any(|have| have == c));
        (self.root && v1).then(|| LimitMechanism::CgroupV1(PathBuf::from(CGROUP_V1_ROOT)))
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
        let needs = match boundary {
            Boundary::Filesystem => "a kernel with Landlock (Linux 5.13 or later, with `landlock` in the LSM list)",
            Boundary::Identity => {
                "user namespaces (allow unprivileged ones: sysctl kernel.unprivileged_userns_clone=1, or an \
                 AppArmor profile that permits them), or root for a uid per agent"
            }
            Boundary::Network => "network namespaces (run Baal as root, or allow unprivileged user namespaces)",
            Boundary::KillScope => {
                "PID namespaces (allow unprivileged user namespaces, or run Baal as root), or root and a cgroup v2 \
                 hierarchy with cgroup.kill (Linux 5.14 or later)"
            }
            Boundary::Limits if !self.root => {
                "root: run Baal as root for cgroup limits per agent (rlimits alone count per tool process)"
            }
            Boundary::Limits => {
                "the memory, pids and cpu controllers for Baal's agents: enabled in the cgroup.subtree_control \
                 of the cgroup v2 directory Baal runs in (with cgroup.kill), or writable cgroup v1 hierarchies \
                 /sys/fs/cgroup/{memory,pids,cpu}"
            }
        };
        format!("this host lacks {needs}")
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
            "root: {}, Landlock ABI: {}, user namespaces: {}, network namespaces: {}, PID namespaces: {}, cgroup v2: {}, \
             cgroup v1: {}, /dev/net/tun: {}, slirp4netns: {}, pasta: {}, nft: {}",
            yes(self.root),
            self.landlock_abi,
            yes(self.user_namespaces),
            yes(self.network_namespaces),
            yes(self.pid_namespaces),
            self.cgroup_v2.as_ref().map_or("not writable".to_owned(), |c| format!(
                "{} [{}] (for its groups: [{}]){}",
                c.dir.display(),
                c.controllers.join(" "),
                c.subtree_control.join(" "),
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
        enter_group(&self.procs)
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

/// The controllers per-agent limits need, by their cgroup names (v1 hierarchies and v2 alike).
const LIMIT_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// Where the v1 hierarchies are mounted, one directory per controller.
const CGROUP_V1_ROOT: &str = "/sys/fs/cgroup";
/// The CFS period the CPU quota is a share of (the kernel's default, 100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// What one local agent, with everything its tools start, may use at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentLimits {
    /// Memory in MiB (`AGENT_MAX_MEMORY_MIB`); no swap beyond it.
    pub memory_mib: u64,
    /// Processes and threads alive at once (`AGENT_MAX_PROCESSES`).
    pub processes: u64,
    /// CPU time in percent of one core (`AGENT_CPU_PERCENT`; 200 is two cores).
    pub cpu_percent: u32,
}

impl AgentLimits {
    /// `memory_mib` MiB, `processes` processes, `cpu_percent` percent of one core.
    pub fn new(memory_mib: u64, processes: u64, cpu_percent: u32) -> AgentLimits {
        AgentLimits { memory_mib, processes, cpu_percent }
    }

    fn memory_bytes(self) -> u64 {
        self.memory_mib.saturating_mul(1024 * 1024)
    }

    /// The CFS quota for [`CPU_PERIOD_US`].
    fn cpu_quota_us(self) -> u64 {
        u64::from(self.cpu_percent).saturating_mul(CPU_PERIOD_US / 100)
    }
}

impl Default for AgentLimits {
    fn default() -> Self {
        use crate::config::{DEFAULT_AGENT_CPU_PERCENT, DEFAULT_AGENT_MAX_MEMORY_MIB, DEFAULT_AGENT_MAX_PROCESSES};
        AgentLimits::new(DEFAULT_AGENT_MAX_MEMORY_MIB, DEFAULT_AGENT_MAX_PROCESSES, DEFAULT_AGENT_CPU_PERCENT)
    }
}

impl fmt::Display for AgentLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} MiB, {} processes, {}% of a core", self.memory_mib, self.processes, self.cpu_percent)
    }
}

/// How per-agent limits are applied on a host (see [`Isolation::limit_mechanism`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitMechanism {
    /// The v2 controllers, on each agent's kill scope under this directory.
    CgroupV2(PathBuf),
    /// A group per agent in the `memory`, `pids` and `cpu` v1 hierarchies under this directory.
    CgroupV1(PathBuf),
}

impl fmt::Display for LimitMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitMechanism::CgroupV2(dir) => write!(f, "cgroup v2 controllers under {}", dir.display()),
            LimitMechanism::CgroupV1(dir) => {
                write!(f, "cgroup v1 hierarchies {}/{{{}}}", dir.display(), LIMIT_CONTROLLERS.join(","))
            }
        }
    }
}

/// One agent's limits: the groups that count its memory, processes and CPU, and what to write in
/// them. On cgroup v2 they are the agent's [`KillScope`] itself, which the agent enters anyway; on
/// v1 there is one group per hierarchy, each entered by the agent like the kill scope.
///
/// Hand-written like [`KillScope`], and one type for both versions rather than cgroups-rs: the use
/// is a few one-line writes, and a kill scope on v2 beside limits on v1 (this hybrid case) is a
/// pairing that crate's one-hierarchy-kind-per-process model does not express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitScope {
    limits: AgentLimits,
    version: LimitVersion,
    groups: Vec<LimitGroup>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LimitVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LimitGroup {
    /// The v1 controller of its hierarchy (`None` on v2, where one group has them all).
    controller: Option<&'static str>,
    /// The data directory's group, shared by its agents.
    parent: PathBuf,
    dir: PathBuf,
    procs: std::ffi::CString,
}

impl LimitScope {
    /// The scope of agent `name` in the data directory's group `data_group`; nothing is created.
    pub fn new(
        mechanism: &LimitMechanism,
        data_group: &str,
        name: &str,
        limits: AgentLimits,
    ) -> std::io::Result<LimitScope> {
        let group = |controller: Option<&'static str>, parent: PathBuf| {
            let dir = parent.join(name);
            let procs = std::ffi::CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes())
                .map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(LimitGroup { controller, parent, dir, procs })
        };
        let (version, groups) = match mechanism {
            LimitMechanism::CgroupV2(base) => (LimitVersion::V2, vec![group(None, base.join(data_group))?]),
            LimitMechanism::CgroupV1(root) => (
                LimitVersion::V1,
                LIMIT_CONTROLLERS
                    .into_iter()
                    .map(|c| group(Some(c), root.join(c).join(data_group)))
                    .collect::<std::io::Result<_>>()?,
            ),
        };
        Ok(LimitScope { limits, version, groups })
    }

    /// Creates the groups if missing and writes the limits. On v2, call it after the kill scope's
    /// `prepare`, which empties the group: a lowered memory limit is then never below what
    /// leftovers use.
    pub fn prepare(&self) -> std::io::Result<()> {
        let limits = self.limits;
        for group in &self.groups {
            let at = |file: &str, err: std::io::Error| {
                std::io::Error::new(err.kind(), format!("{}: {err}", group.dir.join(file).display()))
            };
            let write =
                |file: &str, value: String| std::fs::write(group.dir.join(file), value).map_err(|e| at(file, e));
            std::fs::create_dir_all(&group.dir).map_err(|e| at("", e))?;
            match (self.version, group.controller) {
                (LimitVersion::V2, _) => {
                    enable_controllers(&group.parent).map_err(|e| at("../cgroup.subtree_control", e))?;
                    write("memory.max", limits.memory_bytes().to_string())?;
                    if group.dir.join("memory.swap.max").exists() {
                        write("memory.swap.max", "0".into())?;
                    }
                    write("pids.max", limits.processes.to_string())?;
                    write("cpu.max", format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us()))?;
                }
                (LimitVersion::V1, Some("memory")) => {
                    // memsw (memory + swap) may never be below the memory limit: lift it first,
                    // whichever way the limit moves, then pin it to the limit (no swap).
                    let memsw = group.dir.join("memory.memsw.limit_in_bytes").exists();
                    if memsw {
                        write("memory.memsw.limit_in_bytes", "-1".into())?;
                    }
                    write("memory.limit_in_bytes", limits.memory_bytes().to_string())?;
                    if memsw {
                        write("memory.memsw.limit_in_bytes", limits.memory_bytes().to_string())?;
                    }
                }
                (LimitVersion::V1, Some("pids")) => write("pids.max", limits.processes.to_string())?,
                (LimitVersion::V1, _) => {
                    write("cpu.cfs_period_us", CPU_PERIOD_US.to_string())?;
                    write("cpu.cfs_quota_us", limits.cpu_quota_us().to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Moves the calling process into every group of the scope (none on v2: the kill scope is
    /// the group). Meant for a child between fork and exec: only open, write and close.
    pub fn enter(&self) -> std::io::Result<()> {
        if self.version == LimitVersion::V1 {
            for group in &self.groups {
                enter_group(&group.procs)?;
            }
        }
        Ok(())
    }

    /// Removes the groups, and the data directory's groups once no agent has one. Call it once
    /// the agent's processes are dead (after [`KillScope::remove`]): a group with processes in it
    /// stays, and is reused at the next start.
    pub fn remove(&self) {
        for group in &self.groups {
            // An exiting process leaves its v1 groups a moment after it leaves the v2 one.
            for _ in 0..20 {
                match std::fs::remove_dir(&group.dir) {
                    Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    _ => break,
                }
            }
            let _ = std::fs::remove_dir(&group.parent);
        }
    }
}

/// Hands the limit controllers to `dir`'s child groups, writing only those not handed yet.
fn enable_controllers(dir: &Path) -> std::io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&file).unwrap_or_default();
    let missing: Vec<String> = LIMIT_CONTROLLERS
        .into_iter()
        .filter(|c| !enabled.split_whitespace().any(|have| have == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() { Ok(()) } else { std::fs::write(file, missing.join(" ")) }
}

/// Moves the calling process into the group whose `cgroup.procs` (v1 or v2) is `procs`: writing
/// 0 there means "the writer". Only open, write and close, so a child may call it between fork and
/// exec.
fn enter_group(procs: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: `procs` is a valid NUL-terminated path; the buffer is a static byte.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
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
        let subtree = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
        Some(CgroupV2 {
            controllers: controllers.split_whitespace().map(str::to_owned).collect(),
            subtree_control: subtree.split_whitespace().map(str::to_owned).collect(),
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
        let missing: Vec<Boundary> = isolation.missing().into_iter().map(|(b, _)| b).collect();
        assert_eq!(missing.contains(&Boundary::Network), !isolation.network_namespaces, "{missing:?}");
        assert_eq!(missing.contains(&Boundary::Limits), isolation.limit_mechanism().is_none(), "{missing:?}");
        let v1 = ["memory", "pids", "cpu"].iter().all(|c| isolation.cgroup_v1.iter().any(|have| have == c));
        if isolation.root && v1 {
            // As root with writable v1 hierarchies (these hybrid hosts), limits hold.
            assert!(isolation.enforced().contains(&Boundary::Limits), "{shown}");
        }
        if isolation.root {
            // Root always gets a network namespace and a PID namespace for tools.
            assert!(!missing.contains(&Boundary::Network) && !missing.contains(&Boundary::KillScope), "{missing:?}");
        }
        let open = if missing.is_empty() { Tenancy::Everyone } else { Tenancy::OperatorOnly };
        assert_eq!(isolation.tenancy(false), open);
        assert_eq!(isolation.tenancy(true), Tenancy::Everyone);
    }

    #[test]
    fn what_is_missing_names_the_package_or_the_privilege() {
        let bare = Isolation {
            root: false,
            landlock_abi: 0,
            user_namespaces: false,
            network_namespaces: false,
            pid_namespaces: false,
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
        assert!(text(Boundary::Identity).contains("user namespaces"));
        assert!(text(Boundary::KillScope).contains("PID namespaces"));
        let root = Isolation { root: true, network_namespaces: true, pid_namespaces: true, ..bare.clone() };
        assert!(root.enforced().contains(&Boundary::Network) && root.enforced().contains(&Boundary::KillScope));
        assert!(root.tools_network().contains("apt-get install slirp4netns nftables"));
        let unprivileged = Isolation { user_namespaces: true, network_namespaces: true, ..bare.clone() };
        assert!(unprivileged.enforced().contains(&Boundary::Identity));
        assert!(unprivileged.tools_network().contains("run Baal as root"));
        let tools = Isolation {
            slirp4netns: Some("/usr/bin/slirp4netns".into()),
            nft: Some("/usr/sbin/nft".into()),
            ..root.clone()
        };
        assert!(tools.tools_network().starts_with("public addresses only"));
        assert!(bare.what_it_needs(Boundary::Limits).contains("root"));
        assert!(tools.what_it_needs(Boundary::Limits).contains("cgroup.subtree_control"));
    }

    fn owned(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn root_host(v2_subtree: &[&str], v1: &[&str]) -> Isolation {
        Isolation {
            root: true,
            landlock_abi: 6,
            user_namespaces: true,
            network_namespaces: true,
            pid_namespaces: true,
            cgroup_v2: Some(CgroupV2 {
                dir: "/sys/fs/cgroup/system.slice/baal.service".into(),
                controllers: owned(&["cpu", "io", "memory", "pids"]),
                subtree_control: owned(v2_subtree),
                kill: true,
            }),
            cgroup_v1: owned(v1),
            tun: true,
            slirp4netns: None,
            pasta: None,
            nft: None,
        }
    }

    #[test]
    fn limits_hold_only_with_all_three_controllers_as_root() {
        let v2 = root_host(&["cpu", "memory", "pids"], &[]);
        assert_eq!(
            v2.limit_mechanism(),
            Some(LimitMechanism::CgroupV2("/sys/fs/cgroup/system.slice/baal.service".into()))
        );
        assert!(v2.enforced().contains(&Boundary::Limits));
        // Controllers the directory has but does not hand to its groups are of no use.
        let hybrid = root_host(&[], &["memory", "pids", "cpu"]);
        assert_eq!(hybrid.limit_mechanism(), Some(LimitMechanism::CgroupV1("/sys/fs/cgroup".into())));
        let partial = root_host(&["memory", "pids"], &["memory", "pids"]);
        assert_eq!(partial.limit_mechanism(), None);
        assert!(partial.missing().iter().any(|(b, why)| *b == Boundary::Limits && why.contains("cpu")));
        let unprivileged =
            Isolation { root: false, ..root_host(&["cpu", "memory", "pids"], &["memory", "pids", "cpu"]) };
        assert_eq!(unprivileged.limit_mechanism(), None);
        let no_kill = root_host(&["cpu", "memory", "pids"], &[]);
        let no_kill = Isolation { cgroup_v2: no_kill.cgroup_v2.map(|v2| CgroupV2 { kill: false, ..v2 }), ..no_kill };
        assert_eq!(no_kill.limit_mechanism(), None, "v2 limits sit on the kill scope");
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    /// A temporary directory stands in for the cgroup tree: what matters is which files get which
    /// values (the kernel's side is `local_deployer.rs`).
    #[test]
    fn v2_limits_go_on_the_agents_group_with_the_controllers_handed_down() {
        let base = tempfile::tempdir().unwrap();
        let agent = base.path().join("baal-x/agent-1");
        std::fs::create_dir_all(&agent).unwrap();
        std::fs::write(agent.join("memory.swap.max"), "max").unwrap();
        let mechanism = LimitMechanism::CgroupV2(base.path().to_owned());
        let scope = LimitScope::new(&mechanism, "baal-x", "agent-1", AgentLimits::new(64, 32, 250)).unwrap();
        scope.prepare().unwrap();
        assert_eq!(read(&base.path().join("baal-x/cgroup.subtree_control")), "+memory +pids +cpu");
        assert_eq!(read(&agent.join("memory.max")), (64 << 20).to_string());
        assert_eq!(read(&agent.join("memory.swap.max")), "0");
        assert_eq!(read(&agent.join("pids.max")), "32");
        assert_eq!(read(&agent.join("cpu.max")), "250000 100000");
        // Only the controllers not handed down yet are asked for.
        std::fs::write(base.path().join("baal-x/cgroup.subtree_control"), "cpu io memory").unwrap();
        scope.prepare().unwrap();
        assert_eq!(read(&base.path().join("baal-x/cgroup.subtree_control")), "+pids");
        // The agent enters the kill scope, which is this group: nothing more to enter.
        scope.enter().unwrap();
        assert!(!agent.join("cgroup.procs").exists());
        for file in ["memory.max", "memory.swap.max", "pids.max", "cpu.max"] {
            std::fs::remove_file(agent.join(file)).unwrap();
        }
        std::fs::remove_file(base.path().join("baal-x/cgroup.subtree_control")).unwrap();
        scope.remove();
        assert!(!base.path().join("baal-x").exists());
    }

    #[test]
    fn v1_limits_get_a_group_per_hierarchy_and_no_swap() {
        let root = tempfile::tempdir().unwrap();
        let group = |c: &str| root.path().join(c).join("baal-x/agent-7");
        std::fs::create_dir_all(group("memory")).unwrap();
        std::fs::write(group("memory").join("memory.memsw.limit_in_bytes"), "9223372036854771712").unwrap();
        let mechanism = LimitMechanism::CgroupV1(root.path().to_owned());
        let scope = LimitScope::new(&mechanism, "baal-x", "agent-7", AgentLimits::new(1024, 512, 20)).unwrap();
        scope.prepare().unwrap();
        assert_eq!(read(&group("memory").join("memory.limit_in_bytes")), (1024u64 << 20).to_string());
        assert_eq!(read(&group("memory").join("memory.memsw.limit_in_bytes")), (1024u64 << 20).to_string());
        assert_eq!(read(&group("pids").join("pids.max")), "512");
        assert_eq!(read(&group("cpu").join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(&group("cpu").join("cpu.cfs_quota_us")), "20000");
        for c in ["memory", "pids", "cpu"] {
            std::fs::write(group(c).join("cgroup.procs"), "").unwrap();
        }
        scope.enter().unwrap();
        for c in ["memory", "pids", "cpu"] {
            assert_eq!(read(&group(c).join("cgroup.procs")), "0", "{c}: the agent writes itself in");
        }
    }
}
