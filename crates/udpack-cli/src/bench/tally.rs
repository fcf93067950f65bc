//! From counters to figures: the client marks what both sides had counted each time a
//! server report arrives, and each pair of marks gives an interval per direction; the
//! last mark gives the summary.

use std::time::Duration;

use super::latency::Percentiles;
use super::report::{mbps, Direction, Interval, MessageFigures, Side, Summary, Transport};
use super::spec::{Mode, Spec};
use super::wire::{Figures, Report};

/// A gap shorter than this gives no interval of its own: its bytes go to the next one
/// (or, at the end, only to the summary), so that a late report does not show as a
/// burst of absurd rates.
const SHORTEST: Duration = Duration::from_millis(100);

/// What both sides had counted at one moment.
#[derive(Debug, Clone, Default)]
pub struct Mark {
    /// Since the start, on the client's clock.
    pub at: Duration,
    /// The server's latest report.
    pub server: Report,
    /// Bytes the client read on download streams.
    pub downloaded: u64,
    /// When the last of them arrived, since the start.
    pub last_download: Duration,
    /// The client's session.
    pub client: Figures,
    /// Messages sent and echoed so far.
    pub sent: u64,
    pub echoed: u64,
    /// Round trips since the previous mark.
    pub round_trips: Percentiles,
}

/// Sums for the averages of one direction.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    n: u64,
    srtt_ms: f64,
    cwnd: f64,
}

/// The intervals so far, and what the summary needs.
#[derive(Debug)]
pub struct Tally {
    spec: Spec,
    first: Mark,
    prev: Mark,
    intervals: Vec<Interval>,
    sums: [Sums; 3],
}

impl Tally {
    pub fn new(spec: Spec, first: Mark) -> Self {
        Tally {
            spec,
            prev: first.clone(),
            first,
            intervals: Vec::new(),
            sums: [Sums::default(); 3],
        }
    }

    fn directions(&self) -> Vec<Direction> {
        match self.spec.mode {
            Mode::Upload => vec![Direction::Upload],
            Mode::Download => vec![Direction::Download],
            Mode::Bidir => vec![Direction::Upload, Direction::Download],
            Mode::Messages => vec![Direction::Messages],
        }
    }

    /// The intervals from the previous mark to `mark`, one per direction.
    pub fn push(&mut self, mark: Mark) -> Vec<Interval> {
        if mark.at.saturating_sub(self.prev.at) < SHORTEST {
            return Vec::new();
        }
        let new: Vec<Interval> = self
            .directions()
            .into_iter()
            .map(|d| self.interval(d, &mark))
            .collect();
        for i in &new {
            let s = &mut self.sums[i.direction as usize];
            s.n += 1;
            s.srtt_ms += i.transport.smoothed_rtt_ms;
            s.cwnd += i.transport.cwnd_bytes as f64;
        }
        self.intervals.extend(new.iter().cloned());
        self.prev = mark;
        new
    }

    fn interval(&self, direction: Direction, cur: &Mark) -> Interval {
        let prev = &self.prev;
        let client_secs = cur.at.saturating_sub(prev.at).as_secs_f64();
        let (bytes, secs, by, transport) = match direction {
            Direction::Upload => (
                cur.server.received.saturating_sub(prev.server.received),
                cur.server.elapsed_us.saturating_sub(prev.server.elapsed_us) as f64 / 1e6,
                Side::Server,
                transport(&prev.client, &cur.client, Side::Client),
            ),
            Direction::Download => (
                cur.downloaded.saturating_sub(prev.downloaded),
                client_secs,
                Side::Client,
                transport(&prev.server.figures, &cur.server.figures, Side::Server),
            ),
            Direction::Messages => (
                cur.echoed.saturating_sub(prev.echoed) * u64::from(self.spec.size),
                client_secs,
                Side::Client,
                transport(&prev.client, &cur.client, Side::Client),
            ),
        };
        Interval {
            direction,
            start_s: prev.at.as_secs_f64(),
            end_s: cur.at.as_secs_f64(),
            bytes,
            goodput_mbps: mbps(bytes, secs),
            goodput_measured_by: by,
            transport,
            messages: (direction == Direction::Messages).then(|| MessageFigures {
                sent: cur.sent.saturating_sub(prev.sent),
                echoed: cur.echoed.saturating_sub(prev.echoed),
                size: self.spec.size,
                round_trip: cur.round_trips,
            }),
        }
    }

    /// Adds the last mark; returns every interval and the summary per direction.
    /// `round_trips` covers the whole messages test.
    pub fn finish(mut self, last: Mark, round_trips: Percentiles) -> (Vec<Interval>, Vec<Summary>) {
        self.push(last.clone());
        let summary = self
            .directions()
            .into_iter()
            .map(|d| self.summary(d, &last, round_trips))
            .collect();
        (self.intervals, summary)
    }

