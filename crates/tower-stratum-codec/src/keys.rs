//! Authority keys (spec 4.5.3 / 4.7) in SRI's text format.
//!
//! The pool's *authority key* signs the certificate a responder sends in the Noise handshake;
//! clients pin the authority *public* key. Both halves are secp256k1 keys; the public key is used
//! x-only (BIP 340, 32 bytes).
//!
//! Text format, as SRI's `key_utils` and the spec's test vector (4.7.1) use it:
//!
//! - public key: base58check of `version (U16 LE, = 1) || x-only key (32 bytes)`, 34 bytes before
//!   the 4-byte checksum;
//! - secret key: base58check of the 32-byte secret scalar.

use rand::RngCore;
use std::{fmt, str::FromStr};
use stratum_core::bitcoin::{
    base58,
    secp256k1::{Keypair, Secp256k1, SecretKey, XOnlyPublicKey},
};

/// The version prefix of an encoded authority public key (spec 4.7: U16 LE `1`).
pub const AUTHORITY_PUBLIC_KEY_VERSION: u16 = 1;

/// SRI's well-known **test** authority public key (the SRI hosted test pool uses it).
///
/// **Public and insecure**: its secret half is [`SRI_TEST_AUTHORITY_SECRET_KEY`], published in
/// SRI's repositories. Anyone can sign certificates with it. Use only for tests and local
/// interop with SRI's example configurations, never to authenticate a real pool.
pub const SRI_TEST_AUTHORITY_PUBLIC_KEY: &str =
    "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";

/// SRI's well-known **test** authority secret key, the secret half of
/// [`SRI_TEST_AUTHORITY_PUBLIC_KEY`].
///
/// **Public and insecure**: published in SRI's repositories and configuration examples. A
/// responder using it can be impersonated by anyone. Tests and local interop only.
pub const SRI_TEST_AUTHORITY_SECRET_KEY: &str = "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n";

/// Why an authority key could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not valid base58, or its 4-byte checksum does not match.
    #[error("invalid base58check: {0}")]
    Base58(String),
    /// The decoded key has the wrong number of bytes (34 for a public key including the version
    /// prefix, 32 for a secret key).
    #[error("wrong key length: expected {expected} bytes, got {actual}")]
    Length {
        /// Expected decoded length in bytes.
        expected: usize,
        /// Actual decoded length in bytes.
        actual: usize,
    },
    /// The public key's U16 LE version prefix is not [`AUTHORITY_PUBLIC_KEY_VERSION`].
    #[error("unsupported authority public key version {0}")]
    Version(u16),
    /// The bytes are not a valid secp256k1 key: not an x coordinate on the curve (public), or
    /// zero / not below the group order (secret).
    #[error("not a valid secp256k1 key")]
    InvalidKey,
    /// A public key and a secret key given together do not belong to each other.
    #[error("public key does not match the secret key")]
    Mismatch,
}

/// An authority public key: a 32-byte x-only secp256k1 key (BIP 340).
///
/// Parse from and print to SRI's text format with [`FromStr`] / [`fmt::Display`]
/// (base58check of `U16 LE version 1 || 32 key bytes`). Spec 4.7.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthorityPublicKey(XOnlyPublicKey);

impl AuthorityPublicKey {
    /// Builds the key from its 32 x-only bytes (the x coordinate, big-endian as in BIP 340).
    ///
    /// Errors with [`KeyError::InvalidKey`] if the bytes are not an x coordinate on the curve.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        XOnlyPublicKey::from_slice(&bytes)
            .map(Self)
            .map_err(|_| KeyError::InvalidKey)
    }

    /// The 32 x-only key bytes, as passed to noise_sv2 and signed over in certificates.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.serialize()
    }

    /// The key as a `secp256k1` x-only public key.
    pub fn as_x_only(&self) -> &XOnlyPublicKey {
        &self.0
    }
}

impl From<XOnlyPublicKey> for AuthorityPublicKey {
    fn from(k: XOnlyPublicKey) -> Self {
        Self(k)
    }
}

impl FromStr for AuthorityPublicKey {
    type Err = KeyError;

