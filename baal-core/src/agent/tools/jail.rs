//! Where a tool process runs: namespaces of its own, entered between fork and exec.
//!
//! Every `bash` call gets a mount namespace (the agent's scratch directory on `/tmp`, a fresh
//! `/dev/shm`) and a PID namespace whose first process is bash itself, so everything the call
//! started (`setsid` and daemons included) dies when bash ends or is killed. Its network is one of:
//!
//! - the agent's own (`TOOLS_NETWORK=host`, the default: an Aleph VM is the agent's alone);
//! - as root, one network namespace per agent, reaching out through slirp4netns with the host's
//!   loopback disabled and an nftables deny list for loopback, private, CGNAT, link-local and
//!   metadata ranges and the host's own addresses (`isolated`); the tools, switched to their own
//!   uid, hold no capability in it and cannot change the list;
//! - an empty namespace, with no IP network at all (`none`, or `isolated` where slirp4netns or nft
//!   is missing, or when the agent is not root: then the namespace is made per call inside a user
//!   namespace, which is also the tools' identity).
//!
//! Where no namespace can be made (unprivileged and user namespaces refused), tools run without
//! this layer; with `isolated` or `none` their Landlock domain then refuses every TCP connect.
//!
//! The plumbing is written against the system calls rather than through a sandbox crate: hakoniwa
//! (the closest fit) runs the whole child itself, where the agent needs the namespaces entered in
//! its own `pre_exec` beside the uid switch, rlimits and Landlock it already applies there.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use crate::agent_env::ToolsNetwork;

/// What tool processes can reach, as it turned out on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The agent's own network.
    Host,
    /// Public addresses only, through slirp4netns and the deny list.
    Public,
    /// Nothing: the reason is shown to the model when a command fails.
    Nothing(String),
}

/// Size of the fresh `/dev/shm` of each call: enough for Python's multiprocessing, not a disk.
const SHM_OPTIONS: &std::ffi::CStr = c"size=64m,mode=1777";
/// The network slirp4netns gives the namespace, its gateway and its DNS forwarder.
const SLIRP_DNS: &str = "10.0.2.3";
/// How long slirp4netns may take to configure the namespace.
const SLIRP_READY: Duration = Duration::from_secs(5);

/// Destinations tools may never reach through slirp4netns, whatever the host's routes: loopback,
/// private, CGNAT, link-local (cloud metadata), benchmarking, multicast and reserved ranges.
const DENIED_V4: &str = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, \
                         192.0.0.0/24, 192.168.0.0/16, 198.18.0.0/15, 224.0.0.0/3";
const DENIED_V6: &str = "::/127, ::ffff:0:0/96, 64:ff9b::/96, fc00::/7, fe80::/10, ff00::/8";

/// Per-call namespaces and mounts, prepared once when the agent starts.
pub(crate) struct Jail {
    /// Make namespaces per call at all.
    active: bool,
    /// As root: the agent's tools network namespace, entered with `setns`.
    netns: Option<OwnedFd>,
    /// Not root: the user namespace's maps (`uid_map`, `gid_map` contents).
    maps: Option<(Vec<u8>, Vec<u8>)>,
    /// A fresh, empty network namespace per call.
    new_net: bool,
    /// Bind-mounted on `/tmp`.
    tmp: Option<CString>,
    /// Bind-mounted on `/etc/resolv.conf` (slirp4netns's DNS forwarder).
    resolv: Option<CString>,
    /// What tools can reach.
    pub(crate) reach: Reach,
    /// The tools network's link to the outside; killed with the agent (parent-death signal).
    _slirp: Option<KillOnDrop>,
}

impl Jail {
    /// No namespaces: tools run in the agent's own (hosts where none can be made, or an embedder
    /// that turned them off). Without a namespace, a network other than the host's is Landlock's
    /// refusal of TCP.
    pub(crate) fn off(network: ToolsNetwork) -> Jail {
        let reach = match network {
            ToolsNetwork::Host => Reach::Host,
            _ => Reach::Nothing("this agent's tools have no TCP network on this host".to_owned()),
        };
        Jail { active: false, netns: None, maps: None, new_net: false, tmp: None, resolv: None, reach, _slirp: None }
    }

