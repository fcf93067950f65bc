//! X25519 key material for the Noise NK handshake.
//!
//! The server's long-term identity is an X25519 static key pair. Clients are
//! configured with the server's [`PublicKey`]; the server holds the matching
//! [`PrivateKey`].
//!
//! Keys are written in the same PEM formats that OpenSSL uses, so they can be
//! created and inspected with standard tools:
//!
//! ```text
//! openssl genpkey -algorithm x25519 -out server.key     # PrivateKey::from_pem
//! openssl pkey -in server.key -pubout -out server.pub   # PublicKey::from_pem
//! ```
//!
//! This crate does no I/O: it only parses and encodes. Key files are read and
//! written by the runtime crate (`udpack::KeyFile`).
//!
//! * Private keys are PKCS#8 `PrivateKeyInfo` / `OneAsymmetricKey`
//!   ([RFC 5958]) with the X25519 algorithm identifier of [RFC 8410], in a
//!   `-----BEGIN PRIVATE KEY-----` block.
//! * Public keys are X.509 `SubjectPublicKeyInfo` with the same algorithm
//!   identifier, in a `-----BEGIN PUBLIC KEY-----` block.
//!
//! For X25519 these DER encodings have a single valid shape, so they are
//! matched byte for byte against fixed templates instead of running a general
//! ASN.1 parser. Anything else (other algorithms such as Ed25519, X448, RSA or
//! EC keys; encrypted keys; truncated or padded DER) is rejected with a
//! [`KeyError`]. No input makes these functions panic.
//!
//! [RFC 5958]: https://www.rfc-editor.org/rfc/rfc5958
//! [RFC 8410]: https://www.rfc-editor.org/rfc/rfc8410

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// PEM label of a PKCS#8 private key.
const PRIVATE_LABEL: &str = "PRIVATE KEY";
/// PEM label of a `SubjectPublicKeyInfo`.
const PUBLIC_LABEL: &str = "PUBLIC KEY";

/// Length in bytes of X25519 private and public keys.
const KEY_LEN: usize = 32;

/// DER prefix of a version 1 PKCS#8 X25519 private key (RFC 8410 §7), as
/// written by OpenSSL. The 32 private key bytes follow.
///
/// ```text
/// 30 2e                      SEQUENCE (46 bytes)
///    02 01 00                INTEGER 0 (v1)
///    30 05 06 03 2b 65 6e    AlgorithmIdentifier { id-X25519 }
///    04 22 04 20 <32 bytes>  OCTET STRING { CurvePrivateKey OCTET STRING }
/// ```
const PRIVATE_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
];

/// DER prefix of a version 2 `OneAsymmetricKey` X25519 private key that
/// carries the public key (RFC 5958, RFC 8410 §10.3). The 32 private key bytes
/// follow, then [`PRIVATE_V2_PUBLIC_TAG`] and the 32 public key bytes.
const PRIVATE_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
];

/// `[1] IMPLICIT BIT STRING` header (33 bytes, 0 unused bits) of the optional
/// public key in a version 2 `OneAsymmetricKey`.
const PRIVATE_V2_PUBLIC_TAG: [u8; 3] = [0x81, 0x21, 0x00];

/// DER prefix of an X25519 `SubjectPublicKeyInfo` (RFC 8410 §4). The 32
/// public key bytes follow.
///
/// ```text
/// 30 2a                      SEQUENCE (42 bytes)
///    30 05 06 03 2b 65 6e    AlgorithmIdentifier { id-X25519 }
///    03 21 00 <32 bytes>     BIT STRING (0 unused bits)
/// ```
const PUBLIC_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00,
];

/// Number of key bytes shown by [`PublicKey::fingerprint`].
const FINGERPRINT_LEN: usize = 8;

/// Errors from parsing keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not usable PEM: no `-----BEGIN ...-----` block, bad
    /// base64, mismatched BEGIN/END labels, several candidate blocks, or
    /// (for files, as the runtime reads them) not UTF-8 or implausibly large.
    #[error("not PEM: {0}")]
    Pem(String),

    /// The PEM block is well formed but holds a different kind of object,
    /// e.g. a public key where a private key was expected, or an
    /// `ENCRYPTED PRIVATE KEY`.
    #[error("PEM label {found:?} is not {expected:?}")]
    WrongLabel {
        /// The label that was found (of the first PEM block).
        found: String,
        /// The label that was expected.
        expected: &'static str,
    },

    /// The DER contents are not an X25519 key in the RFC 8410 encoding:
    /// another algorithm (Ed25519, X448, RSA, EC, ...), truncated or
    /// trailing data, or an unsupported PKCS#8 variant.
    #[error("not an X25519 key (DER does not match)")]
    NotX25519,

    /// A version 2 PKCS#8 private key carries a public key that is not the
    /// one derived from its private key, so the file is corrupt.
    #[error("the public key embedded in the private key does not match the private key")]
    PublicKeyMismatch,
}

