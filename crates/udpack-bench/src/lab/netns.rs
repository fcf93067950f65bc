//! The two network namespaces of the lab, each with one TUN device and one address,
//! and everything that removes them again: a guard that tears down on drop (normal
//! return and panic), a thread that tears down on SIGINT, SIGTERM and SIGHUP, and a
//! clean-up of whatever a crashed run left behind before each setup. A lock file keeps
//! two labs on one machine from tearing down each other's namespaces.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::tun::Tun;
use crate::error::{BenchError, Result};

/// Namespace of the clients, then of the servers.
pub const NS: [&str; 2] = ["udpl_a", "udpl_b"];
/// Each namespace's address (a benchmarking range, RFC 2544), on its TUN device.
pub const ADDR: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)];
const DEV: [&str; 2] = ["udpltun0", "udpltun1"];
const LOCK: &str = "/run/udpack-lab.lock";
/// Per-namespace settings: TCP may grow its buffers to 64 MiB (autotuning stays on),
/// and keeps no metrics from one connection to the next, so that runs are independent.
const SYSCTLS: [(&str, &str); 3] = [
    ("net/ipv4/tcp_rmem", "4096 131072 67108864"),
    ("net/ipv4/tcp_wmem", "4096 65536 67108864"),
    ("net/ipv4/tcp_no_metrics_save", "1"),
];
/// The UDP socket buffer limits, raised where the kernel allows (it caps them at the
/// host's own limits).
const SYSCTLS_BEST_EFFORT: [(&str, &str); 2] = [
    ("net/core/rmem_max", "16777216"),
    ("net/core/wmem_max", "16777216"),
];

/// Whether this process may build the lab.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn tcp_bbr_listed() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .is_ok_and(|s| s.split_whitespace().any(|cc| cc == "bbr"))
}

/// Whether the kernel has TCP BBR, after loading its module if it was missing.
pub fn tcp_bbr_available() -> bool {
    if tcp_bbr_listed() {
        return true;
    }
    let _ = Command::new("modprobe")
        .arg("tcp_bbr")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    tcp_bbr_listed()
}

/// Whether either namespace exists (a crashed run's, or ours).
pub fn any_exists() -> bool {
    NS.iter()
        .any(|ns| Path::new("/run/netns").join(ns).exists())
}

/// Deletes both namespaces; quiet if they are not there.
pub fn remove() {
    for ns in NS {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes the namespaces when dropped.
struct Teardown;

impl Drop for Teardown {
    fn drop(&mut self) {
        remove();
    }
}

/// The built lab: drop it to remove everything. Fields drop in order: the TUN devices
/// first (the kernel deletes them with their last descriptor), then the namespaces.
pub struct Netns {
    tun: [Tun; 2],
    ns: [File; 2],
    _teardown: Teardown,
    _lock: File,
}

impl Netns {
    /// Waits for the lab lock, removes stale namespaces, and builds both.
    pub fn create() -> Result<Netns> {
        let lock = File::create(LOCK)?;
        // SAFETY: flock on an open descriptor; the lock goes with the descriptor.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        remove();
        let teardown = Teardown;
        let (tun0, ns0) = build_side(0)?;
        let (tun1, ns1) = build_side(1)?;
        Ok(Netns {
            tun: [tun0, tun1],
            ns: [ns0, ns1],
            _teardown: teardown,
            _lock: lock,
        })
    }

    /// The TUN descriptors: namespace A's device, then B's.
    pub fn tun_fds(&self) -> [RawFd; 2] {
        [self.tun[0].fd(), self.tun[1].fd()]
    }

    /// A command that runs in namespace `i` (0: A, 1: B), at nice -10 (so that other
    /// jobs on the machine disturb the measured endpoints less), gets SIGKILL if this
    /// process dies, and has the signals back that this process blocks.
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let ns_fd = self.ns[i].as_raw_fd();
        let set = stop_signals();
        let mut cmd = Command::new(program);
        // SAFETY: between fork and exec the closure calls only async-signal-safe
        // functions (setns, prctl, setpriority, sigprocmask) on values copied before
        // the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // A lower priority than asked for only makes the figures noisier.
                libc::setpriority(libc::PRIO_PROCESS, 0, -10);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        cmd
    }
}

/// Builds namespace `i` with its TUN device, address, route to the peer and settings;
/// returns the device and the namespace's descriptor.
fn build_side(i: usize) -> Result<(Tun, File)> {
    let (ns, dev) = (NS[i], DEV[i]);
    ip(&["netns", "add", ns])?;
    let tun = Tun::create(dev)?;
    ip(&["link", "set", dev, "netns", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    let (me, peer) = (ADDR[i].to_string(), ADDR[1 - i].to_string());
    ip(&["-n", ns, "addr", "add", &me, "peer", &peer, "dev", dev])?;
    ip(&["-n", ns, "link", "set", dev, "mtu", "1500", "up"])?;
    let file = File::open(Path::new("/run/netns").join(ns))?;
    set_sysctls(file.as_raw_fd())?;
    Ok((tun, file))
}

/// Runs `ip ARGS`; a failure carries its command line and stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(BenchError::Command {
        command: format!("ip {}", args.join(" ")),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Writes the namespace's sysctls from a thread that enters it: `/proc/sys/net` shows
/// the settings of the namespace of the thread that opens it.
fn set_sysctls(ns_fd: RawFd) -> Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            // SAFETY: setns on a namespace descriptor changes only this thread.
            if unsafe { libc::setns(ns_fd, libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            for (key, value) in SYSCTLS {
                std::fs::write(Path::new("/proc/sys").join(key), value)?;
            }
            for (key, value) in SYSCTLS_BEST_EFFORT {
                let _ = std::fs::write(Path::new("/proc/sys").join(key), value);
            }
            Ok(())
        })
        .join()
        .map_err(|_| BenchError::ThreadPanicked("sysctl"))?
    })
}

/// SIGINT, SIGTERM and SIGHUP: the signals after which the lab removes itself.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset and sigaddset initialise and fill the set they are given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks the stop signals in this thread (and so in every thread started after) and
/// starts a thread that waits for one, removes the namespaces and exits; the children
/// die with this process (their parent-death signal). Call before any other thread.
pub fn teardown_on_signal() -> Result<()> {
    let set = stop_signals();
    // SAFETY: `set` is an initialised signal set.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc).into());
    }
    std::thread::Builder::new()
        .name("lab-signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` holds signals blocked in every thread; sigwait writes `sig`.
            unsafe { libc::sigwait(&set, &mut sig) };
            eprintln!("lab: signal {sig}, removing the namespaces");
            remove();
            std::process::exit(128 + sig);
        })?;
    Ok(())
}
