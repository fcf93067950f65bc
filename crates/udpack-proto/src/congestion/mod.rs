//! Congestion control: the [`Controller`] trait, the default model-based controller
//! ([`Bbr`]), loss-based ones for comparison ([`NewReno`], [`Cubic`]), delivery-rate
//! sampling and the pacer that spaces packets out at the controller's rate.
//!
//! The session feeds every controller the same inputs (packets sent, acknowledged, lost),
//! so controllers are interchangeable through [`ControllerKind`].

use std::fmt::Debug;
use std::time::{Duration, Instant};

mod bbr;
mod cubic;
mod delivery_rate;
mod new_reno;
mod pacer;
mod recovery_period;

pub use bbr::Bbr;
pub use cubic::Cubic;
pub use delivery_rate::{DeliveryRate, RateSample, RateSnapshot};
pub use new_reno::NewReno;
pub use pacer::Pacer;

/// What a controller learns when an ACK frame acknowledges new packets.
#[derive(Debug, Clone)]
pub struct AckSample {
    /// Bytes of the packets newly acknowledged by this ACK frame.
    pub acked_bytes: u64,
    /// Bytes in flight after removing the newly acknowledged and lost packets.
    pub bytes_in_flight: u64,
    /// Send time of the largest newly acknowledged packet.
    pub largest_acked_sent: Instant,
    /// RTT measured from this ACK, if the largest acknowledged packet was new.
    pub latest_rtt: Option<Duration>,
    /// The delay the peer reported holding this ACK back, capped at its
    /// max_ack_delay: a sample taken from a delayed ACK overstates the path's RTT by
    /// up to that much.
    pub ack_delay: Duration,
    /// Smoothed RTT after this ACK.
    pub smoothed_rtt: Duration,
    /// Minimum RTT seen over the session.
    pub min_rtt: Duration,
    /// Delivery-rate sample from [`DeliveryRate::take_sample`], if one was produced.
    pub rate: Option<RateSample>,
}

/// What a controller learns when packets are declared lost.
#[derive(Debug, Clone)]
pub struct LossSample {
    /// Bytes of the packets declared lost.
    pub lost_bytes: u64,
    /// Send time of the most recently sent packet among those lost.
    pub largest_lost_sent: Instant,
    /// Bytes in flight after removing the lost packets.
    pub bytes_in_flight: u64,
    /// True when the loss spans more than a persistent-congestion period (RFC 9002 §7.6).
    pub persistent: bool,
}

/// A congestion controller: decides how many bytes may be in flight and how fast to pace.
pub trait Controller: Send + Debug {
    /// A packet of `bytes` that counts toward bytes in flight was sent.
    /// `bytes_in_flight` includes it.
    fn on_sent(&mut self, now: Instant, bytes: u64, bytes_in_flight: u64);
    /// An ACK frame newly acknowledged packets.
    fn on_ack(&mut self, now: Instant, ack: &AckSample);
    /// Packets were declared lost.
    fn on_loss(&mut self, now: Instant, loss: &LossSample);
    /// Packets declared lost were acknowledged after all (the path reordered them):
    /// undo what [`Controller::on_loss`] did for them. `loss` describes those packets.
    fn on_spurious_loss(&mut self, _now: Instant, _loss: &LossSample) {}
    /// The path's datagram size changed (path MTU discovery): windows counted in
    /// packets (the initial, the minimum, each step of growth) follow it.
    fn on_mtu_change(&mut self, mtu: u16);
    /// The sender had nothing to send although the window allowed it.
    fn on_app_limited(&mut self, _bytes_in_flight: u64) {}
    /// Congestion window in bytes.
    fn window(&self) -> u64;
    /// Pacing rate in bytes per second; `None` lets the pacer derive one from the window.
    fn pacing_rate(&self) -> Option<u64>;
    /// Short name for logs and stats ("bbr", "newreno", "cubic").
    fn name(&self) -> &'static str;
    /// The controller's current phase, for traces ("startup", "probe-bw-up", ...);
    /// controllers without named phases give their name.
    fn phase(&self) -> &'static str {
        self.name()
    }
    /// True while the controller judges that it shares the bottleneck with a flow that
    /// does not yield to the queue (BBR's competing mode, PROTOCOL.md §7.2), for traces.
    fn competing(&self) -> bool {
        false
    }
}

/// Which congestion controller a session uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControllerKind {
    /// Model-based: bottleneck bandwidth and min RTT; random loss is not read as congestion.
    #[default]
    Bbr,
    /// Loss-based (RFC 9002 NewReno), for comparison.
    NewReno,
    /// Loss-based (RFC 9438 CUBIC, Linux TCP's default), for comparison: what a
    /// udpack flow meets beside TCP on real links.
    Cubic,
}

impl ControllerKind {
    /// Builds a controller for packets of at most `mtu` bytes.
    pub fn build(self, mtu: u16) -> Box<dyn Controller> {
        match self {
            ControllerKind::Bbr => Box::new(Bbr::new(mtu)),
            ControllerKind::NewReno => Box::new(NewReno::new(mtu)),
            ControllerKind::Cubic => Box::new(Cubic::new(mtu)),
        }
    }
}

/// Samples for the controllers' unit tests: an RTT of 50 ms throughout.
#[cfg(test)]
mod samples {
    use std::time::{Duration, Instant};

    use super::{AckSample, LossSample};

    /// An ACK of `bytes`, the largest acknowledged packet sent at `sent`.
    pub fn ack(bytes: u64, sent: Instant) -> AckSample {
        let rtt = Duration::from_millis(50);
        AckSample {
            acked_bytes: bytes,
            bytes_in_flight: 0,
            largest_acked_sent: sent,
            latest_rtt: Some(rtt),
            ack_delay: Duration::ZERO,
            smoothed_rtt: rtt,
            min_rtt: rtt,
            rate: None,
        }
    }

    /// A loss of `bytes`, the last of them sent at `sent`.
    pub fn loss(bytes: u64, sent: Instant, persistent: bool) -> LossSample {
        LossSample {
            lost_bytes: bytes,
            largest_lost_sent: sent,
            bytes_in_flight: 0,
            persistent,
        }
    }
}
