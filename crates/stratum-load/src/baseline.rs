//! `noise-baseline`: what the Noise NX handshake's cryptography alone costs on this machine, in
//! memory on one thread (no sockets, no tokio): the floor a server's handshakes/s is compared
//! with. Uses the same sans-IO steps every tower-stratum connection runs
//! ([`NoiseInitiator`] / [`NoiseResponder`], wrapping SRI's `codec_sv2`), with the certificate
//! checked against the authority key as a real client does.

use serde::Serialize;
use std::time::{Duration, Instant};
use tower_stratum_codec::{
    AuthorityKeypair, NoiseInitiator, NoiseResponder, SRI_TEST_AUTHORITY_SECRET_KEY,
};

const MAX_PAYLOAD: usize = 1 << 16;

/// Result of the measurement.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Baseline {
    /// Handshakes timed (after 10% warm-up).
    pub(crate) iterations: u32,
    /// Responder (server) side per handshake: key generation, ECDH, certificate signing,
    /// act 2, µs.
    pub(crate) responder_us: f64,
    /// Initiator (client) side per handshake: act 1, act 2 check, certificate verification, µs.
    pub(crate) initiator_us: f64,
    /// Server-side handshakes per second on one core: `1e6 / responder_us`.
    pub(crate) responder_per_sec_one_core: f64,
    /// Both sides per handshake, µs.
    pub(crate) both_us: f64,
}

/// Runs `iterations` complete handshakes and times each side.
///
/// Errors if a handshake step fails (it cannot with a valid key pair).
pub(crate) fn measure(iterations: u32) -> Result<Baseline, String> {
    let secret = SRI_TEST_AUTHORITY_SECRET_KEY
        .parse()
        .map_err(|e| format!("key: {e}"))?;
    let keys = AuthorityKeypair::from_secret(secret);
    let authority = Some(keys.public());
    let warmup = (iterations / 10).max(1);
    let (mut init, mut resp) = (Duration::ZERO, Duration::ZERO);
    for i in 0..iterations + warmup {
        let t0 = Instant::now();
        let (initiator, act1) =
            NoiseInitiator::new(authority, MAX_PAYLOAD).map_err(|e| e.to_string())?;
        let t1 = Instant::now();
        let responder = NoiseResponder::new(&keys, Duration::from_secs(3600), MAX_PAYLOAD)
            .map_err(|e| e.to_string())?;
        let (act2, _server) = responder.respond(act1).map_err(|e| e.to_string())?;
        let t2 = Instant::now();
        let _client = initiator.finish(act2).map_err(|e| e.to_string())?;
        let t3 = Instant::now();
        if i >= warmup {
            init += (t1 - t0) + (t3 - t2);
            resp += t2 - t1;
        }
    }
    let n = f64::from(iterations.max(1));
    let responder_us = resp.as_secs_f64() * 1e6 / n;
    let initiator_us = init.as_secs_f64() * 1e6 / n;
    Ok(Baseline {
        iterations,
        responder_us,
        initiator_us,
        responder_per_sec_one_core: if responder_us > 0.0 {
            1e6 / responder_us
        } else {
            0.0
        },
        both_us: responder_us + initiator_us,
    })
}

impl Baseline {
    /// Human-readable lines.
    pub(crate) fn to_table(&self) -> String {
        format!(
            "Noise NX handshake crypto, in memory, one thread, {} handshakes:\n  \
             responder (server) {:.1} µs  -> {} handshakes/s per core\n  \
             initiator (client) {:.1} µs\n  both sides         {:.1} µs\n",
            self.iterations,
            self.responder_us,
            crate::report::thousands(self.responder_per_sec_one_core),
            self.initiator_us,
            self.both_us
        )
    }
}