/// An X25519 static private key (the server's identity).
///
/// The key bytes are zeroized when the value is dropped (this relies on
/// `x25519-dalek`'s default `zeroize` feature). The [`fmt::Debug`] output
/// shows only the fingerprint of the corresponding public key, never the
/// private key bytes.
#[derive(Clone)]
pub struct PrivateKey(x25519_dalek::StaticSecret);

/// An X25519 public key (32 bytes, the Montgomery u-coordinate).
///
/// Any 32-byte string is accepted, as X25519 itself does; the handshake is
/// responsible for rejecting degenerate shared secrets.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PrivateKey {
    /// Generates a fresh random key from the operating system's CSPRNG
    /// ([`rand::rngs::OsRng`]).
    pub fn generate() -> Self {
        Self::generate_from(&mut rand::rngs::OsRng)
    }

    /// Generates a key from the given cryptographically secure RNG
    /// (deterministic RNGs are useful in tests).
    pub fn generate_from<R: rand::RngCore + rand::CryptoRng>(rng: &mut R) -> Self {
        PrivateKey(x25519_dalek::StaticSecret::random_from_rng(rng))
    }

    /// Wraps 32 raw private key bytes. Clamping is applied by X25519 when the
    /// key is used, so every 32-byte string is a valid key; the bytes are kept
    /// unchanged (as OpenSSL does), so [`to_bytes`](Self::to_bytes) returns
    /// them as given.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PrivateKey(x25519_dalek::StaticSecret::from(bytes))
    }

    /// Returns the 32 raw private key bytes. The caller is responsible for
    /// not leaking the copy.
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.0.to_bytes()
    }

    /// Derives the public key (X25519 scalar multiplication of the base
    /// point).
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// Parses a `-----BEGIN PRIVATE KEY-----` PEM block holding a PKCS#8
    /// X25519 key, as written by `openssl genpkey -algorithm x25519`.
    ///
    /// Both the version 1 form (what OpenSSL writes) and the RFC 5958
    /// version 2 form with the public key included are accepted; in the
    /// latter case the embedded public key must match the private key.
    /// (OpenSSL 3.0 itself neither writes nor reads the version 2 form.)
    /// PKCS#8 attributes are not supported and give [`KeyError::NotX25519`].
    /// Text around the PEM block is ignored; if there are several blocks,
    /// exactly one must be labelled `PRIVATE KEY`.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let der = Zeroizing::new(decode_pem(text, PRIVATE_LABEL)?);
        Self::from_der(&der)
    }

    /// Decodes the DER of a PKCS#8 X25519 private key (v1 or v2).
    fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let v1_len = PRIVATE_V1_PREFIX.len() + KEY_LEN;
        let v2_len = PRIVATE_V2_PREFIX.len() + KEY_LEN + PRIVATE_V2_PUBLIC_TAG.len() + KEY_LEN;

        if der.len() == v1_len && der.starts_with(&PRIVATE_V1_PREFIX) {
            return Ok(Self::from_bytes(read_key(&der[PRIVATE_V1_PREFIX.len()..])));
        }

        if der.len() == v2_len && der.starts_with(&PRIVATE_V2_PREFIX) {
            let (secret, rest) = der[PRIVATE_V2_PREFIX.len()..].split_at(KEY_LEN);
            let Some(public) = rest.strip_prefix(&PRIVATE_V2_PUBLIC_TAG[..]) else {
                return Err(KeyError::NotX25519);
            };
            let key = Self::from_bytes(read_key(secret));
            if key.public_key().as_bytes()[..] != public[..] {
                return Err(KeyError::PublicKeyMismatch);
            }
            return Ok(key);
        }

        Err(KeyError::NotX25519)
    }

    /// Encodes the key as a PKCS#8 v1 `-----BEGIN PRIVATE KEY-----` PEM block,
    /// byte for byte what OpenSSL writes: base64 wrapped at 64 columns, LF
    /// line endings, trailing newline.
    ///
    /// Intermediate buffers holding the DER are zeroized; the returned
    /// string contains the secret and is the caller's to protect (e.g. in
    /// [`Zeroizing`]).
    pub fn to_pem(&self) -> String {
        let mut der = Vec::with_capacity(PRIVATE_V1_PREFIX.len() + KEY_LEN);
        der.extend_from_slice(&PRIVATE_V1_PREFIX);
        der.extend_from_slice(Zeroizing::new(self.to_bytes()).as_slice());

        let block = pem::Pem::new(PRIVATE_LABEL, der);
        let text = encode_pem(&block);
        block.into_contents().zeroize();
        text
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("public", &self.public_key().fingerprint())
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Wraps 32 raw public key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PublicKey(bytes)
    }

    /// Returns the 32 raw public key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses a `-----BEGIN PUBLIC KEY-----` PEM block holding an X25519
    /// `SubjectPublicKeyInfo`, as written by `openssl pkey -pubout`.
    ///
    /// Text around the PEM block is ignored; if there are several blocks,
    /// exactly one must be labelled `PUBLIC KEY`.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let der = decode_pem(text, PUBLIC_LABEL)?;
        Self::from_der(&der)
    }

    /// Decodes the DER of an X25519 `SubjectPublicKeyInfo`.
    fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        if der.len() == PUBLIC_PREFIX.len() + KEY_LEN && der.starts_with(&PUBLIC_PREFIX) {
            Ok(PublicKey(read_key(&der[PUBLIC_PREFIX.len()..])))
        } else {
            Err(KeyError::NotX25519)
        }
    }

    /// Encodes the key as a `-----BEGIN PUBLIC KEY-----` PEM block, byte for
    /// byte what `openssl pkey -pubout` writes.
    pub fn to_pem(&self) -> String {
        let mut der = Vec::with_capacity(PUBLIC_PREFIX.len() + KEY_LEN);
        der.extend_from_slice(&PUBLIC_PREFIX);
        der.extend_from_slice(&self.0);
        encode_pem(&pem::Pem::new(PUBLIC_LABEL, der))
    }

    /// Short identifier for logs: the first 8 bytes of the key as 16
    /// lowercase hex digits. Not a cryptographic commitment; compare full
    /// keys for authentication decisions.
    pub fn fingerprint(&self) -> String {
        hex(&self.0[..FINGERPRINT_LEN])
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// Lowercase hex encoding.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Copies a 32-byte key out of a slice that the caller has length-checked.
fn read_key(bytes: &[u8]) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(bytes);
    key
}

