//! The state machine: Startup until the pipe is full, Drain, then the ProbeBW gain cycle,
//! with a ProbeRTT episode whenever the min-RTT estimate expires.

use std::time::{Duration, Instant};

use super::{Bbr, HIGH_GAIN, INITIAL_RTT};

/// Drain gain: the inverse of the Startup gain, to empty the queue Startup built in a round.
const DRAIN_GAIN: f64 = std::f64::consts::LN_2 / 2.0;
/// ProbeBW cwnd gain: room for delayed and aggregated ACKs.
pub(super) const PROBE_BW_CWND_GAIN: f64 = 2.0;
/// ProbeBW gain cycle, one phase per min_rtt: probe up at 1.25, drain the probe's queue at
/// 0.75, then cruise at 1.0 for six phases...
const PROBE_UP_GAIN: f64 = 1.25;
const PROBE_DOWN_GAIN: f64 = 0.75;
const CRUISE_PHASES: u64 = 6;
/// ...give or take one, chosen by a deterministic generator fed with the flow's RTT samples,
/// so that flows with equal RTTs do not stay locked in the same phase (which stalls their
/// convergence to a fair share).
const CRUISE_JITTER: u64 = 1;
/// Time to hold the window at the ProbeRTT window.
const PROBE_RTT_DURATION: Duration = Duration::from_millis(200);
/// Startup continues while the bandwidth grows by this factor per round...
const STARTUP_GROWTH: f64 = 1.25;
/// ...and is considered full after this many rounds without such growth.
const STARTUP_FULL_ROUNDS: u32 = 3;

/// BBR state machine modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Exponential search for the bottleneck bandwidth.
    Startup,
    /// Drains the queue Startup built.
    Drain,
    /// Steady state: cycles the pacing gain around 1.0 to probe for more bandwidth.
    ProbeBw,
    /// Briefly shrinks the window to re-measure the propagation RTT.
    ProbeRtt,
}

/// ProbeBW gain-cycle phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Pacing gain 1.25: look for more bandwidth.
    Up,
    /// Pacing gain 0.75: drain the queue the probe built.
    Down,
    /// Pacing gain 1.0.
    Cruise,
}

/// Startup's test for a full pipe: bandwidth at the last 25% growth and rounds since.
#[derive(Debug, Default)]
pub(super) struct Startup {
    full_bw: u64,
    full_bw_count: u32,
}

/// ProbeBW gain-cycle position, cruise phases left, and when the phase was entered.
#[derive(Debug)]
pub(super) struct GainCycle {
    phase: Phase,
    cruise_left: u64,
    stamp: Option<Instant>,
    /// Deterministic pseudo-random state, mixed with every RTT sample.
    pub(super) jitter: u64,
}

impl GainCycle {
    pub(super) fn new() -> Self {
        Self {
            phase: Phase::Cruise,
            cruise_left: CRUISE_PHASES,
            stamp: None,
            jitter: 0x243F_6A88_85A3_08D3,
        }
    }

    /// The phase's name, for traces.
    pub(super) fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Up => "probe-bw-up",
            Phase::Down => "probe-bw-down",
            Phase::Cruise => "probe-bw-cruise",
        }
    }

    /// Mixes an input into the deterministic generator.
    pub(super) fn mix_jitter(&mut self, value: u64) {
        self.jitter = (self.jitter ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.jitter ^= self.jitter >> 29;
    }

    fn next_jitter(&mut self) -> u64 {
        self.mix_jitter(0x2545_F491_4F6C_DD1D);
        self.jitter >> 32
    }
}

/// A ProbeRTT episode.
#[derive(Debug)]
pub(super) struct ProbeRtt {
    /// ProbeRTT ends at this time, once at least one round passed at the low window.
    done: Option<Instant>,
    round_done: bool,
    /// Window to restore after ProbeRTT.
    pub(super) prior_cwnd: u64,
}

impl ProbeRtt {
    pub(super) fn new(cwnd: u64) -> Self {
        Self {
            done: None,
            round_done: false,
            prior_cwnd: cwnd,
        }
    }

    /// Persistent congestion: an episode in progress starts its timer again.
    pub(super) fn cancel(&mut self) {
        self.done = None;
    }
}

impl Bbr {
    pub(super) fn enter_startup(&mut self) {
        self.mode = Mode::Startup;
        self.queue.lift_cap();
        self.pacing_gain = HIGH_GAIN;
        self.cwnd_gain = HIGH_GAIN;
    }

    pub(super) fn enter_drain(&mut self) {
        self.mode = Mode::Drain;
        self.pacing_gain = DRAIN_GAIN;
        self.cwnd_gain = HIGH_GAIN;
    }

    pub(super) fn enter_probe_bw(&mut self, now: Instant) {
        self.mode = Mode::ProbeBw;
        self.cwnd_gain = PROBE_BW_CWND_GAIN;
        // v1 starts at a random phase other than Down so that competing flows do not probe
        // in lockstep; the generator here is deterministic.
        let pick = self.cycle.next_jitter() % (CRUISE_PHASES + 1);
        if pick == 0 {
            self.set_phase(now, Phase::Up);
        } else {
            self.set_phase(now, Phase::Cruise);
            self.cycle.cruise_left = pick;
        }
    }

