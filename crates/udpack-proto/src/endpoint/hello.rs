//! The server's answer to a HELLO (PROTOCOL.md §3.5), cheapest checks first: the
//! version, a repeat of an accepted hello, a replayed one, the load gate (no valid
//! cookie under load: a COOKIE, no X25519), the per-address limits; only then the
//! Noise decryption, the timestamp, the auth callback and the session limits (of the
//! endpoint, the address, the token).

use std::net::SocketAddr;
use std::time::Instant;

use zeroize::Zeroize;

use super::hello_guard::Limited;
use super::{Endpoint, SessionHandle};
use crate::config::reject;
use crate::handshake::{
    encode_cookie, encode_undecryptable, encode_version_mismatch, hello_cookie, hello_ephemeral,
    HandshakeError, ServerHello, BODY_OFFSET,
};
use crate::packet::{MIN_HELLO_LEN, VERSION};
use crate::session::Session;

impl Endpoint {
    pub(super) fn handle_hello(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        version: u32,
        client_sid: u64,
        datagram: &[u8],
    ) {
        let Some(server) = self.server.clone() else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        // Short hellos would make our answers an amplifier.
        if datagram.len() < MIN_HELLO_LEN {
            self.stats.datagrams_dropped += 1;
            return;
        }
        if version != VERSION {
            let mut out = Vec::new();
            encode_version_mismatch(client_sid, datagram, &mut out);
            self.queue_stateless(remote, out);
            return;
        }
        // A hello for a client session id we already accepted is its copy or a
        // retransmission (same address: answer it again) or a replay (another address:
        // ignore it), never a second session.
        if let Some(&(addr, sid)) = self.hellos.get(&client_sid) {
            if addr == remote {
                if let Some(e) = self.sessions.get_mut(&sid) {
                    e.session.on_repeated_hello(datagram.len());
                    self.touched.push(sid);
                }
            } else {
                self.stats.datagrams_dropped += 1;
            }
            return;
        }
        let Some(ephemeral) = hello_ephemeral(datagram).copied() else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        // The copy (or a retransmission) of a hello refused a moment ago: the same
        // answer, no second handshake.
        if let Some(answer) = self.refusals.answer(now, remote, &ephemeral, datagram) {
            self.stats.refusals_repeated += 1;
            self.queue_stateless(remote, answer);
            return;
        }
        // The hello of a session that has ended: refused before any X25519.
        if self.replays.seen(now, server.replay_memory(), &ephemeral) {
            self.stats.hellos_replayed += 1;
            return;
        }
        self.cookies.rotate(now, &mut self.rng);
        let verified = match hello_cookie(datagram) {
            Some(c) if self.cookies.verify(remote, client_sid, &ephemeral, &c) => true,
            Some(_) => {
                self.stats.cookies_invalid += 1;
                false
            }
            None => false,
        };
        let ip = remote.ip();
        if !verified && self.guard.under_load(now, server.cookie_threshold) {
            self.send_cookie_within_budget(now, remote, client_sid, &ephemeral, datagram);
            return;
        }
        if let Err(why) = self.guard.admit(
            now,
            ip,
            verified,
            server.max_hellos_per_address,
            server.max_failed_tokens_per_address,
        ) {
            self.stats.hellos_rate_limited += 1;
            if self.guard.warn_due(now, ip) {
                self.stats.rate_limit_warnings += 1;
                let what = match why {
                    Limited::Hellos => "too many hellos per second",
                    Limited::FailedTokens => "too many refused tokens per minute",
                };
                tracing::warn!(address = %ip, verified, "hellos from {ip} over the limit: {what}");
            }
            // Without a cookie it may be a spoofer: make it prove the address (within
            // a budget of answers). With one, the owner of the address is over its
            // limit.
            if !verified {
                self.send_cookie_within_budget(now, remote, client_sid, &ephemeral, datagram);
            }
            return;
        }
        self.guard.count_expensive();
        self.stats.x25519_ops += 1;
        let mut hello = match ServerHello::read(&server.key, client_sid, &datagram[BODY_OFFSET..]) {
            Ok(h) => h,
            Err(HandshakeError::Crypto) => {
                self.stats.hellos_rejected += 1;
                let mut out = Vec::new();
                encode_undecryptable(client_sid, datagram, &mut out);
                self.refusals
                    .remember(now, remote, ephemeral, datagram, &out);
                self.queue_stateless(remote, out);
                return;
            }
            Err(_) => {
                self.stats.datagrams_dropped += 1;
                return;
            }
        };
        // Every answer from here on costs the Noise `ee`: one X25519 more.
        self.stats.x25519_ops += 1;
        let mut out = Vec::new();
        let fresh =
            super::replay::fresh(hello.timestamp, self.unix_time(now), server.max_hello_age);
        let accepted = fresh && (server.auth)(&hello.token);
        // The token is needed no longer than this: only its keyed hash is kept.
        let token_id = self.tokens.id(&hello.token);
        hello.token.zeroize();
        let refusal = if !fresh {
            self.stats.hellos_stale += 1;
            Some((
                reject::STALE_HELLO,
                "hello timestamp too far from the server's clock",
            ))
        } else if !accepted {
            self.guard.count_failure(now, ip, verified);
            Some((reject::TOKEN_REJECTED, "token rejected"))
        } else if self.sessions.len() >= server.max_sessions {
            Some((reject::SERVER_BUSY, "server busy"))
        } else if self.per_address.get(&ip).copied().unwrap_or(0) >= server.max_sessions_per_address
        {
            self.stats.hellos_over_address_limit += 1;
            Some((reject::SERVER_BUSY, "too many sessions from this address"))
        } else if self.tokens.live(&token_id) >= server.max_sessions_per_token {
            self.stats.hellos_over_token_limit += 1;
            Some((reject::SERVER_BUSY, "too many sessions with this token"))
        } else {
            None
        };
        if let Some((code, reason)) = refusal {
            self.stats.hellos_rejected += 1;
            if hello.reject(code, reason, &mut out).is_ok() {
                self.refusals
                    .remember(now, remote, ephemeral, datagram, &out);
                self.queue_stateless(remote, out);
            }
            return;
        }
        let sid = self.new_sid();
        let params = Session::local_params(&server.transport);
        let peer = hello.params;
        let Ok(keys) = hello.accept(sid, &params, &mut out) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        let rng = self.session_rng();
        let session = Session::server(
            now,
            sid,
            remote,
            server.transport.clone(),
            client_sid,
            peer,
            keys,
            out,
            datagram.len(),
            token_id,
            rng,
        );
        self.stats.sessions_accepted += 1;
        self.stats.replay_memory_evicted += self.replays.remember(now, &ephemeral);
        self.hellos.insert(client_sid, (remote, sid));
        self.insert(sid, session, Some(client_sid), Some(ip));
        self.incoming.push_back(SessionHandle(sid));
    }

    /// A COOKIE, unless the address had its `max_hellos_per_address` of them this
    /// second: a flood from few addresses then costs few answers.
    fn send_cookie_within_budget(
        &mut self,
        now: Instant,
        to: SocketAddr,
        client_sid: u64,
        ephemeral: &[u8],
        hello: &[u8],
    ) {
        let max = self.server.as_ref().map_or(0, |s| s.max_hellos_per_address);
        if !self.guard.cookie_allowed(now, to.ip(), max) {
            self.stats.cookies_withheld += 1;
            return;
        }
        let cookie = self.cookies.make(to, client_sid, ephemeral);
        let mut out = Vec::new();
        encode_cookie(client_sid, hello, &cookie, &mut out);
        self.stats.cookies_sent += 1;
        self.queue_stateless(to, out);
    }
}
