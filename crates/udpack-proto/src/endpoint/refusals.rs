//! Refusals the server sent lately, so that the copy a client sends 5 ms after its
//! hello (and a retransmission soon after) gets the same answer again instead of a
//! second handshake: no second X25519 or auth call, no second count against the
//! per-address limits, and no session for a copy that arrives once a place has freed
//! up, after the client already took the refusal and gave up. Only a byte-identical
//! hello from the same address gets it (its digest is kept): a damaged copy injected
//! ahead of the real hello, with the same ephemeral key, must not get the real one
//! refused.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::handshake::{hello_digest, EPHEMERAL_LEN, HELLO_DIGEST_LEN};

/// How long a refusal is answered again: the copy comes 5 ms after the hello, the
/// first retransmission 500 ms after it.
const REMEMBER_FOR: Duration = Duration::from_secs(1);
/// Most refusals remembered; the oldest goes first. An attacker flooding refused
/// hellos only pushes out entries that would have expired soon.
const MAX_REMEMBERED: usize = 1024;

/// Where a refused hello came from, its digest, and the answer it got.
#[derive(Debug)]
struct Refusal {
    from: SocketAddr,
    digest: [u8; HELLO_DIGEST_LEN],
    answer: Vec<u8>,
}

/// Recent refusals by the hello's ephemeral key, oldest first.
#[derive(Debug, Default)]
pub(super) struct RecentRefusals {
    answers: HashMap<[u8; EPHEMERAL_LEN], Refusal>,
    order: VecDeque<(Instant, [u8; EPHEMERAL_LEN])>,
}

impl RecentRefusals {
    /// The answer sent to this `hello` (with `ephemeral`) from `from`, if the same
    /// datagram was refused within [`REMEMBER_FOR`]. The digest is computed only when
    /// the ephemeral key matches one remembered.
    pub(super) fn answer(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ephemeral: &[u8; EPHEMERAL_LEN],
        hello: &[u8],
    ) -> Option<Vec<u8>> {
        self.expire(now);
        let r = self.answers.get(ephemeral)?;
        (r.from == from && r.digest == hello_digest(hello)).then(|| r.answer.clone())
    }

    /// Remembers the `answer` that refused `hello` (with `ephemeral`) from `from`.
    pub(super) fn remember(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ephemeral: [u8; EPHEMERAL_LEN],
        hello: &[u8],
        answer: &[u8],
    ) {
        self.expire(now);
        if self.order.len() >= MAX_REMEMBERED {
            if let Some((_, old)) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
        let refusal = Refusal {
            from,
            digest: hello_digest(hello),
            answer: answer.to_vec(),
        };
        if self.answers.insert(ephemeral, refusal).is_none() {
            self.order.push_back((now, ephemeral));
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.order.front() {
            if now.saturating_duration_since(at) < REMEMBER_FOR {
                break;
            }
            self.order.pop_front();
            self.answers.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_answered_again_to_the_same_hello_from_its_address_for_a_while() {
        let t0 = Instant::now();
        let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:4000".parse().unwrap();
        let mut r = RecentRefusals::default();
        let e = [1; EPHEMERAL_LEN];
        r.remember(t0, a, e, b"hello", b"no");
        let at = t0 + Duration::from_millis(5);
        assert_eq!(r.answer(at, a, &e, b"hello").as_deref(), Some(&b"no"[..]));
        // Another hello, the same from elsewhere, or another datagram with the same
        // ephemeral key (damaged, or the genuine one after a damaged copy): not this
        // refusal.
        assert_eq!(r.answer(at, a, &[2; EPHEMERAL_LEN], b"hello"), None);
        assert_eq!(r.answer(at, b, &e, b"hello"), None);
        assert_eq!(r.answer(at, a, &e, b"hellp"), None);
        // Forgotten after a second.
        assert_eq!(r.answer(t0 + REMEMBER_FOR, a, &e, b"hello"), None);
        assert!(r.answers.is_empty() && r.order.is_empty());
    }

    #[test]
    fn at_most_so_many_refusals_are_remembered() {
        let t0 = Instant::now();
        let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let key = |i: u64| {
            let mut k = [0; EPHEMERAL_LEN];
            k[..8].copy_from_slice(&i.to_le_bytes());
            k
        };
        let mut r = RecentRefusals::default();
        let n = MAX_REMEMBERED as u64 + 10;
        for i in 0..n {
            r.remember(t0, a, key(i), b"hello", b"no");
        }
        assert_eq!(r.answers.len(), MAX_REMEMBERED);
        assert_eq!(r.order.len(), MAX_REMEMBERED);
        assert_eq!(r.answer(t0, a, &key(0), b"hello"), None, "the oldest went");
        assert!(r.answer(t0, a, &key(n - 1), b"hello").is_some());
    }
}
