//! What the client shows: a line per direction and second, a summary line per
//! direction, or all of it as one JSON document (`--json`). Each figure says which side
//! measured it: goodput is counted by the receiving side, RTT, loss, retransmissions
//! and congestion window come from the sending side's session.

use serde::Serialize;

use super::latency::Percentiles;
use super::spec::{Mode, Spec};

/// Which side measured a figure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    #[default]
    Client,
    Server,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// What a line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client to server.
    Upload,
    /// Server to client.
    Download,
    /// Messages echoed by the server.
    Messages,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
            Direction::Messages => "messages",
        }
    }
}

/// The sending side's session figures over an interval or the whole test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Transport {
    pub measured_by: Side,
    /// At the end of the interval (a summary: the average over the intervals).
    pub smoothed_rtt_ms: f64,
    /// The smallest RTT seen so far.
    pub min_rtt_ms: f64,
    /// In the interval (a summary: in the test).
    pub packets_lost: u64,
    pub bytes_retransmitted: u64,
    /// At the end of the interval (a summary: the average over the intervals).
    pub cwnd_bytes: u64,
    /// The datagram size in use at the end (path MTU discovery).
    pub datagram_size: u64,
}

/// The messages sent and echoed in an interval or the whole test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MessageFigures {
    pub sent: u64,
    pub echoed: u64,
    /// Bytes per message.
    pub size: u32,
    /// Client to server and back, measured by the client.
    pub round_trip: Percentiles,
}

/// One direction over about a second.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interval {
    pub direction: Direction,
    /// Seconds since the test started, on the client's clock.
    pub start_s: f64,
    pub end_s: f64,
    /// Application bytes received in the interval.
    pub bytes: u64,
    pub goodput_mbps: f64,
    pub goodput_measured_by: Side,
    pub transport: Transport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<MessageFigures>,
}

/// One direction over the whole test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub direction: Direction,
    /// From the start to the last byte received.
    pub seconds: f64,
    pub bytes: u64,
    pub goodput_mbps: f64,
    pub goodput_measured_by: Side,
    pub transport: Transport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<MessageFigures>,
}

/// Everything a run measured: the `--json` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub server: String,
    pub mode: Mode,
    pub duration_s: f64,
    pub streams: u32,
    pub intervals: Vec<Interval>,
    pub summary: Vec<Summary>,
}

/// Megabits per second.
pub fn mbps(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 * 8.0 / 1e6 / secs
    } else {
        0.0
    }
}

/// The line before the intervals: what runs, and who measures what.
pub fn header(server: &str, spec: &Spec) -> String {
    let what = match spec.mode {
        Mode::Messages => format!(
            "{} messages/s of {} B on {} stream(s), echoed by the server",
            spec.rate, spec.size, spec.streams
        ),
        mode => format!("{} on {} stream(s)", mode.name(), spec.streams),
    };
    let who = match spec.mode {
        Mode::Messages => "round trips measured by the client; rtt, loss, retx and cwnd from the client's session",
        _ => "goodput measured by the receiver (upload: server, download: client); rtt, loss, retx and cwnd from the sender's session",
    };
    format!(
        "bench {server}: {what} for {:.1} s; {who}",
        spec.duration.as_secs_f64()
    )
}

fn transport(t: &Transport) -> String {
    format!(
        "rtt {:.2} ms (min {:.2})  lost {}  retx {}  cwnd {}",
        t.smoothed_rtt_ms,
        t.min_rtt_ms,
        t.packets_lost,
        size(t.bytes_retransmitted),
        size(t.cwnd_bytes)
    )
}

fn round_trip(p: &Percentiles, sep: &str) -> String {
    format!(
        "round trip p50 {:.2} ms{sep}p99 {:.2} ms{sep}max {:.2} ms",
        p.p50_ms, p.p99_ms, p.max_ms
    )
}

impl Interval {
    /// `[  1.00-  2.00 s] upload    812.34 Mbit/s (server)  rtt 1.23 ms (min 0.31)  ...`
    pub fn line(&self) -> String {
        let head = format!(
            "[{:7.2}-{:7.2} s] {:<8}",
            self.start_s,
            self.end_s,
            self.direction.name()
        );
        match &self.messages {
            Some(m) => format!(
                "{head}  {} sent, {} echoed  {}  {}",
                m.sent,
                m.echoed,
                round_trip(&m.round_trip, "  "),
                transport(&self.transport)
            ),
            None => format!(
                "{head}  {:9.2} Mbit/s ({})  {} ({})",
                self.goodput_mbps,
                self.goodput_measured_by.name(),
                transport(&self.transport),
                self.transport.measured_by.name()
            ),
        }
    }
}

impl Summary {
    /// `summary upload: 1021.3 MB in 10.00 s, goodput 816.92 Mbit/s (measured by the server); ...`
    pub fn line(&self) -> String {
        let t = &self.transport;
        let sender = format!(
            "rtt avg {:.2} ms, min {:.2} ms, {} packets lost, {} retransmitted, cwnd avg {}, datagrams {} B (from the {}'s session)",
            t.smoothed_rtt_ms,
            t.min_rtt_ms,
            t.packets_lost,
            size(t.bytes_retransmitted),
            size(t.cwnd_bytes),
            t.datagram_size,
            t.measured_by.name()
        );
        match &self.messages {
            Some(m) => format!(
                "summary messages: {} sent, {} echoed, {} B each, in {:.2} s; {} (client -> server -> client, measured by the client); {sender}",
                m.sent,
                m.echoed,
                m.size,
                self.seconds,
                round_trip(&m.round_trip, ", ")
            ),
            None => format!(
                "summary {}: {} in {:.2} s, goodput {:.2} Mbit/s (measured by the {}); {sender}",
                self.direction.name(),
                size(self.bytes),
                self.seconds,
                self.goodput_mbps,
                self.goodput_measured_by.name()
            ),
        }
    }
}

/// Bytes with a decimal unit.
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} KB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_the_measuring_side() {
        let i = Interval {
            direction: Direction::Download,
            start_s: 1.0,
            end_s: 2.0,
            bytes: 125_000_000,
            goodput_mbps: mbps(125_000_000, 1.0),
            goodput_measured_by: Side::Client,
            transport: Transport {
                measured_by: Side::Server,
                smoothed_rtt_ms: 1.5,
                min_rtt_ms: 0.5,
                packets_lost: 3,
                bytes_retransmitted: 4350,
                cwnd_bytes: 1_200_000,
                datagram_size: 1472,
            },
            messages: None,
        };
        assert_eq!(
            i.line(),
            "[   1.00-   2.00 s] download    1000.00 Mbit/s (client)  rtt 1.50 ms (min 0.50)  lost 3  retx 4.3 KB  cwnd 1.2 MB (server)"
        );
        let s = Summary {
            direction: Direction::Download,
            seconds: 2.0,
            bytes: 250_000_000,
            goodput_mbps: 1000.0,
            goodput_measured_by: Side::Client,
            transport: i.transport,
            messages: None,
        };
        assert!(s.line().starts_with(
            "summary download: 250.0 MB in 2.00 s, goodput 1000.00 Mbit/s (measured by the client); rtt avg 1.50 ms"
        ));
        assert!(s
            .line()
            .ends_with("datagrams 1472 B (from the server's session)"));
        assert_eq!(size(999), "999 B");
        assert_eq!(size(2_500_000_000), "2.50 GB");
    }
}
