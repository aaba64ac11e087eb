//! Builders for the few client-to-server messages the load generator sends (spec 3.6.1
//! SetupConnection, 5.3.2 / 5.3.4 OpenStandard/ExtendedMiningChannel, 5.3.12
//! SubmitShares.Standard / .Extended). Copied in spirit from the test kit's `msg.rs`: a binary
//! must not depend on the test kit.

use tower_stratum_core::session::{str0255, REQUIRES_STANDARD_JOBS};
use tower_stratum_core::stratum_core::binary_sv2::{B032Owned, Str0255Owned};
use tower_stratum_core::stratum_core::common_messages_sv2::SetupConnectionOwned;
use tower_stratum_core::stratum_core::mining_sv2::{
    SubmitSharesExtendedOwned, SubmitSharesStandardOwned,
};
use tower_stratum_core::stratum_core::parsers_sv2::{CommonMessagesOwned, MiningOwned};
use tower_stratum_core::{Subprotocol, Sv2Message};

use crate::job::ChannelKind;

/// A `Str0255` from `s`, truncated to 255 bytes at a character boundary (`None` only if SRI's
/// type refused it, which it does not for 255 bytes or less).
fn str255(s: &str) -> Option<Str0255Owned> {
    str0255(s)
}

/// `SetupConnection` for the Mining Protocol, version 2 only. Standard channels ask for
/// `REQUIRES_STANDARD_JOBS` (so jobs come as `NewMiningJob` per channel, spec 5.3.1), extended
/// channels for nothing. `endpoint_*` names the server as dialled. `None` if a string field
/// does not encode (cannot happen for these values).
pub(crate) fn setup_connection(
    kind: Option<ChannelKind>,
    host: &str,
    port: u16,
) -> Option<Sv2Message> {
    let flags = match kind {
        Some(ChannelKind::Standard) => REQUIRES_STANDARD_JOBS,
        _ => 0,
    };
    Some(Sv2Message::Common(CommonMessagesOwned::SetupConnection(
        SetupConnectionOwned {
            protocol: Subprotocol::Mining.to_sri(),
            min_version: 2,
            max_version: 2,
            flags,
            endpoint_host: str255(host)?,
            endpoint_port: port,
            vendor: str255("stratum-load")?,
            hardware_version: str255("")?,
            firmware: str255(env!("CARGO_PKG_VERSION"))?,
            device_id: str255("")?,
        },
    )))
}

/// What a load-generator channel asks for when it opens.
#[derive(Debug, Clone)]
pub(crate) struct OpenRequest {
    /// Standard or extended.
    pub(crate) kind: ChannelKind,
    /// `user_identity`.
    pub(crate) user_identity: String,
    /// `nominal_hash_rate`, H/s. Tiny, so the server's initial target is its easiest.
    pub(crate) nominal_hash_rate: f32,
    /// Extended channels: `min_extranonce_size`, bytes.
    pub(crate) min_extranonce_size: u16,
}

/// One share to submit, as found by [`crate::job::Channel::next_share`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Share {
    /// Channel the share is for.
    pub(crate) channel_id: u32,
    /// Job it was found on.
    pub(crate) job_id: u32,
    /// Header nonce.
    pub(crate) nonce: u32,
    /// Header ntime.
    pub(crate) ntime: u32,
    /// Header version.
    pub(crate) version: u32,
    /// Extended channels: the rollable extranonce (after `extranonce_prefix`); `None` for
    /// standard channels.
    pub(crate) extranonce: Option<Vec<u8>>,
}

/// The `SubmitShares.Standard` / `.Extended` for `share` with `sequence_number`.
///
/// Returns `None` if the extranonce is longer than 32 bytes (never for shares built from a
/// channel the server opened).
pub(crate) fn submit(share: &Share, sequence_number: u32) -> Option<Sv2Message> {
    let m = match &share.extranonce {
        None => MiningOwned::SubmitSharesStandard(SubmitSharesStandardOwned {
            channel_id: share.channel_id,
            sequence_number,
            job_id: share.job_id,
            nonce: share.nonce,
            ntime: share.ntime,
            version: share.version,
        }),
        Some(extranonce) => MiningOwned::SubmitSharesExtended(SubmitSharesExtendedOwned {
            channel_id: share.channel_id,
            sequence_number,
            job_id: share.job_id,
            nonce: share.nonce,
            ntime: share.ntime,
            version: share.version,
            extranonce: B032Owned::try_from(extranonce.clone()).ok()?,
        }),
    };
    Some(Sv2Message::Mining(m))
}