    /// Works out what this host allows and prepares it: `scratch` becomes the tools' `/tmp`,
    /// `runtime_dir` holds the tools' `resolv.conf`. Never fails: what cannot be set up is logged
    /// and tools get the strictest network that remains (see the module docs).
    pub(crate) fn prepare(network: ToolsNetwork, scratch: Option<&Path>, runtime_dir: &Path) -> Jail {
        let root = rustix::process::geteuid().is_root();
        let tmp = scratch.and_then(|dir| CString::new(dir.as_os_str().as_encoded_bytes()).ok());
        let nothing = |why: &str| Reach::Nothing(why.to_owned());
        let mut jail = if root {
            let mut jail = Jail { active: true, ..Jail::off(ToolsNetwork::Host) };
            if network != ToolsNetwork::Host {
                match tools_netns(network, runtime_dir) {
                    Ok((fd, slirp, resolv, reach)) => {
                        jail.netns = Some(fd);
                        jail._slirp = slirp;
                        jail.resolv = resolv;
                        jail.reach = reach;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot make the tools' network namespace; each call gets an empty one");
                        jail.new_net = true;
                        jail.reach = nothing("this agent's tools have no network on this host");
                    }
                }
            }
            jail
        } else {
            let (uid, gid) = (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw());
            let mut jail = Jail {
                active: true,
                maps: Some((format!("{uid} {uid} 1").into_bytes(), format!("{gid} {gid} 1").into_bytes())),
                ..Jail::off(ToolsNetwork::Host)
            };
            if network != ToolsNetwork::Host {
                jail.new_net = true;
                jail.reach = nothing(
                    "this agent's tools have no network: it does not run as root, so they get an empty network namespace",
                );
            }
            jail
        };
        jail.tmp = tmp;
        match jail.try_out() {
            Ok(()) => jail,
            Err(e) => {
                tracing::warn!(error = %e, "tool processes cannot get namespaces of their own on this host; they run without them");
                Jail::off(network)
            }
        }
    }

    /// Whether namespaces are made per call.
    pub(crate) fn is_active(&self) -> bool {
        self.active
    }

