//! Sessions per token: the server names each accepted token by a keyed hash
//! ([`TokenId`]) and counts the live sessions of each, to enforce
//! `ServerConfig::max_sessions_per_token`. The table holds only tokens with a live
//! session, so it is never larger than the session table; it keeps no token bytes,
//! and its keys, made with a secret drawn when the endpoint starts, tell nothing about
//! the tokens (nor match another endpoint's).

use std::collections::HashMap;
use std::fmt;

use rand::RngCore;
use ring::hmac;

/// Bytes of a [`TokenId`]: 128 bits, so two tokens never share one in practice.
pub const TOKEN_ID_LEN: usize = 16;

/// Which token a server session presented: a keyed hash of it, stable for the life of
/// its endpoint and meaningless outside it. Lets the application count or limit per
/// token without ever holding the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId([u8; TOKEN_ID_LEN]);

impl TokenId {
    /// The hash's bytes.
    pub fn as_bytes(&self) -> &[u8; TOKEN_ID_LEN] {
        &self.0
    }

    /// An id from the bytes [`Self::as_bytes`] gave (kept or sent elsewhere by the
    /// application, or made up by its tests).
    pub fn from_bytes(bytes: [u8; TOKEN_ID_LEN]) -> Self {
        TokenId(bytes)
    }
}

impl fmt::Display for TokenId {
    /// Hex, as logs show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

/// The hashing secret and the live sessions of each token.
pub(super) struct TokenTable {
    key: hmac::Key,
    live: HashMap<TokenId, usize>,
}

impl TokenTable {
    pub fn new(rng: &mut impl RngCore) -> Self {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut secret[..]);
        TokenTable {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret[..]),
            live: HashMap::new(),
        }
    }

    /// The id of `token` at this endpoint.
    pub fn id(&self, token: &[u8]) -> TokenId {
        let tag = hmac::sign(&self.key, token);
        let mut out = [0u8; TOKEN_ID_LEN];
        out.copy_from_slice(&tag.as_ref()[..TOKEN_ID_LEN]);
        TokenId(out)
    }

    /// Live sessions that presented `id`.
    pub fn live(&self, id: &TokenId) -> usize {
        self.live.get(id).copied().unwrap_or(0)
    }

    /// Counts a session accepted with `id`.
    pub fn add(&mut self, id: TokenId) {
        *self.live.entry(id).or_insert(0) += 1;
    }

    /// Uncounts a session of `id` that ended; the entry goes with its last session.
    pub fn remove(&mut self, id: &TokenId) {
        if let Some(n) = self.live.get_mut(id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.live.remove(id);
            }
        }
    }

    /// Tokens with a live session.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn ids_are_keyed_per_endpoint_and_entries_go_with_their_last_session() {
        let mut t = TokenTable::new(&mut StdRng::seed_from_u64(1));
        let other = TokenTable::new(&mut StdRng::seed_from_u64(2));
        let a = t.id(b"alpha");
        assert_eq!(a, t.id(b"alpha"), "stable within the endpoint");
        assert_ne!(a, t.id(b"alphb"));
        assert_ne!(a, other.id(b"alpha"), "another endpoint's secret");
        assert!(!a.to_string().contains("616c706861"), "no token bytes");
        assert_eq!(a.to_string().len(), 2 * TOKEN_ID_LEN);
        t.add(a);
        t.add(a);
        assert_eq!((t.live(&a), t.tracked()), (2, 1));
        t.remove(&a);
        assert_eq!((t.live(&a), t.tracked()), (1, 1));
        t.remove(&a);
        assert_eq!((t.live(&a), t.tracked()), (0, 0));
        // A stray removal changes nothing.
        t.remove(&a);
        assert_eq!(t.tracked(), 0);
    }
}
