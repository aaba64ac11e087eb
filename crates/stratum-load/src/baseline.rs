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
    /// Handshakes timed.
    pub(crate) iterations: u32,
    /// Responder (server) side per handshake, CPU time of this process: key generation,
    /// ECDH, certificate signing, act 2, µs.
    pub(crate) responder_cpu_us: f64,
    /// Initiator (client) side per handshake, CPU time: act 1, act 2 check, certificate
    /// verification, µs.
    pub(crate) initiator_cpu_us: f64,
    /// Server-side handshakes per second on one core: `1e6 / responder_cpu_us`.
    pub(crate) responder_per_sec_one_core: f64,
    /// Responder side per handshake, wall-clock time (inflated when the machine is busy), µs.
    pub(crate) responder_wall_us: f64,
    /// Initiator side per handshake, wall-clock time, µs.
    pub(crate) initiator_wall_us: f64,
}

fn cpu_now(ticks: f64) -> f64 {
    crate::procfs::cpu_secs(std::process::id(), ticks).unwrap_or(0.0)
}

/// Runs `iterations` complete handshakes in three batches (all acts 1, all responses, all
/// finishes) and times each side in CPU time (`/proc/self/stat`, 10 ms ticks, so use at least
/// a few hundred iterations) and wall-clock time.
///
/// Errors if a handshake step fails (it cannot with a valid key pair).
pub(crate) fn measure(iterations: u32) -> Result<Baseline, String> {
    let secret = SRI_TEST_AUTHORITY_SECRET_KEY
        .parse()
        .map_err(|e| format!("key: {e}"))?;
    let keys = AuthorityKeypair::from_secret(secret);
    let authority = Some(keys.public());
    let ticks = crate::procfs::clock_ticks();
    let n = iterations.max(1);
    // warm-up
    for _ in 0..(n / 20).max(1) {
        let (i, act1) = NoiseInitiator::new(authority, MAX_PAYLOAD).map_err(|e| e.to_string())?;
        let r = NoiseResponder::new(&keys, Duration::from_secs(3600), MAX_PAYLOAD)
            .map_err(|e| e.to_string())?;
        let (act2, _) = r.respond(act1).map_err(|e| e.to_string())?;
        i.finish(act2).map_err(|e| e.to_string())?;
    }
    let (c0, w0) = (cpu_now(ticks), Instant::now());
    let mut initiators = Vec::with_capacity(n as usize);
    for _ in 0..n {
        initiators.push(NoiseInitiator::new(authority, MAX_PAYLOAD).map_err(|e| e.to_string())?);
    }
    let (c1, w1) = (cpu_now(ticks), Instant::now());
    let mut answers = Vec::with_capacity(n as usize);
    for (_, act1) in &initiators {
        let r = NoiseResponder::new(&keys, Duration::from_secs(3600), MAX_PAYLOAD)
            .map_err(|e| e.to_string())?;
        answers.push(r.respond(*act1).map_err(|e| e.to_string())?.0);
    }
    let (c2, w2) = (cpu_now(ticks), Instant::now());
    for ((initiator, _), act2) in initiators.into_iter().zip(answers) {
        initiator.finish(act2).map_err(|e| e.to_string())?;
    }
    let (c3, w3) = (cpu_now(ticks), Instant::now());
    let per = |d: f64| d * 1e6 / f64::from(n);
    let responder_cpu_us = per(c2 - c1);
    Ok(Baseline {
        iterations: n,
        responder_cpu_us,
        initiator_cpu_us: per((c1 - c0) + (c3 - c2)),
        responder_per_sec_one_core: if responder_cpu_us > 0.0 {
            1e6 / responder_cpu_us
        } else {
            0.0
        },
        responder_wall_us: per((w2 - w1).as_secs_f64()),
        initiator_wall_us: per(((w1 - w0) + (w3 - w2)).as_secs_f64()),
    })
}

impl Baseline {
    /// Human-readable lines.
    pub(crate) fn to_table(&self) -> String {
        format!(
            "Noise NX handshake crypto, in memory, one thread, {} handshakes (CPU time; wall \
             time in brackets):\n  \
             responder (server) {:.1} µs [{:.1} µs] -> {} handshakes/s per core\n  \
             initiator (client) {:.1} µs [{:.1} µs]\n",
            self.iterations,
            self.responder_cpu_us,
            self.responder_wall_us,
            crate::report::thousands(self.responder_per_sec_one_core),
            self.initiator_cpu_us,
            self.initiator_wall_us,
        )
    }
}