    /// Runs `true` through every step a tool call takes, so a host that refuses one is found at
    /// start, not on the model's first command.
    fn try_out(&self) -> io::Result<()> {
        let program = ["/bin/true", "/usr/bin/true"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .ok_or(io::ErrorKind::NotFound)?;
        let mut command = Command::new(program);
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let jail = self as *const Jail as usize;
        // SAFETY: see `enter` and `become_init`; `self` outlives the child's start (status waits).
        unsafe {
            use std::os::unix::process::CommandExt as _;
            command.pre_exec(move || {
                let jail = &*(jail as *const Jail);
                jail.enter()?;
                jail.become_init()
            });
        }
        let status = command.status()?;
        if status.success() { Ok(()) } else { Err(io::Error::other(format!("a test process ended with {status}"))) }
    }

    /// Step one, in the child right after fork, with the agent's privileges: enters the tools'
    /// network namespace (or makes an empty one), a mount namespace with the scratch `/tmp` and a
    /// fresh `/dev/shm`, and a PID namespace for the children to come. Only system calls on data
    /// prepared before the fork: no allocation, no locks.
    pub(crate) fn enter(&self) -> io::Result<()> {
        if !self.active {
            return Ok(());
        }
        let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID;
        if self.maps.is_some() {
            flags |= libc::CLONE_NEWUSER;
        }
        if self.new_net {
            flags |= libc::CLONE_NEWNET;
        }
        // SAFETY: every call takes integers or NUL-terminated strings that live in `self`.
        unsafe {
            if let Some(netns) = &self.netns {
                check(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET))?;
            }
            check(libc::unshare(flags))?;
            if let Some((uid_map, gid_map)) = &self.maps {
                // A non-dumpable process's /proc files belong to root, which the new namespace
                // does not map, so the agent's non-dumpable flag is lifted for these writes.
                // This copy of the agent's memory stays out of reach meanwhile: Landlock lets no
                // tool ptrace (or read the memory of) a process outside its own domain.
                check(libc::prctl(libc::PR_SET_DUMPABLE, 1 as libc::c_ulong, 0, 0, 0))?;
                // Unprivileged, gid_map may only be written once setgroups is denied.
                let written = write_file(c"/proc/self/setgroups", b"deny")
                    .and_then(|()| write_file(c"/proc/self/uid_map", uid_map))
                    .and_then(|()| write_file(c"/proc/self/gid_map", gid_map));
                check(libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0))?;
                written?;
            }
            if self.new_net {
                // The namespace's own loopback, for programs that talk to themselves; failing
                // to raise it costs them only that.
                let _ = loopback_up();
            }
            // Nothing mounted here may propagate back to the host.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            // Before /tmp is covered: the file may live under it.
            if let Some(resolv) = &self.resolv {
                check(libc::mount(
                    resolv.as_ptr(),
                    c"/etc/resolv.conf".as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
            if let Some(tmp) = &self.tmp {
                check(libc::mount(tmp.as_ptr(), c"/tmp".as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()))?;
            }
            check(libc::mount(
                c"tmpfs".as_ptr(),
                c"/dev/shm".as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                SHM_OPTIONS.as_ptr().cast(),
            ))?;
        }
        Ok(())
    }

    /// Step two: forks the PID namespace's first process, which returns here and goes on to exec
    /// the tool; this process stays behind as its stand-in for the agent (same exit status, same
    /// process group) and never returns. When the first process dies, the kernel kills every
    /// other process of the namespace.
    pub(crate) fn become_init(&self) -> io::Result<()> {
        if !self.active {
            return Ok(());
        }
        // SAFETY: fork in a single-threaded child; both sides only make system calls after it.
        unsafe {
            let pid = libc::fork();
            if pid < 0 {
                return Err(io::Error::last_os_error());
            }
            if pid == 0 {
                // No /proc of the namespace's own: Landlock's rule for /proc names the host's
                // mount, so a fresh one would be unreadable to the tools. The host's stays, its
                // other processes guarded by their uids, non-dumpable agents and Landlock's ptrace
                // rule.
                return Ok(());
            }
            stand_in(pid)
        }
    }
}

/// The stand-in's life: waits for the namespace's first process and ends the same way.
///
/// # Safety
/// Only in a forked child, which this never returns to.
unsafe fn stand_in(child: libc::pid_t) -> ! {
    // SAFETY: system calls on our own descriptors and child.
    unsafe {
        // std's spawn reads a close-on-exec pipe until the exec; this process never execs, so it
        // lets go of it (and of the output pipes) or spawn would wait for the whole command.
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..1024 {
                libc::close(fd);
            }
        }
        let mut status = 0;
        while libc::waitpid(child, &mut status, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Writes `data` to `path` with open, write and close alone.
///
/// # Safety
/// Only system calls; safe between fork and exec.
unsafe fn write_file(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: valid path and buffer for the duration of the calls.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let written = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        if written != data.len() as isize {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises `lo` in the calling thread's network namespace (SIOCSIFFLAGS on a datagram socket:
/// system calls only, so it also runs between fork and exec).
fn loopback_up() -> io::Result<()> {
    // SAFETY: a zeroed ifreq is valid; the name is NUL-terminated; the socket is closed.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut rc = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut req);
        }
        let err = io::Error::last_os_error();
        libc::close(sock);
        if rc != 0 { Err(err) } else { Ok(()) }
    }
}

/// A child that is killed when this handle goes (the agent shutting down).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type ToolsNetns = (OwnedFd, Option<KillOnDrop>, Option<CString>, Reach);

/// As root: the agent's tools network namespace, with its deny list and, where slirp4netns and
/// nft are installed and `network` is `isolated`, a way out to public addresses.
fn tools_netns(network: ToolsNetwork, runtime_dir: &Path) -> io::Result<ToolsNetns> {
    let host = host_addresses();
    let fd = new_netns()?;
    let nothing = |why: &str| Reach::Nothing(why.to_owned());
    if network == ToolsNetwork::None {
        return Ok((fd, None, None, nothing("this agent's tools have no network (TOOLS_NETWORK=none)")));
    }
    let (Some(slirp), Some(nft)) = (find_program("slirp4netns"), find_program("nft")) else {
        tracing::warn!(
            "slirp4netns or nft is not installed: this agent's tools get no network (apt-get install slirp4netns nftables)"
        );
        return Ok((
            fd,
            None,
            None,
            nothing("this agent's tools have no network: slirp4netns or nft is not installed on the host"),
        ));
    };
    // The deny list goes in before the namespace has any way out.
    run_in_netns(&nft, &["-f", "-"], &fd, deny_list(&host).as_bytes())?;
    let child = start_slirp(&slirp, &fd)?;
    let resolv = runtime_dir.join("tools-resolv.conf");
    std::fs::write(&resolv, format!("nameserver {SLIRP_DNS}\n"))?;
    restrict_to_readable(&resolv)?;
    let resolv = CString::new(resolv.into_os_string().into_encoded_bytes()).map_err(io::Error::other)?;
    Ok((fd, Some(child), Some(resolv), Reach::Public))
}

fn restrict_to_readable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

/// A new network namespace, made on a short-lived thread (namespaces are per thread; the agent's
/// own threads keep the host network) and kept alive by the descriptor.
fn new_netns() -> io::Result<OwnedFd> {
    std::thread::spawn(|| -> io::Result<OwnedFd> {
        // SAFETY: unshare on this thread only; the path is NUL-terminated.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNET))?;
            let _ = loopback_up();
            let fd = libc::open(c"/proc/thread-self/ns/net".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(OwnedFd::from_raw_fd(fd))
        }
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// Runs `program args` inside the namespace `netns` with `input` on stdin, and waits for it.
fn run_in_netns(program: &Path, args: &[&str], netns: &OwnedFd, input: &[u8]) -> io::Result<()> {
    let raw = netns.as_raw_fd();
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    // SAFETY: setns is a system call on a descriptor that stays open while the child starts.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        command.pre_exec(move || check(libc::setns(raw, libc::CLONE_NEWNET)));
    }
    let mut child = command.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    let output = child.wait_with_output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{} failed ({}): {}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Starts slirp4netns on `netns` and waits until it has configured the namespace. It cannot
/// reach the host's loopback (`--disable-host-loopback`), runs in a sandbox of its own (it parses
/// packets the tools write) and dies with the agent.
fn start_slirp(program: &Path, netns: &OwnedFd) -> io::Result<KillOnDrop> {
    const NETNS_FD: RawFd = 3;
    const READY_FD: RawFd = 4;
    let mut pipe = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    check(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors were just made and are owned here alone.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let (ns_raw, ready_raw) = (netns.as_raw_fd(), write_end.as_raw_fd());
    let mut command = Command::new(program);
    command
        .args(["--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp"])
        .arg(format!("--ready-fd={READY_FD}"))
        .args(["--netns-type=path", "/proc/self/fd/3", "tap0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: dup2 and prctl only; the descriptors stay open in this process while it starts.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        command.pre_exec(move || {
            // dup2 clears close-on-exec on the copies, which is how slirp4netns gets them.
            check(libc::dup2(ns_raw, NETNS_FD))?;
            check(libc::dup2(ready_raw, READY_FD))?;
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
    let child = KillOnDrop(command.spawn()?);
    drop(write_end);
    // SAFETY: poll on one valid descriptor.
    let ready = unsafe {
        let mut poll = libc::pollfd { fd: read_end.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        libc::poll(&mut poll, 1, SLIRP_READY.as_millis() as libc::c_int) == 1
    };
    let mut byte = [0u8; 1];
    if !ready || std::fs::File::from(read_end).read(&mut byte)? != 1 {
        return Err(io::Error::other("slirp4netns did not configure the tools' network"));
    }
    Ok(child)
}

/// The nftables ruleset of the tools' namespace: its own loopback and slirp4netns's DNS
/// forwarder allowed, every range in [`DENIED_V4`]/[`DENIED_V6`] and the host's own addresses
/// refused at once (a refused connection, not a silent timeout).
fn deny_list(host: &[IpAddr]) -> String {
    let mut rules = format!(
        "table inet baal_tools {{\n  chain output {{\n    type filter hook output priority filter; policy accept;\n    \
         oifname \"lo\" accept\n    ip daddr {SLIRP_DNS} meta l4proto {{ tcp, udp }} th dport 53 accept\n    \
         ip daddr {{ {DENIED_V4} }} reject\n    ip6 daddr {{ {DENIED_V6} }} reject\n"
    );
    // One rule per address: an address inside a denied range would make a set's intervals overlap.
    for addr in host {
        let family = if addr.is_ipv4() { "ip" } else { "ip6" };
        rules.push_str(&format!("    {family} daddr {addr} reject\n"));
    }
    rules.push_str("  }\n}\n");
    rules
}

/// Every address of the host's interfaces (getifaddrs; a few lines where a crate would add a
/// dependency for it).
fn host_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates the list, read here and freed with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut entry = list;
        while !entry.is_null() {
            let addr = (*entry).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(addr as *const libc::sockaddr_in);
                        found.push(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(addr as *const libc::sockaddr_in6);
                        found.push(IpAddr::from(v6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            entry = (*entry).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found.sort();
    found.dedup();
    found
}

/// `name` on `PATH`, or in the system directories root's programs live in (an agent's `PATH`
/// may lack the `sbin` ones, where `nft` is).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deny_list_refuses_the_hosts_addresses_one_by_one() {
        let rules = deny_list(&["192.0.2.2".parse().unwrap(), "fd00::2".parse().unwrap()]);
        assert!(rules.contains("ip daddr 192.0.2.2 reject"), "{rules}");
        assert!(rules.contains("ip6 daddr fd00::2 reject"), "{rules}");
        assert!(rules.contains("169.254.0.0/16") && rules.contains("127.0.0.0/8"), "{rules}");
        let dns = rules.find(SLIRP_DNS).unwrap();
        assert!(dns < rules.find("10.0.0.0/8").unwrap(), "the DNS forwarder is allowed before 10/8 is refused");
    }
}
