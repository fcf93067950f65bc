//! What the lab runs: its command-line options, the links they describe (both
//! directions, with per-direction overrides), and the list of scenarios of a run or of
//! the grid.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::conn::Proto;
use super::link::{DirConfig, GilbertElliott, LossAt, QueueLimit};

/// A measurement through the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Test {
    /// Bulk goodput of one flow of each protocol.
    Udpack,
    TcpBbr,
    TcpCubic,
    QuinnBbr,
    QuinnCubic,
    /// Round-trip times of small echoed messages, over udpack, TCP (Cubic) and quinn.
    Latency,
    /// One udpack flow and one TCP flow (Cubic, then BBR) at the same time.
    Fairness,
    /// Kernel TCP through the wire with no rate limit, delay or loss.
    WireMax,
}

impl Test {
    pub const BULK: [Test; 5] = [
        Test::Udpack,
        Test::TcpBbr,
        Test::TcpCubic,
        Test::QuinnBbr,
        Test::QuinnCubic,
    ];

    /// The protocol of a bulk test.
    pub fn proto(self) -> Option<Proto> {
        Some(match self {
            Test::Udpack => Proto::Udpack,
            Test::TcpBbr => Proto::TcpBbr,
            Test::TcpCubic => Proto::TcpCubic,
            Test::QuinnBbr => Proto::QuinnBbr,
            Test::QuinnCubic => Proto::QuinnCubic,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Test::Latency => "latency",
            Test::Fairness => "fairness",
            Test::WireMax => "wire-max",
            bulk => bulk.proto().map_or("", Proto::name),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct LabArgs {
    /// Run the scenario table (bulk goodput at every RTT and loss, latency, fairness,
    /// a jitter case, the wire's maximum) and write JSON and plots into --out.
    #[arg(long)]
    pub grid: bool,
    /// Round-trip times in ms (half each way); the grid's default is 40,200.
    #[arg(long, value_delimiter = ',')]
    pub rtt: Vec<f64>,
    /// Random loss in %, each way; the grid's default is 0,1,2,5,10,20,30.
    #[arg(long, value_delimiter = ',')]
    pub loss: Vec<f64>,
    /// Bottleneck rate each way in Mbit/s (0: unlimited).
    #[arg(long, default_value_t = 100.0)]
    pub rate_mbit: f64,
    /// Drop-tail queue limit in ms at the rate (default: one RTT, at least 10 ms).
    #[arg(long, conflicts_with = "queue_bytes")]
    pub queue_ms: Option<f64>,
    /// Drop-tail queue limit in bytes.
    #[arg(long)]
    pub queue_bytes: Option<u64>,
    /// Uniform extra delay per packet, up to this many ms, each way (packets reorder).
    #[arg(long, default_value_t = 0.0)]
    pub jitter_ms: f64,
    /// Gilbert-Elliott bursty loss each way: P_GOOD_BAD,P_BAD_GOOD,LOSS_IN_BAD in %.
    #[arg(long, value_parser = parse_ge)]
    pub ge: Option<GilbertElliott>,
    /// Where loss strikes: before the bottleneck, or after it (a lost packet still used
    /// its share of the rate).
    #[arg(long, value_enum, default_value_t = LossAt::After)]
    pub loss_at: LossAt,
    /// Duplicated packets in %, each way.
    #[arg(long, default_value_t = 0.0)]
    pub dup: f64,
    /// Overrides for the A-to-B direction (client to server): KEY=VALUE,... with keys
    /// delay-ms, jitter-ms, loss, ge (P/P/L in %), loss-at, rate-mbit, queue-ms,
    /// queue-bytes, dup.
    #[arg(long, value_parser = parse_overrides)]
    pub a2b: Option<Overrides>,
    /// Overrides for the B-to-A direction (server to client), as --a2b.
    #[arg(long, value_parser = parse_overrides)]
    pub b2a: Option<Overrides>,
    /// Tests to run; the default is the five bulk ones (the grid: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Test>,
    /// Measurement window of each run, in seconds (after the warm-up).
    #[arg(long, default_value_t = 8.0, value_parser = positive)]
    pub duration: f64,
    /// Warm-up of each run in seconds (default: 2 s or 25 RTTs, whichever is longer:
    /// losses of the start-up overshoot must be repaired before the window opens, or the
    /// data held behind them is counted in it).
    #[arg(long, value_parser = positive)]
    pub warmup: Option<f64>,
    /// Messages per second of the latency test.
    #[arg(long, default_value_t = 100)]
    pub latency_rate: u32,
    /// Jitter of the grid's jitter case, in ms.
    #[arg(long, default_value_t = 5.0)]
    pub grid_jitter_ms: f64,
    /// Folder for results.json and the plots (the grid's default: lab-out).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the link's random losses, jitter and duplicates.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Every this many ms, udpack bulk senders print their session's state on stderr
    /// (phase, window, rates, RTTs, losses): how a run got its figure. 0: off.
    #[arg(long, default_value_t = 0)]
    pub trace_ms: u64,
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

fn percent(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v / 100.0),
        _ => Err(format!("{s:?} is not a percentage")),
    }
}

fn number(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a number >= 0")),
    }
}

/// `P_GOOD_BAD,P_BAD_GOOD,LOSS_IN_BAD` (or with `/`), each in %.
pub fn parse_ge(s: &str) -> Result<GilbertElliott, String> {
    let parts: Vec<&str> = s.split([',', '/']).collect();
    let [gb, bg, bad] = parts[..] else {
        return Err(format!("{s:?}: expected P_GOOD_BAD,P_BAD_GOOD,LOSS_IN_BAD"));
    };
    Ok(GilbertElliott {
        p_good_bad: percent(gb)?,
        p_bad_good: percent(bg)?,
        loss_bad: percent(bad)?,
    })
}

/// One direction's changes from the common settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Overrides(Vec<Override>);

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Override {
    DelayMs(f64),
    JitterMs(f64),
    Loss(f64),
    Ge(GilbertElliott),
    LossAt(LossAt),
    RateMbit(f64),
    QueueMs(f64),
    QueueBytes(u64),
    Dup(f64),
}

pub fn parse_overrides(s: &str) -> Result<Overrides, String> {
    let mut out = Vec::new();
    for item in s.split(',').filter(|i| !i.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: expected KEY=VALUE"))?;
        out.push(match key.trim() {
            "delay-ms" => Override::DelayMs(number(value)?),
            "jitter-ms" => Override::JitterMs(number(value)?),
            "loss" => Override::Loss(percent(value)?),
            "ge" => Override::Ge(parse_ge(value)?),
            "loss-at" => Override::LossAt(match value.trim() {
                "before" => LossAt::Before,
                "after" => LossAt::After,
                v => return Err(format!("loss-at {v:?}: before or after")),
            }),
            "rate-mbit" => Override::RateMbit(number(value)?),
            "queue-ms" => Override::QueueMs(number(value)?),
            "queue-bytes" => Override::QueueBytes(number(value)? as u64),
            "dup" => Override::Dup(percent(value)?),
            k => return Err(format!("unknown key {k:?}")),
        });
    }
    Ok(Overrides(out))
}

fn us(ms: f64) -> u64 {
    (ms * 1000.0).round() as u64
}

impl Overrides {
    fn apply(&self, d: &mut DirConfig) {
        for o in &self.0 {
            match *o {
                Override::DelayMs(v) => d.delay_us = us(v),
                Override::JitterMs(v) => d.jitter_us = us(v),
                Override::Loss(v) => d.loss = v,
                Override::Ge(ge) => d.gilbert = Some(ge),
                Override::LossAt(at) => d.loss_at = at,
                Override::RateMbit(v) => d.rate_bps = (v * 1e6) as u64,
                Override::QueueMs(v) => d.queue = QueueLimit::Micros(us(v)),
                Override::QueueBytes(v) => d.queue = QueueLimit::Bytes(v),
                Override::Dup(v) => d.dup = v,
            }
        }
    }
}

/// A link: the common settings of both directions and each direction's overrides.
#[derive(Clone, Debug, Serialize)]
pub struct Link {
    pub rtt_ms: f64,
    /// Random loss each way, in %.
    pub loss_pct: f64,
    pub rate_mbit: f64,
    pub jitter_ms: f64,
    /// Whether anything beyond RTT, loss, rate and jitter is set.
    pub extra: bool,
    /// The two directions as the wire runs them: A to B, then B to A.
    pub dirs: [DirConfig; 2],
}

impl Link {
    /// No rate limit, no delay, no loss: for the wire's own maximum.
    pub fn unlimited() -> Link {
        Link {
            rtt_ms: 0.0,
            loss_pct: 0.0,
            rate_mbit: 0.0,
            jitter_ms: 0.0,
            extra: false,
            dirs: [DirConfig::default(), DirConfig::default()],
        }
    }
}

/// A link and the tests to run through it.
pub struct Scenario {
    pub link: Link,
    pub tests: Vec<Test>,
    pub warmup: Duration,
}

/// The grid's defaults.
const GRID_RTT: [f64; 2] = [40.0, 200.0];
const GRID_LOSS: [f64; 7] = [0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0];

impl LabArgs {
    fn link(&self, rtt_ms: f64, loss_pct: f64, jitter_ms: f64) -> Link {
        let queue = match (self.queue_bytes, self.queue_ms) {
            (Some(b), _) => QueueLimit::Bytes(b),
            (None, Some(ms)) => QueueLimit::Micros(us(ms)),
            (None, None) => QueueLimit::Micros(us(rtt_ms.max(10.0))),
        };
        let base = DirConfig {
            delay_us: us(rtt_ms / 2.0),
            jitter_us: us(jitter_ms),
            loss: loss_pct / 100.0,
            gilbert: self.ge,
            loss_at: self.loss_at,
            rate_bps: (self.rate_mbit * 1e6) as u64,
            queue,
            dup: self.dup / 100.0,
        };
        let mut dirs = [base.clone(), base];
        for (d, o) in dirs.iter_mut().zip([&self.a2b, &self.b2a]) {
            if let Some(o) = o {
                o.apply(d);
            }
        }
        Link {
            rtt_ms,
            loss_pct,
            rate_mbit: self.rate_mbit,
            jitter_ms,
            extra: self.ge.is_some() || self.dup > 0.0 || self.a2b.is_some() || self.b2a.is_some(),
            dirs,
        }
    }

    fn warmup_for(&self, rtt_ms: f64) -> Duration {
        let auto = (rtt_ms * 25.0 / 1000.0).max(2.0);
        Duration::from_secs_f64(self.warmup.unwrap_or(auto))
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }

    fn scenario(&self, rtt: f64, loss: f64, jitter: f64, tests: Vec<Test>) -> Option<Scenario> {
        (!tests.is_empty()).then(|| Scenario {
            link: self.link(rtt, loss, jitter),
            tests,
            warmup: self.warmup_for(rtt),
        })
    }

    /// The scenarios, in the order they run.
    pub fn plan(&self) -> Vec<Scenario> {
        let pick = |v: &[f64], grid: &[f64]| {
            if !v.is_empty() {
                v.to_vec()
            } else if self.grid {
                grid.to_vec()
            } else {
                vec![grid[0]]
            }
        };
        let rtts = pick(&self.rtt, &GRID_RTT);
        let losses = pick(&self.loss, &GRID_LOSS);
        let only = |tests: &[Test]| -> Vec<Test> {
            tests
                .iter()
                .copied()
                .filter(|t| self.only.is_empty() || self.only.contains(t))
                .collect()
        };
        let mut out = Vec::new();
        if !self.grid {
            let tests = if self.only.is_empty() {
                Test::BULK.to_vec()
            } else {
                self.only.clone()
            };
            for &rtt in &rtts {
                for &loss in &losses {
                    out.extend(self.scenario(rtt, loss, self.jitter_ms, tests.clone()));
                }
            }
            return out;
        }
        // The grid: the wire's maximum once, then per RTT the bulk tests at every loss
        // (latency where loss is at most 1%, fairness at the lowest loss), then the
        // jitter case at 1% loss.
        let lowest = losses.iter().copied().fold(f64::INFINITY, f64::min);
        out.extend(self.scenario(0.0, 0.0, 0.0, only(&[Test::WireMax])));
        for &rtt in &rtts {
            for &loss in &losses {
                let mut tests = Test::BULK.to_vec();
                if loss <= 1.0 {
                    tests.push(Test::Latency);
                }
                if loss == lowest {
                    tests.push(Test::Fairness);
                }
                out.extend(self.scenario(rtt, loss, self.jitter_ms, only(&tests)));
            }
            let jitter = only(&Test::BULK);
            out.extend(self.scenario(rtt, 1.0, self.grid_jitter_ms, jitter));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        lab: LabArgs,
    }

    fn args(a: &[&str]) -> LabArgs {
        Cli::parse_from(std::iter::once("lab").chain(a.iter().copied())).lab
    }

    #[test]
    fn a_plain_run_is_the_bulk_tests_at_40_ms_without_loss() {
        let plan = args(&[]).plan();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].tests, Test::BULK);
        let d = &plan[0].link.dirs[0];
        assert_eq!((d.delay_us, d.rate_bps, d.loss), (20_000, 100_000_000, 0.0));
        assert_eq!(d.queue, QueueLimit::Micros(40_000));
        assert_eq!(plan[0].warmup, Duration::from_secs(2));
    }

    #[test]
    fn the_grid_covers_every_rtt_and_loss_and_can_be_narrowed() {
        let plan = args(&["--grid"]).plan();
        // The wire's maximum, 7 losses and a jitter case at each of 2 RTTs.
        assert_eq!(plan.len(), 1 + 2 * 8);
        let latency = plan.iter().filter(|s| s.tests.contains(&Test::Latency));
        assert_eq!(latency.count(), 4);
        let small = args(&["--grid", "--rtt", "40", "--loss", "0,5", "--only", "udpack"]).plan();
        assert_eq!(small.len(), 3);
        assert!(small.iter().all(|s| s.tests == [Test::Udpack]));
        assert_eq!(small[2].link.jitter_ms, 5.0);
    }

    #[test]
    fn overrides_change_one_direction() {
        let a = args(&[
            "--loss",
            "2",
            "--b2a",
            "loss=0,rate-mbit=10,queue-bytes=3000",
        ]);
        let link = &a.plan()[0].link;
        assert_eq!(link.dirs[0].loss, 0.02);
        assert_eq!(link.dirs[1].loss, 0.0);
        assert_eq!(link.dirs[1].rate_bps, 10_000_000);
        assert_eq!(link.dirs[1].queue, QueueLimit::Bytes(3000));
        assert!(link.extra);
        assert!(parse_overrides("speed=3").is_err());
        assert!(parse_overrides("loss=200").is_err());
    }

    #[test]
    fn gilbert_elliott_takes_three_percentages() {
        let ge = parse_ge("1,20,50").unwrap();
        assert_eq!(
            (ge.p_good_bad, ge.p_bad_good, ge.loss_bad),
            (0.01, 0.2, 0.5)
        );
        assert!(parse_ge("1,2").is_err());
    }
}
