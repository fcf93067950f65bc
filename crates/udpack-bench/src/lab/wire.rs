//! The wire: one thread per direction moves every IP packet from one TUN device to the
//! other through that direction's [`DirModel`].
//!
//! Built for rate: each thread reads until the device is empty, keeps packets in a pool
//! of fixed slots allocated once (no allocation per packet), orders them by departure
//! time in a binary heap, and sleeps precisely: `ppoll` with a 1 ns timer slack until
//! about [`SPIN`] before the next departure, then spins. The threads run at a
//! real-time priority (SCHED_FIFO) where allowed: the wire stands for the network, so
//! the endpoints' and other processes' CPU load must not delay its packets, and a
//! woken real-time thread runs at once, so a short spin is enough.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::link::{DirConfig, DirModel, DirStats, Verdict};
use super::tun;
use crate::error::{BenchError, Result};
use crate::measure::thread_cpu;

/// Bytes per slot: the devices' MTU is 1500.
const SLOT: usize = 2048;
/// Slots per direction: 64 MiB of address space, touched only as far as it is used;
/// enough for 100 ms of delay line at 2.5 Gbit/s.
const SLOTS: usize = 32 * 1024;
/// Packets read in one go before due packets are delivered again.
const BATCH: usize = 64;
/// How long before a departure the thread stops sleeping and spins.
const SPIN: Duration = Duration::from_micros(20);
/// SCHED_FIFO priority of the wire's threads.
const PRIORITY: libc::c_int = 10;
/// The longest sleep, so that the thread sees the stop flag.
const IDLE: Duration = Duration::from_millis(20);

/// A packet waiting for its departure: time (ns on the wire's clock), a sequence
/// number that keeps equal times in arrival order, its slot and length.
type Departure = Reverse<(u64, u64, u32, u16)>;

/// What a direction's thread reports when it stops.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct DirReport {
    #[serde(flatten)]
    pub stats: DirStats,
    /// CPU time of the direction's thread, in seconds.
    pub cpu_s: f64,
    /// How late packets left the wire, on average and at most, in microseconds.
    pub late_mean_us: f64,
    pub late_max_us: f64,
    /// Whether the thread got its real-time priority.
    pub realtime: bool,
}

/// The running wire; stops (and joins its threads) when stopped or dropped.
pub struct Wire {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<DirReport>>,
}

impl Wire {
    /// Starts both directions: `fds[0]` to `fds[1]` with `cfg[0]`, and back with `cfg[1]`.
    pub fn start(fds: [RawFd; 2], cfg: [DirConfig; 2], seed: u64) -> Result<Wire> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, cfg) in cfg.into_iter().enumerate() {
            let (src, dst, stop) = (fds[i], fds[1 - i], stop.clone());
            let model = DirModel::new(cfg, seed ^ (i as u64 + 1).wrapping_mul(0x5851_f42d));
            let t = std::thread::Builder::new()
                .name(format!("wire-{i}"))
                .spawn(move || Direction::new(src, dst, model).run(&stop))?;
            threads.push(t);
        }
        Ok(Wire { stop, threads })
    }

    /// Stops both threads; returns each direction's counts.
    pub fn stop(mut self) -> Result<[DirReport; 2]> {
        self.halt()
    }

    fn halt(&mut self) -> Result<[DirReport; 2]> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = [DirReport::default(); 2];
        for (i, t) in self.threads.drain(..).enumerate() {
            out[i] = t.join().map_err(|_| BenchError::ThreadPanicked("wire"))?;
        }
        Ok(out)
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// One direction's thread state.
struct Direction {
    src: RawFd,
    dst: RawFd,
    model: DirModel,
    pool: Vec<u8>,
    free: Vec<u32>,
    heap: BinaryHeap<Departure>,
    seq: u64,
    clock: Instant,
    /// Sum and maximum of the delivery delays past the departure times, in ns.
    late_sum: u64,
    late_max: u64,
}

