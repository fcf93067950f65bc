//! The deterministic network simulator that drives every protocol test, and what tests
//! need beyond the public API. Compiled for this crate's own tests and with the
//! `testing` feature; not part of the API.
//!
//! [`Pair`] builds the usual setup (one server, one client, a link each way);
//! [`Sim::server`] and [`Sim::client`] reach the two nodes, [`Node::session`] their
//! session. A failing seed can be replayed alone: the grid prints its command.

mod app;
mod checks;
mod sim;

pub use app::{fill_pattern, pattern_word, App, Receiver, Sender};
pub use checks::*;
pub use sim::{Captured, Fate, Filter, GilbertElliott, LinkParams, LinkStats, Node, Sim};

use std::time::Duration;

use crate::{ClientConfig, ServerConfig, TransportConfig};

/// Wire-level items the handshake and fuzz tests build datagrams with.
pub mod wire {
    pub use crate::frame::{Frame, Frames};
    pub use crate::handshake::{
        encode_cookie, encode_undecryptable, encode_version_mismatch, hello_cookie,
        hello_ephemeral, set_hello_cookie, ClientHandshake, ServerHello, TransportParams,
        BODY_OFFSET, COOKIE_LEN,
    };
    pub use crate::packet::{
        data_header_len, is_data_packet, long, DATA_PACKET, MIN_HELLO_LEN, VERSION,
    };
}

/// A server config whose auth accepts the token "letmein".
pub fn server_config(seed: u64, transport: TransportConfig) -> ServerConfig {
    ServerConfig::new(Sim::server_key(seed))
        .auth(|t| t == b"letmein")
        .transport(transport)
}

/// A client config that pins the server's key and presents the token "letmein".
pub fn client_config(seed: u64, transport: TransportConfig) -> ClientConfig {
    ClientConfig::new(Sim::server_key(seed).public_key())
        .token("letmein")
        .transport(transport)
}

/// Builds a simulation of one server and one client.
pub struct Pair {
    seed: u64,
    up: LinkParams,
    down: LinkParams,
    server: TransportConfig,
    client: Option<ClientConfig>,
    client_transport: TransportConfig,
    client_streams: Vec<u64>,
    server_streams: Vec<u64>,
    passive: bool,
}

impl Pair {
    /// Both directions over `link`, default transports, no streams.
    pub fn new(seed: u64, link: LinkParams) -> Self {
        Pair {
            seed,
            up: link.clone(),
            down: link,
            server: TransportConfig::default(),
            client: None,
            client_transport: TransportConfig::default(),
            client_streams: Vec::new(),
            server_streams: Vec::new(),
            passive: false,
        }
    }

    /// The link toward the server differs from the one back.
    pub fn links(mut self, up: LinkParams, down: LinkParams) -> Self {
        self.up = up;
        self.down = down;
        self
    }

    /// The server's transport configuration.
    pub fn server_transport(mut self, t: TransportConfig) -> Self {
        self.server = t;
        self
    }

    /// The client's transport configuration (with the usual key and token).
    pub fn client_transport(mut self, t: TransportConfig) -> Self {
        self.client_transport = t;
        self
    }

    /// The client's whole configuration (another key, another token).
    pub fn client_config(mut self, c: ClientConfig) -> Self {
        self.client = Some(c);
        self
    }

    /// Streams the client opens once connected, with the bytes each carries.
    pub fn client_streams(mut self, sizes: Vec<u64>) -> Self {
        self.client_streams = sizes;
        self
    }

    /// Streams the server opens on the session, with the bytes each carries.
    pub fn server_streams(mut self, sizes: Vec<u64>) -> Self {
        self.server_streams = sizes;
        self
    }

    /// Applications that only take sessions and log events: the test drives streams.
    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
    }

    /// The simulation, before the first packet.
    pub fn build(self) -> Sim {
        let mut sim = Sim::new(self.seed, self.up, self.down);
        sim.add_server(server_config(self.seed, self.server));
        sim.server_mut().app.open = self.server_streams;
        let client = self
            .client
            .unwrap_or_else(|| client_config(self.seed, self.client_transport));
        sim.add_client(&client, App::sending(self.client_streams));
        if self.passive {
            for n in &mut sim.nodes {
                n.app.passive = true;
                n.app.event_log = Some(Vec::new());
            }
        }
        sim
    }

    /// The simulation once both sides are connected.
    pub fn connected(self) -> Sim {
        let mut sim = self.build();
        assert!(
            sim.run_until(Duration::from_secs(5), connected),
            "handshake did not complete"
        );
        sim
    }
}
