//! A stand-in for the internet: an HTTP server in a network namespace of its own, behind a veth
//! pair, at a public-looking address that is not on the host's loopback. Tools whose network is
//! isolated must reach it (through slirp4netns) while the host's own services stay out of reach.
//!
//! Needs root and `ip` (iproute2); [`InternetStandIn::start`] says why when it cannot start.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// What the stand-in answers every request with.
pub const GREETING: &str = "hello from the internet stand-in";

/// Numbers the stand-ins of one test process apart (interface names, /30 subnets).
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A running stand-in; dropping it removes the namespace, the veth pair and the server.
pub struct InternetStandIn {
    /// Where the server listens (port 80 of an address in 198.51.100.0/24, TEST-NET-2).
    pub addr: SocketAddr,
    host_link: String,
    holder: Child,
    stop: Arc<AtomicBool>,
}

impl InternetStandIn {
    /// Starts one, or says why it cannot (not root, no `ip`, no network namespaces).
    pub fn start() -> Result<InternetStandIn, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("the internet stand-in needs root".into());
        }
        let n = (std::process::id() % 500) * 16 + NEXT.fetch_add(1, Ordering::Relaxed) % 16;
        let (host_link, far_link) = (format!("bst{n}h"), format!("bst{n}f"));
        // One /30 per stand-in: .1 on the host's side, .2 in the namespace.
        let base = 4 * (n % 64);
        let host_ip = Ipv4Addr::new(198, 51, 100, (base + 1) as u8);
        let far_ip = Ipv4Addr::new(198, 51, 100, (base + 2) as u8);
        let mut holder = Command::new("sleep");
        holder.arg("infinity").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: unshare is a system call; the child is single-threaded.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            holder.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let holder = holder.spawn().map_err(|e| format!("cannot start the namespace holder: {e}"))?;
        let stand_in =
            InternetStandIn { addr: SocketAddr::new(far_ip.into(), 80), host_link, holder, stop: Arc::default() };
        let pid = stand_in.holder.id().to_string();
        let _ = Command::new("ip").args(["link", "del", &stand_in.host_link]).stderr(Stdio::null()).status();
        ip(&["link", "add", &stand_in.host_link, "type", "veth", "peer", "name", &far_link, "netns", &pid])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &stand_in.host_link])?;
        ip(&["link", "set", &stand_in.host_link, "up"])?;
        let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| e.to_string())?;
        let in_namespace = |args: &[&str]| {
            let mut command = Command::new("ip");
            command.args(args);
            let fd = netns.as_raw_fd();
            // SAFETY: setns is a system call on a descriptor open for the child's start.
            unsafe {
                use std::os::unix::process::CommandExt as _;
                command.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            run(command)
        };
        in_namespace(&["addr", "add", &format!("{far_ip}/30"), "dev", &far_link])?;
        in_namespace(&["link", "set", &far_link, "up"])?;
        in_namespace(&["link", "set", "lo", "up"])?;
        in_namespace(&["route", "add", "default", "via", &host_ip.to_string()])?;
        let listener = std::thread::spawn({
            let addr = stand_in.addr;
            move || -> Result<TcpListener, String> {
                // SAFETY: setns on this thread only, with a descriptor open for the call.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error().to_string());
                }
                TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))
            }
        })
        .join()
        .map_err(|_| "the listener thread panicked".to_owned())??;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let stop = stand_in.stop.clone();
        std::thread::spawn(move || serve(listener, stop));
        Ok(stand_in)
    }
}

impl Drop for InternetStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).stderr(Stdio::null()).status();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn serve(listener: TcpListener, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{GREETING}",
                    GREETING.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let mut command = Command::new("ip");
    command.args(args);
    run(command)
}

fn run(mut command: Command) -> Result<(), String> {
    let output = command.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}