    fn set_phase(&mut self, now: Instant, phase: Phase) {
        self.cycle.phase = phase;
        self.cycle.stamp = Some(now);
        self.pacing_gain = match phase {
            Phase::Up => PROBE_UP_GAIN,
            Phase::Down => PROBE_DOWN_GAIN,
            Phase::Cruise => 1.0,
        };
    }

    fn enter_probe_rtt(&mut self) {
        self.mode = Mode::ProbeRtt;
        self.pacing_gain = 1.0;
        self.cwnd_gain = 1.0;
        self.probe_rtt.prior_cwnd = self.cwnd;
        self.probe_rtt.done = None;
        self.probe_rtt.round_done = false;
    }

    fn exit_probe_rtt(&mut self, now: Instant) {
        self.model.min_rtt_stamp = Some(now);
        self.cwnd = self.cwnd.max(self.probe_rtt.prior_cwnd);
        if self.filled_pipe {
            self.enter_probe_bw(now);
        } else {
            self.enter_startup();
        }
    }

    pub(super) fn check_full_pipe(&mut self, app_limited_sample: bool) {
        if self.filled_pipe || !self.model.round_start {
            return;
        }
        if self.queue.stood_last_round() {
            // A queue stood for a whole round: the pipe is full (HyStart-style), whether the
            // bottleneck is ours alone or shared with a flow that got there first.
            self.filled_pipe = true;
            return;
        }
        if app_limited_sample {
            return;
        }
        let bw = self.model.bw();
        let s = &mut self.startup;
        if bw as f64 >= s.full_bw as f64 * STARTUP_GROWTH {
            s.full_bw = bw;
            s.full_bw_count = 0;
            return;
        }
        s.full_bw_count = s.full_bw_count.saturating_add(1);
        if s.full_bw_count >= STARTUP_FULL_ROUNDS {
            self.filled_pipe = true;
        }
    }

    pub(super) fn update_cycle_phase(&mut self, now: Instant, prior_inflight: u64) {
        if self.mode != Mode::ProbeBw {
            return;
        }
        let phase_len = self
            .model
            .min_rtt
            .or(self.model.smoothed_rtt)
            .unwrap_or(INITIAL_RTT);
        let full_length = self
            .cycle
            .stamp
            .map_or(Duration::MAX, |s| now.saturating_duration_since(s))
            > phase_len;
        match self.cycle.phase {
            // Probe up until the queue is built (or losses say it overflowed).
            Phase::Up => {
                if full_length
                    && (self.loss_since_ack || prior_inflight >= self.inflight(PROBE_UP_GAIN))
                {
                    self.set_phase(now, Phase::Down);
                }
            }
            // Probe down only until the probe's queue is drained.
            Phase::Down => {
                if full_length || prior_inflight <= self.inflight(1.0) {
                    self.set_phase(now, Phase::Cruise);
                    let spread = self.cycle.next_jitter() % (2 * CRUISE_JITTER + 1);
                    self.cycle.cruise_left = CRUISE_PHASES - CRUISE_JITTER + spread;
                }
            }
            Phase::Cruise => {
                if full_length {
                    self.cycle.cruise_left = self.cycle.cruise_left.saturating_sub(1);
                    if self.cycle.cruise_left == 0 {
                        self.set_phase(now, Phase::Up);
                        self.queue.restart_growth(self.model.min_rtt, self.mtu);
                    } else {
                        self.cycle.stamp = Some(now);
                    }
                }
            }
        }
    }

    /// Feeds the min-RTT filter and runs ProbeRTT: entered when the estimate expires,
    /// left once the window was held low for a round and [`PROBE_RTT_DURATION`].
    pub(super) fn update_min_rtt(&mut self, now: Instant, rtt: Option<Duration>) {
        let queue_free = self.model.min_rtt.map_or(Duration::ZERO, |m| {
            super::queue::drained_within(m, self.model.bw(), self.mtu)
        });
        let expired = self.model.update_min_rtt(now, rtt, queue_free);
        if expired && !self.idle_restart && self.mode != Mode::ProbeRtt {
            self.enter_probe_rtt();
        }
        if self.mode == Mode::ProbeRtt {
            match self.probe_rtt.done {
                None if self.bytes_in_flight <= self.probe_rtt_cwnd() => {
                    self.probe_rtt.done = Some(now.checked_add(PROBE_RTT_DURATION).unwrap_or(now));
                    self.probe_rtt.round_done = false;
                    self.model.restart_round();
                }
                None => {}
                Some(done) => {
                    if self.model.round_start {
                        self.probe_rtt.round_done = true;
                    }
                    if self.probe_rtt.round_done && now >= done {
                        self.exit_probe_rtt(now);
                    }
                }
            }
        }
    }
}