    /// Parses SRI's text format; errors with [`KeyError::Base58`], [`KeyError::Length`] (decoded
    /// length other than 34), [`KeyError::Version`] or [`KeyError::InvalidKey`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let decoded = base58::decode_check(s).map_err(|e| KeyError::Base58(e.to_string()))?;
        let decoded: [u8; 34] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Length {
                expected: 34,
                actual: decoded.len(),
            })?;
        let version = u16::from_le_bytes([decoded[0], decoded[1]]);
        if version != AUTHORITY_PUBLIC_KEY_VERSION {
            return Err(KeyError::Version(version));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&decoded[2..]);
        Self::from_bytes(key)
    }
}

impl fmt::Display for AuthorityPublicKey {
    /// Writes SRI's text format (base58check, version-prefixed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 34];
        out[..2].copy_from_slice(&AUTHORITY_PUBLIC_KEY_VERSION.to_le_bytes());
        out[2..].copy_from_slice(&self.0.serialize());
        base58::encode_check_to_fmt(f, &out)
    }
}

impl fmt::Debug for AuthorityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorityPublicKey({self})")
    }
}

/// An authority secret key: a 32-byte secp256k1 secret scalar.
///
/// [`fmt::Display`] prints the secret in SRI's text format (base58check of the 32 bytes), so that
/// configuration files can be written; [`fmt::Debug`] redacts it so it does not end up in logs.
/// Not `Copy`, so copies of the secret are explicit.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthoritySecretKey(SecretKey);

impl AuthoritySecretKey {
    /// Builds the key from its 32 big-endian scalar bytes.
    ///
    /// Errors with [`KeyError::InvalidKey`] if the scalar is zero or not below the curve order.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        SecretKey::from_slice(&bytes)
            .map(Self)
            .map_err(|_| KeyError::InvalidKey)
    }

    /// The 32 secret bytes (big-endian scalar). Handle with care.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.secret_bytes()
    }

    /// Derives the matching x-only [`AuthorityPublicKey`].
    pub fn public_key(&self) -> AuthorityPublicKey {
        let secp = Secp256k1::signing_only();
        let (x_only, _parity) = Keypair::from_secret_key(&secp, &self.0).x_only_public_key();
        AuthorityPublicKey(x_only)
    }
}

impl FromStr for AuthoritySecretKey {
    type Err = KeyError;

    /// Parses SRI's text format; errors with [`KeyError::Base58`], [`KeyError::Length`] (decoded
    /// length other than 32) or [`KeyError::InvalidKey`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let decoded = base58::decode_check(s).map_err(|e| KeyError::Base58(e.to_string()))?;
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Length {
                expected: 32,
                actual: decoded.len(),
            })?;
        Self::from_bytes(bytes)
    }
}

impl fmt::Display for AuthoritySecretKey {
    /// Writes the **secret** in SRI's text format (base58check of the 32 bytes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        base58::encode_check_to_fmt(f, &self.0.secret_bytes())
    }
}

impl fmt::Debug for AuthoritySecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthoritySecretKey(<redacted>)")
    }
}

/// A responder's authority key pair: the secret that signs handshake certificates and the
/// public key clients pin (spec 4.5.3).
///
/// The two halves always match: build it with [`Self::from_secret`], [`Self::from_parts`]
/// (checked) or [`Self::generate`]. The fields are private for that reason; read them with
/// [`Self::public`] and [`Self::secret`]. Not `Copy`, like [`AuthoritySecretKey`].
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorityKeypair {
    public: AuthorityPublicKey,
    secret: AuthoritySecretKey,
}

impl AuthorityKeypair {
    /// Builds the pair from a secret key, deriving the public key.
    pub fn from_secret(secret: AuthoritySecretKey) -> Self {
        Self {
            public: secret.public_key(),
            secret,
        }
    }

    /// Builds the pair from both halves, e.g. as read from a configuration file.
    ///
    /// Errors with [`KeyError::Mismatch`] if `public` is not the key `secret` derives.
    pub fn from_parts(
        public: AuthorityPublicKey,
        secret: AuthoritySecretKey,
    ) -> Result<Self, KeyError> {
        if secret.public_key() != public {
            return Err(KeyError::Mismatch);
        }
        Ok(Self { public, secret })
    }

    /// Generates a fresh key pair from the operating system's RNG (`rand::rngs::OsRng`, i.e.
    /// `getrandom`).
    ///
    /// # Panics
    ///
    /// Only if the operating system cannot provide random bytes at all (`OsRng::fill_bytes`
    /// panics then); nothing a peer controls can cause it.
    pub fn generate() -> Self {
        loop {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            // A uniformly random 32-byte string is a valid scalar with probability 1 - 2^-128.
            if let Ok(secret) = AuthoritySecretKey::from_bytes(bytes) {
                return Self::from_secret(secret);
            }
        }
    }

