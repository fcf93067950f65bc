//! Stateless cookies for a loaded server (PROTOCOL.md §2.7): a MAC over the hello's
//! source address, client session id and ephemeral key, under a secret that rotates.
//! Checking one costs an HMAC, not an X25519, and the server keeps nothing per hello.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::RngCore;
use ring::hmac;

use crate::handshake::{ct_eq, COOKIE_LEN};

/// How long a secret is current. The one before stays valid, so a cookie is good for
/// one to two of these: long enough for any round trip, short enough that a cookie
/// captured from one hello is soon worthless.
pub const COOKIE_ROTATION: Duration = Duration::from_secs(120);

/// The current and the previous cookie secret.
pub(super) struct CookieKeys {
    current: hmac::Key,
    previous: Option<hmac::Key>,
    /// When `current` was made; `None` until the first cookie is needed.
    since: Option<Instant>,
}

impl CookieKeys {
    pub fn new(rng: &mut impl RngCore) -> Self {
        CookieKeys {
            current: fresh(rng),
            previous: None,
            since: None,
        }
    }

    /// Rotates the secrets if `now` is past the current one's time.
    pub fn rotate(&mut self, now: Instant, rng: &mut impl RngCore) {
        let Some(since) = self.since else {
            self.since = Some(now);
            return;
        };
        let age = now.saturating_duration_since(since);
        if age < COOKIE_ROTATION {
            return;
        }
        let next = fresh(rng);
        // Two periods without a hello: the old secret is too old to keep.
        self.previous = if age < 2 * COOKIE_ROTATION {
            Some(std::mem::replace(&mut self.current, next))
        } else {
            self.current = next;
            None
        };
        self.since = Some(now);
    }

    /// The cookie for a hello from `from` with this session id and ephemeral key.
    pub fn make(&self, from: SocketAddr, client_sid: u64, ephemeral: &[u8]) -> [u8; COOKIE_LEN] {
        mac(&self.current, from, client_sid, ephemeral)
    }

    /// Whether `cookie` was made by the current or the previous secret for this hello.
    pub fn verify(
        &self,
        from: SocketAddr,
        client_sid: u64,
        ephemeral: &[u8],
        cookie: &[u8; COOKIE_LEN],
    ) -> bool {
        [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .any(|k| {
                let want = mac(k, from, client_sid, ephemeral);
                ct_eq(&want, cookie)
            })
    }
}

fn fresh(rng: &mut impl RngCore) -> hmac::Key {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    hmac::Key::new(hmac::HMAC_SHA256, &secret)
}

fn mac(key: &hmac::Key, from: SocketAddr, client_sid: u64, ephemeral: &[u8]) -> [u8; COOKIE_LEN] {
    let mut ctx = hmac::Context::with_key(key);
    let ip = match from.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    ctx.update(&ip.octets());
    ctx.update(&from.port().to_be_bytes());
    ctx.update(&client_sid.to_be_bytes());
    ctx.update(ephemeral);
    let tag = ctx.sign();
    let mut out = [0u8; COOKIE_LEN];
    out.copy_from_slice(&tag.as_ref()[..COOKIE_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn a_cookie_is_bound_to_its_hello_and_outlives_one_rotation_only() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut keys = CookieKeys::new(&mut rng);
        let t0 = Instant::now();
        keys.rotate(t0, &mut rng);
        let a: SocketAddr = "192.0.2.1:4000".parse().expect("address");
        let e = [7u8; 32];
        let c = keys.make(a, 9, &e);
        assert!(keys.verify(a, 9, &e, &c));
        for (from, sid, eph) in [
            ("192.0.2.1:4001", 9, e),
            ("192.0.2.2:4000", 9, e),
            ("192.0.2.1:4000", 10, e),
            ("192.0.2.1:4000", 9, [8u8; 32]),
        ] {
            let from: SocketAddr = from.parse().expect("address");
            assert!(!keys.verify(from, sid, &eph, &c), "{from} {sid}");
        }
        // Not yet due: nothing changes.
        keys.rotate(t0 + COOKIE_ROTATION / 2, &mut rng);
        assert!(keys.verify(a, 9, &e, &c));
        // One rotation: still valid, but new cookies differ.
        keys.rotate(t0 + COOKIE_ROTATION, &mut rng);
        assert!(keys.verify(a, 9, &e, &c));
        assert_ne!(keys.make(a, 9, &e), c);
        // Two: gone.
        keys.rotate(t0 + 2 * COOKIE_ROTATION, &mut rng);
        assert!(!keys.verify(a, 9, &e, &c));
    }

    #[test]
    fn a_long_quiet_spell_drops_both_secrets() {
        let mut rng = StdRng::seed_from_u64(6);
        let mut keys = CookieKeys::new(&mut rng);
        let t0 = Instant::now();
        keys.rotate(t0, &mut rng);
        let a: SocketAddr = "[2001:db8::1]:4000".parse().expect("address");
        let c = keys.make(a, 1, &[1; 32]);
        keys.rotate(t0 + 3 * COOKIE_ROTATION, &mut rng);
        assert!(!keys.verify(a, 1, &[1; 32], &c));
    }
}