    fn summary(&self, direction: Direction, last: &Mark, round_trips: Percentiles) -> Summary {
        let first = &self.first;
        let (bytes, secs, by, mut transport) = match direction {
            Direction::Upload => {
                let secs = match last.server.last_byte_us {
                    0 => last.server.elapsed_us,
                    t => t,
                };
                (
                    last.server.received,
                    secs as f64 / 1e6,
                    Side::Server,
                    transport(&first.client, &last.client, Side::Client),
                )
            }
            Direction::Download => (
                last.downloaded,
                last.last_download.as_secs_f64(),
                Side::Client,
                transport(&first.server.figures, &last.server.figures, Side::Server),
            ),
            Direction::Messages => (
                last.echoed * u64::from(self.spec.size),
                last.at.as_secs_f64(),
                Side::Client,
                transport(&first.client, &last.client, Side::Client),
            ),
        };
        let sums = self.sums[direction as usize];
        if sums.n > 0 {
            transport.smoothed_rtt_ms = sums.srtt_ms / sums.n as f64;
            transport.cwnd_bytes = (sums.cwnd / sums.n as f64) as u64;
        }
        Summary {
            direction,
            seconds: secs,
            bytes,
            goodput_mbps: mbps(bytes, secs),
            goodput_measured_by: by,
            transport,
            messages: (direction == Direction::Messages).then_some(MessageFigures {
                sent: last.sent,
                echoed: last.echoed,
                size: self.spec.size,
                round_trip: round_trips,
            }),
        }
    }
}

/// The sender's figures between two snapshots of its session.
fn transport(prev: &Figures, cur: &Figures, by: Side) -> Transport {
    Transport {
        measured_by: by,
        smoothed_rtt_ms: cur.smoothed_rtt_us as f64 / 1000.0,
        min_rtt_ms: cur.min_rtt_us as f64 / 1000.0,
        packets_lost: cur.packets_lost.saturating_sub(prev.packets_lost),
        bytes_retransmitted: cur
            .bytes_retransmitted
            .saturating_sub(prev.bytes_retransmitted),
        cwnd_bytes: cur.congestion_window,
        datagram_size: cur.datagram_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(at_ms: u64, server_received: u64, downloaded: u64, lost: u64) -> Mark {
        Mark {
            at: Duration::from_millis(at_ms),
            server: Report {
                elapsed_us: at_ms * 1000,
                received: server_received,
                last_byte_us: at_ms * 1000,
                figures: Figures {
                    packets_lost: lost * 10,
                    congestion_window: 2000,
                    ..Figures::default()
                },
                ..Report::default()
            },
            downloaded,
            last_download: Duration::from_millis(at_ms),
            client: Figures {
                packets_lost: lost,
                smoothed_rtt_us: 1500,
                congestion_window: 1000,
                ..Figures::default()
            },
            ..Mark::default()
        }
    }

    #[test]
    fn each_direction_takes_its_receiver_and_its_sender() {
        let spec = Spec::new(Mode::Bidir, 2.0, 1, 1, 1).expect("spec");
        let mut t = Tally::new(spec, Mark::default());
        let lines = t.push(mark(1000, 1_000_000, 2_000_000, 1));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].direction, Direction::Upload);
        assert_eq!(lines[0].goodput_mbps, 8.0);
        assert_eq!(lines[0].goodput_measured_by, Side::Server);
        assert_eq!(lines[0].transport.measured_by, Side::Client);
        assert_eq!(lines[0].transport.packets_lost, 1);
        assert_eq!(lines[1].goodput_mbps, 16.0);
        assert_eq!(lines[1].goodput_measured_by, Side::Client);
        assert_eq!(lines[1].transport.measured_by, Side::Server);
        assert_eq!(lines[1].transport.packets_lost, 10);
        // A late report right after: no interval of its own.
        assert!(t.push(mark(1050, 1_100_000, 2_000_000, 1)).is_empty());
        let (intervals, summary) =
            t.finish(mark(2000, 3_000_000, 4_000_000, 3), Percentiles::default());
        assert_eq!(intervals.len(), 4);
        assert_eq!(intervals[2].bytes, 2_000_000);
        assert_eq!(summary.len(), 2);
        assert_eq!(summary[0].bytes, 3_000_000);
        assert_eq!(summary[0].goodput_mbps, 12.0);
        assert_eq!(summary[0].transport.packets_lost, 3);
        assert_eq!(summary[0].transport.smoothed_rtt_ms, 1.5);
        assert_eq!(summary[1].goodput_mbps, 16.0);
        assert_eq!(summary[1].transport.cwnd_bytes, 2000);
    }
}
