//! Authority keys against the spec test vector (4.7.1) and SRI's public test keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tower_stratum_codec::{
    AuthorityKeypair, AuthorityPublicKey, AuthoritySecretKey, KeyError, ACT1_LEN,
    ENCRYPTED_HEADER_LEN, MAC_LEN, MAX_CIPHERTEXT_CHUNK_LEN, SRI_TEST_AUTHORITY_PUBLIC_KEY,
    SRI_TEST_AUTHORITY_SECRET_KEY,
};

const VECTORS: &str = include_str!("data/sv2_noise_and_key_vectors.json");

#[test]
fn sri_test_keys_parse_and_secret_derives_public() {
    let public: AuthorityPublicKey = SRI_TEST_AUTHORITY_PUBLIC_KEY.parse().unwrap();
    let secret: AuthoritySecretKey = SRI_TEST_AUTHORITY_SECRET_KEY.parse().unwrap();
    assert_eq!(secret.public_key(), public);
    assert_eq!(
        AuthorityKeypair::from_secret(secret.clone()).public(),
        public
    );
    assert_eq!(public.to_string(), SRI_TEST_AUTHORITY_PUBLIC_KEY);
    assert_eq!(secret.to_string(), SRI_TEST_AUTHORITY_SECRET_KEY);
}

#[test]
fn spec_test_vector_round_trips() {
    let v: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    let raw: Vec<u8> = v["raw_ca_public_key"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
        .collect();
    let raw: [u8; 32] = raw.try_into().unwrap();
    assert_eq!(v["version_prefix_le_u16"], serde_json::json!([1, 0]));
    let text = v["prefixed_base58check"].as_str().unwrap();

    let from_raw = AuthorityPublicKey::from_bytes(raw).unwrap();
    assert_eq!(from_raw.to_string(), text);
    let parsed: AuthorityPublicKey = text.parse().unwrap();
    assert_eq!(parsed, from_raw);
    assert_eq!(parsed.to_bytes(), raw);

    // The SRI hosted pool's key (the SRI test key) parses and prints back unchanged.
    let others = &v["other_public_authority_keys_seen_in_configs"];
    let sri = others["SRI hosted pool 75.119.150.111:34254"]
        .as_str()
        .unwrap();
    assert_eq!(sri, SRI_TEST_AUTHORITY_PUBLIC_KEY);
    assert_eq!(sri.parse::<AuthorityPublicKey>().unwrap().to_string(), sri);
    // The Braiins key there is base58check of 32 bytes with no version prefix: not SRI's format,
    // and rejected exactly as SRI's key_utils rejects it (wrong length).
    let braiins = others["Braiins pool 18.196.32.109:3336 (commented out)"]
        .as_str()
        .unwrap();
    assert_eq!(
        braiins.parse::<AuthorityPublicKey>(),
        Err(KeyError::Length {
            expected: 34,
            actual: 32
        })
    );
}

#[test]
fn noise_sizes_match_the_vector_file() {
    let v: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    let sizes = &v["handshake_sizes"];
    assert_eq!(sizes["act1_bytes"], ACT1_LEN);
    assert_eq!(sizes["encrypted_header_bytes"], ENCRYPTED_HEADER_LEN);
    assert_eq!(sizes["max_noise_ct"], MAX_CIPHERTEXT_CHUNK_LEN);
    assert_eq!(sizes["mac"], MAC_LEN);
    // `act2_bytes` there is 170, the size from spec revisions with 32-byte keys; with
    // ElligatorSwift keys (what SRI's noise_sv2 and the current spec use) act 2 is 234 bytes.
    assert_eq!(tower_stratum_codec::ACT2_LEN, 64 + 80 + 90);
}