impl Direction {
    fn new(src: RawFd, dst: RawFd, model: DirModel) -> Self {
        Direction {
            src,
            dst,
            model,
            pool: vec![0; SLOT * SLOTS],
            free: (0..SLOTS as u32).rev().collect(),
            heap: BinaryHeap::with_capacity(SLOTS),
            seq: 0,
            clock: Instant::now(),
            late_sum: 0,
            late_max: 0,
        }
    }

    fn now(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    fn slot(&mut self, i: u32) -> &mut [u8] {
        let at = i as usize * SLOT;
        &mut self.pool[at..at + SLOT]
    }

    fn run(mut self, stop: &AtomicBool) -> DirReport {
        // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        let param = libc::sched_param {
            sched_priority: PRIORITY,
        };
        // SAFETY: with pid 0, sched_setscheduler changes only the calling thread.
        let realtime = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
        while !stop.load(Ordering::Relaxed) {
            self.deliver_due();
            let more = self.read_batch();
            if !more {
                self.wait();
            }
        }
        let sent = self.model.stats.forwarded + self.model.stats.write_errors;
        DirReport {
            stats: self.model.stats,
            cpu_s: thread_cpu().as_secs_f64(),
            late_mean_us: self.late_sum as f64 / sent.max(1) as f64 / 1000.0,
            late_max_us: self.late_max as f64 / 1000.0,
            realtime,
        }
    }

    /// Writes every packet whose departure time has come.
    fn deliver_due(&mut self) {
        let now = self.now();
        while let Some(&Reverse((at, _, slot, len))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            self.late_sum += now - at;
            self.late_max = self.late_max.max(now - at);
            let dst = self.dst;
            match tun::write(dst, &self.slot(slot)[..len as usize]) {
                Ok(_) => self.model.stats.forwarded += 1,
                Err(_) => self.model.stats.write_errors += 1,
            }
            self.free.push(slot);
        }
    }

    /// Reads up to BATCH packets; true if the device may still hold more.
    fn read_batch(&mut self) -> bool {
        for _ in 0..BATCH {
            let Some(slot) = self.free.pop() else {
                return self.discard_one();
            };
            let src = self.src;
            let n = match tun::read(src, self.slot(slot)) {
                Ok(n) => n,
                Err(_) => {
                    // WouldBlock, or a device going away at the end.
                    self.free.push(slot);
                    return false;
                }
            };
            let now = self.now();
            match self.model.admit(now, n) {
                Verdict::Drop => self.free.push(slot),
                Verdict::Deliver { at, copy_at } => {
                    self.schedule(at, slot, n);
                    if let Some(copy_at) = copy_at {
                        self.schedule_copy(copy_at, slot, n);
                    }
                }
            }
        }
        true
    }

    fn schedule(&mut self, at: u64, slot: u32, len: usize) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, slot, len as u16)));
    }

    fn schedule_copy(&mut self, at: u64, slot: u32, len: usize) {
        let Some(copy) = self.free.pop() else {
            self.model.stats.pool_drops += 1;
            return;
        };
        let (from, to) = (slot as usize * SLOT, copy as usize * SLOT);
        self.pool.copy_within(from..from + len, to);
        self.schedule(at, copy, len);
    }

    /// With the pool exhausted, reads one packet into a scratch buffer and drops it;
    /// true if there was one.
    fn discard_one(&mut self) -> bool {
        let mut scratch = [0u8; SLOT];
        match tun::read(self.src, &mut scratch) {
            Ok(_) => {
                self.model.stats.pool_drops += 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Sleeps until the device is readable or the next departure is near.
    fn wait(&mut self) {
        let timeout = match self.heap.peek() {
            None => IDLE,
            Some(&Reverse((at, ..))) => {
                let left = Duration::from_nanos(at.saturating_sub(self.now()));
                if left <= SPIN {
                    std::hint::spin_loop();
                    return;
                }
                (left - SPIN).min(IDLE)
            }
        };
        let _ = poll_readable(self.src, timeout);
    }
}

/// Waits up to `timeout` for `fd` to become readable.
fn poll_readable(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask change.
    let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