    /// The public half (what clients pin).
    pub fn public(&self) -> AuthorityPublicKey {
        self.public
    }

    /// The secret half.
    pub fn secret(&self) -> &AuthoritySecretKey {
        &self.secret
    }
}

impl fmt::Debug for AuthorityKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorityKeypair")
            .field("public", &self.public)
            .field("secret", &self.secret)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn sri_test_keys_parse_and_match() {
        let public: AuthorityPublicKey = SRI_TEST_AUTHORITY_PUBLIC_KEY.parse().unwrap();
        let secret: AuthoritySecretKey = SRI_TEST_AUTHORITY_SECRET_KEY.parse().unwrap();
        assert_eq!(secret.public_key(), public);
        assert_eq!(public.to_string(), SRI_TEST_AUTHORITY_PUBLIC_KEY);
        assert_eq!(secret.to_string(), SRI_TEST_AUTHORITY_SECRET_KEY);
        let kp = AuthorityKeypair::from_parts(public, secret.clone()).unwrap();
        assert_eq!(kp, AuthorityKeypair::from_secret(secret));
    }

    #[test]
    fn generated_keypair_round_trips_through_text() {
        let kp = AuthorityKeypair::generate();
        let public: AuthorityPublicKey = kp.public().to_string().parse().unwrap();
        let secret: AuthoritySecretKey = kp.secret().to_string().parse().unwrap();
        assert_eq!(public, kp.public());
        assert_eq!(&secret, kp.secret());
        assert_eq!(secret.public_key(), public);
        assert_ne!(kp, AuthorityKeypair::generate());
    }

    #[test]
    fn mismatched_pair_is_rejected() {
        let a = AuthorityKeypair::generate();
        let b = AuthorityKeypair::generate();
        assert_eq!(
            AuthorityKeypair::from_parts(a.public(), b.secret().clone()),
            Err(KeyError::Mismatch)
        );
    }

    #[test]
    fn malformed_text_is_rejected() {
        // A secret key is 32 bytes: parsing it as a public key is a length error, and back.
        assert_eq!(
            SRI_TEST_AUTHORITY_SECRET_KEY.parse::<AuthorityPublicKey>(),
            Err(KeyError::Length {
                expected: 34,
                actual: 32
            })
        );
        assert_eq!(
            SRI_TEST_AUTHORITY_PUBLIC_KEY.parse::<AuthoritySecretKey>(),
            Err(KeyError::Length {
                expected: 32,
                actual: 34
            })
        );
        // Flip the last character: checksum mismatch.
        let mut bad = SRI_TEST_AUTHORITY_PUBLIC_KEY.to_string();
        let last = bad.pop().unwrap();
        bad.push(if last == '2' { '3' } else { '2' });
        assert!(matches!(
            bad.parse::<AuthorityPublicKey>(),
            Err(KeyError::Base58(_))
        ));
        assert!(matches!(
            "0OIl".parse::<AuthorityPublicKey>(),
            Err(KeyError::Base58(_))
        ));
        // Version 2 is not a known key format.
        let kp = AuthorityKeypair::generate();
        let mut raw = [0u8; 34];
        raw[0] = 2;
        raw[2..].copy_from_slice(&kp.public().to_bytes());
        assert_eq!(
            base58::encode_check(&raw).parse::<AuthorityPublicKey>(),
            Err(KeyError::Version(2))
        );
        // The zero scalar is not a secret key.
        assert_eq!(
            base58::encode_check(&[0u8; 32]).parse::<AuthoritySecretKey>(),
            Err(KeyError::InvalidKey)
        );
    }

    #[test]
    fn debug_redacts_the_secret() {
        let secret: AuthoritySecretKey = SRI_TEST_AUTHORITY_SECRET_KEY.parse().unwrap();
        let kp = AuthorityKeypair::from_secret(secret);
        let dbg = format!("{kp:?}");
        assert!(!dbg.contains(SRI_TEST_AUTHORITY_SECRET_KEY), "{dbg}");
        assert!(dbg.contains(SRI_TEST_AUTHORITY_PUBLIC_KEY), "{dbg}");
    }
}