/// Encodes a PEM block the way OpenSSL does (64 columns, LF).
fn encode_pem(block: &pem::Pem) -> String {
    pem::encode_config(
        block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Finds the single PEM block labelled `expected` in `text` and returns its
/// decoded contents.
fn decode_pem(text: &str, expected: &'static str) -> Result<Vec<u8>, KeyError> {
    let blocks = pem::parse_many(text).map_err(|e| KeyError::Pem(e.to_string()))?;
    let result = pick_block(&blocks, expected);
    // The parsed blocks may hold a private key too.
    for block in blocks {
        block.into_contents().zeroize();
    }
    result
}

/// The contents of the single block of `blocks` labelled `expected`.
fn pick_block(blocks: &[pem::Pem], expected: &'static str) -> Result<Vec<u8>, KeyError> {
    let mut matching = blocks.iter().filter(|b| b.tag() == expected);
    match (matching.next(), matching.next()) {
        (Some(block), None) => {
            if block.headers().iter().next().is_some() {
                // RFC 1421 headers ("Proc-Type: 4,ENCRYPTED", ...) are never
                // present in PKCS#8 / SPKI PEM.
                return Err(KeyError::Pem(format!(
                    "unexpected headers in {expected:?} block (legacy encrypted PEM?)"
                )));
            }
            Ok(block.contents().to_vec())
        }
        (Some(_), Some(_)) => Err(KeyError::Pem(format!(
            "more than one {expected:?} block; expected exactly one"
        ))),
        (None, _) => match blocks.first() {
            Some(first) => Err(KeyError::WrongLabel {
                found: first.tag().to_string(),
                expected,
            }),
            None => Err(KeyError::Pem("no PEM block found".into())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// RFC 7748 §6.1: Alice's private and public keys.
    const RFC7748_PRIVATE: &str =
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const RFC7748_PUBLIC: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    /// RFC 8410 §10.3: an Ed25519 private key (same layout, OID 1.3.101.112).
    const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
        -----END PRIVATE KEY-----\n";

    fn unhex(s: &str) -> [u8; 32] {
        assert_eq!(s.len(), 64);
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn priv_der(key: &PrivateKey) -> Vec<u8> {
        pem::parse(key.to_pem()).unwrap().into_contents()
    }

    fn wrap(label: &str, der: &[u8]) -> String {
        encode_pem(&pem::Pem::new(label, der.to_vec()))
    }

    #[test]
    fn bytes_round_trip() {
        let key = PrivateKey::generate();
        let bytes = key.to_bytes();
        assert_eq!(PrivateKey::from_bytes(bytes).to_bytes(), bytes);
        // Unclamped bytes are kept as given.
        let raw = [0xffu8; 32];
        assert_eq!(PrivateKey::from_bytes(raw).to_bytes(), raw);

        let public = key.public_key();
        assert_eq!(PublicKey::from_bytes(*public.as_bytes()), public);
    }

    #[test]
    fn pem_round_trip() {
        for _ in 0..16 {
            let key = PrivateKey::generate();
            let text = key.to_pem();
            assert_eq!(
                PrivateKey::from_pem(&text).unwrap().to_bytes(),
                key.to_bytes()
            );

            let public = key.public_key();
            assert_eq!(PublicKey::from_pem(&public.to_pem()).unwrap(), public);
        }
    }

    #[test]
    fn pem_layout_matches_openssl() {
        let key = PrivateKey::from_bytes(unhex(RFC7748_PRIVATE));
        let text = key.to_pem();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(text.ends_with("-----END PRIVATE KEY-----\n"));
        assert!(!text.contains('\r'));
        assert_eq!(text.lines().count(), 3);
        assert_eq!(text.lines().nth(1).unwrap().len(), 64);

        let public = key.public_key().to_pem();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VuAyEA"));
        assert!(public.ends_with("=\n-----END PUBLIC KEY-----\n"));
        assert!(!public.contains('\r'));
    }

    #[test]
    fn public_key_matches_x25519_dalek_and_rfc7748() {
        let key = PrivateKey::from_bytes(unhex(RFC7748_PRIVATE));
        assert_eq!(key.public_key().as_bytes(), &unhex(RFC7748_PUBLIC));

        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..32 {
            let bytes: [u8; 32] = rng.gen();
            let dalek = x25519_dalek::StaticSecret::from(bytes);
            let expected = x25519_dalek::PublicKey::from(&dalek);
            assert_eq!(
                PrivateKey::from_bytes(bytes).public_key().as_bytes(),
                expected.as_bytes()
            );
        }
    }

    #[test]
    fn keys_agree_via_diffie_hellman() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        let ab =
            a.0.diffie_hellman(&x25519_dalek::PublicKey::from(*b.public_key().as_bytes()));
        let ba =
            b.0.diffie_hellman(&x25519_dalek::PublicKey::from(*a.public_key().as_bytes()));
        assert_eq!(ab.as_bytes(), ba.as_bytes());
    }

    #[test]
    fn generate_from_is_deterministic_and_generate_is_random() {
        let a = PrivateKey::generate_from(&mut rand::rngs::StdRng::seed_from_u64(1));
        let b = PrivateKey::generate_from(&mut rand::rngs::StdRng::seed_from_u64(1));
        let c = PrivateKey::generate_from(&mut rand::rngs::StdRng::seed_from_u64(2));
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_ne!(a.to_bytes(), c.to_bytes());
        assert_ne!(
            PrivateKey::generate().to_bytes(),
            PrivateKey::generate().to_bytes()
        );
    }

    #[test]
    fn debug_does_not_leak_private_key() {
        let key = PrivateKey::from_bytes(unhex(RFC7748_PRIVATE));
        let debug = format!("{key:?}");
        let alt = format!("{key:#?}");
        for shown in [&debug, &alt] {
            assert!(!shown.contains(&RFC7748_PRIVATE[..8]), "{shown}");
            assert!(
                !shown.contains(&RFC7748_PRIVATE[..8].to_uppercase()),
                "{shown}"
            );
            assert!(!shown.contains("119"), "{shown}"); // first byte in decimal
            assert!(shown.contains(&RFC7748_PUBLIC[..16]), "{shown}");
        }
        assert_eq!(
            debug,
            format!("PrivateKey {{ public: \"{}\", .. }}", &RFC7748_PUBLIC[..16])
        );
    }

    #[test]
    fn fingerprint_and_public_debug() {
        let public = PublicKey::from_bytes(unhex(RFC7748_PUBLIC));
        assert_eq!(public.fingerprint(), "8520f0098930a754");
        assert_eq!(format!("{public:?}"), "PublicKey(8520f0098930a754)");
    }

    #[test]
    fn accepts_v2_private_key_with_public_key() {
        let key = PrivateKey::from_bytes(unhex(RFC7748_PRIVATE));
        let mut der = PRIVATE_V2_PREFIX.to_vec();
        der.extend_from_slice(&key.to_bytes());
        der.extend_from_slice(&PRIVATE_V2_PUBLIC_TAG);
        der.extend_from_slice(key.public_key().as_bytes());
        let parsed = PrivateKey::from_pem(&wrap("PRIVATE KEY", &der)).unwrap();
        assert_eq!(parsed.to_bytes(), key.to_bytes());

        // Corrupt the embedded public key.
        let last = der.len() - 1;
        der[last] ^= 1;
        assert!(matches!(
            PrivateKey::from_pem(&wrap("PRIVATE KEY", &der)),
            Err(KeyError::PublicKeyMismatch)
        ));

        // Wrong tag in front of the public key.
        der[last] ^= 1;
        der[PRIVATE_V2_PREFIX.len() + KEY_LEN] = 0xa1;
        assert!(matches!(
            PrivateKey::from_pem(&wrap("PRIVATE KEY", &der)),
            Err(KeyError::NotX25519)
        ));
    }

    #[test]
    fn accepts_crlf_and_surrounding_text() {
        let key = PrivateKey::generate();
        let crlf = key.to_pem().replace('\n', "\r\n");
        assert_eq!(
            PrivateKey::from_pem(&crlf).unwrap().to_bytes(),
            key.to_bytes()
        );

        let public = key.public_key();
        let noisy = format!("# server key\n\n{}\ntrailing comment\n", public.to_pem());
        assert_eq!(PublicKey::from_pem(&noisy).unwrap(), public);

        // A file holding both blocks: each loader picks its own.
        let both = format!("{}{}", key.to_pem(), public.to_pem());
        assert_eq!(
            PrivateKey::from_pem(&both).unwrap().to_bytes(),
            key.to_bytes()
        );
        assert_eq!(PublicKey::from_pem(&both).unwrap(), public);
    }

    #[test]
    fn rejects_garbage() {
        let key = PrivateKey::generate();
        let public = key.public_key();

        for text in [
            "",
            " ",
            "\n",
            "hello world",
            "-----BEGIN PRIVATE KEY-----",
            "\u{0}\u{ff}",
        ] {
            assert!(
                matches!(PrivateKey::from_pem(text), Err(KeyError::Pem(_))),
                "{text:?}"
            );
            assert!(
                matches!(PublicKey::from_pem(text), Err(KeyError::Pem(_))),
                "{text:?}"
            );
        }

        // Bad base64.
        let bad = "-----BEGIN PRIVATE KEY-----\n@@@@\n-----END PRIVATE KEY-----\n";
        assert!(matches!(PrivateKey::from_pem(bad), Err(KeyError::Pem(_))));
        // Mismatched labels.
        let bad = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(matches!(PrivateKey::from_pem(bad), Err(KeyError::Pem(_))));
        // Two private keys.
        let two = format!("{}{}", key.to_pem(), PrivateKey::generate().to_pem());
        assert!(matches!(PrivateKey::from_pem(&two), Err(KeyError::Pem(_))));
        // Legacy PEM headers.
        let headers = key
            .to_pem()
            .replace("KEY-----\n", "KEY-----\nProc-Type: 4,ENCRYPTED\n\n");
        assert!(matches!(
            PrivateKey::from_pem(&headers),
            Err(KeyError::Pem(_))
        ));

        // Wrong labels.
        match PrivateKey::from_pem(&public.to_pem()) {
            Err(KeyError::WrongLabel { found, expected }) => {
                assert_eq!(found, "PUBLIC KEY");
                assert_eq!(expected, "PRIVATE KEY");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            PublicKey::from_pem(&key.to_pem()),
            Err(KeyError::WrongLabel { .. })
        ));
        let encrypted = key.to_pem().replace("PRIVATE", "ENCRYPTED PRIVATE");
        assert!(matches!(
            PrivateKey::from_pem(&encrypted),
            Err(KeyError::WrongLabel { .. })
        ));

        // Right label, wrong contents: empty, other keys' DER swapped in.
        assert!(matches!(
            PrivateKey::from_pem(&wrap("PRIVATE KEY", &[])),
            Err(KeyError::NotX25519)
        ));
        assert!(matches!(
            PrivateKey::from_pem(&wrap("PRIVATE KEY", &public.to_pem().into_bytes())),
            Err(KeyError::NotX25519)
        ));
        let spki_as_private = pem::parse(public.to_pem()).unwrap().into_contents();
        assert!(matches!(
            PrivateKey::from_pem(&wrap("PRIVATE KEY", &spki_as_private)),
            Err(KeyError::NotX25519)
        ));
        assert!(matches!(
            PublicKey::from_pem(&wrap("PUBLIC KEY", &priv_der(&key))),
            Err(KeyError::NotX25519)
        ));

        // Ed25519 (RFC 8410 example): same shape, different OID.
        assert!(matches!(
            PrivateKey::from_pem(ED25519_PEM),
            Err(KeyError::NotX25519)
        ));
    }

    #[test]
    fn rejects_truncated_extended_and_mutated_der() {
        let key = PrivateKey::from_bytes(unhex(RFC7748_PRIVATE));
        let der = priv_der(&key);
        for len in 0..der.len() {
            let r = PrivateKey::from_pem(&wrap("PRIVATE KEY", &der[..len]));
            assert!(matches!(r, Err(KeyError::NotX25519)), "len {len}");
        }
        let mut longer = der.clone();
        longer.push(0);
        assert!(matches!(
            PrivateKey::from_pem(&wrap("PRIVATE KEY", &longer)),
            Err(KeyError::NotX25519)
        ));
        // Any change in the fixed prefix is rejected; changes in the key
        // bytes give a different key.
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0x01;
            let r = PrivateKey::from_pem(&wrap("PRIVATE KEY", &bad));
            if i < PRIVATE_V1_PREFIX.len() {
                assert!(matches!(r, Err(KeyError::NotX25519)), "byte {i}");
            } else {
                assert_ne!(r.unwrap().to_bytes(), key.to_bytes(), "byte {i}");
            }
        }

        let spki = pem::parse(key.public_key().to_pem())
            .unwrap()
            .into_contents();
        for len in 0..spki.len() {
            let r = PublicKey::from_pem(&wrap("PUBLIC KEY", &spki[..len]));
            assert!(matches!(r, Err(KeyError::NotX25519)), "len {len}");
        }
        for i in 0..PUBLIC_PREFIX.len() {
            let mut bad = spki.clone();
            bad[i] ^= 0x80;
            let r = PublicKey::from_pem(&wrap("PUBLIC KEY", &bad));
            assert!(matches!(r, Err(KeyError::NotX25519)), "byte {i}");
        }
    }

    #[test]
    fn random_inputs_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let valid = PrivateKey::generate().to_pem();
        for _ in 0..2000 {
            let len = rng.gen_range(0..120);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            // Random DER under the right labels.
            let _ = PrivateKey::from_pem(&wrap("PRIVATE KEY", &bytes));
            let _ = PublicKey::from_pem(&wrap("PUBLIC KEY", &bytes));
            // Random text.
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let _ = PrivateKey::from_pem(&text);
            let _ = PublicKey::from_pem(&text);
            // Random edits of a valid PEM file (kept ASCII).
            bytes = valid.clone().into_bytes();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..bytes.len());
                bytes[i] = rng.gen_range(0..128);
            }
            bytes.truncate(rng.gen_range(0..=bytes.len()));
            let text = String::from_utf8(bytes).unwrap();
            let _ = PrivateKey::from_pem(&text);
            let _ = PublicKey::from_pem(&text);
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            KeyError::NotX25519.to_string(),
            "not an X25519 key (DER does not match)"
        );
        let e = PrivateKey::from_pem(&PrivateKey::generate().public_key().to_pem()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "PEM label \"PUBLIC KEY\" is not \"PRIVATE KEY\""
        );
        let e = PrivateKey::from_pem("").unwrap_err();
        assert_eq!(e.to_string(), "not PEM: no PEM block found");
    }
}
