//! The share submitter: a tokio task that turns [`FoundShare`]s into `SubmitShares.Standard` /
//! `SubmitShares.Extended` (spec 5.3.12, 5.3.13) and sends them upstream through the client
//! service (`Request::SendUpstream(Subprotocol::Mining, ..)`, the request that reaches the
//! upstream connection of a client).
//!
//! A share found on a work whose chain tip (or connection) has since been replaced is stale:
//! it is counted and dropped, never sent.

use crate::dump;
use crate::miner::{FoundShare, WorkReceiver};
use crate::stats::Stats;
use crate::work::ShareKind;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};
use tower_stratum::stratum_core::binary_sv2::B032Owned;
use tower_stratum::stratum_core::mining_sv2::{
    SubmitSharesExtendedOwned, SubmitSharesStandardOwned,
};
use tower_stratum::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum::{Request, Response, ServiceError, Subprotocol, Sv2Message};
use tracing::{debug, warn};

/// The SubmitShares message for `share` with `sequence_number`, or `None` if its extranonce
/// is longer than 32 bytes (impossible for shares built from a valid channel) or it is an Sv1
/// share ([`ShareKind::Sv1`], submitted by [`crate::sv1`] instead).
pub fn submit_message(share: &FoundShare, sequence_number: u32) -> Option<Sv2Message> {
    let m = match share.share_kind {
        ShareKind::Sv1 => return None,
        ShareKind::Standard => MiningOwned::SubmitSharesStandard(SubmitSharesStandardOwned {
            channel_id: share.channel_id,
            sequence_number,
            job_id: share.job_id,
            nonce: share.nonce,
            ntime: share.ntime,
            version: share.version,
        }),
        ShareKind::Extended => MiningOwned::SubmitSharesExtended(SubmitSharesExtendedOwned {
            channel_id: share.channel_id,
            sequence_number,
            job_id: share.job_id,
            nonce: share.nonce,
            ntime: share.ntime,
            version: share.version,
            extranonce: B032Owned::try_from(share.extranonce.clone()).ok()?,
        }),
    };
    Some(Sv2Message::Mining(m))
}

/// Submits every share from `shares` through `service` until `shares` closes or the service
/// stops. Sequence numbers start at 1 and increase by one per submitted share.
pub async fn run<S>(
    mut shares: mpsc::Receiver<FoundShare>,
    mut service: S,
    work: WorkReceiver,
    stats: Arc<Stats>,
    dump_protocol: bool,
) where
    S: Service<Request, Response = Response, Error = ServiceError>,
{
    let mut sequence_number: u32 = 0;
    while let Some(share) = shares.recv().await {
        let current = work.borrow().as_ref().map(|w| w.tip_epoch);
        if current != Some(share.tip_epoch) {
            stats.stale.fetch_add(1, Ordering::Relaxed);
            debug!(job_id = share.job_id, "stale share dropped");
            continue;
        }
        sequence_number = sequence_number.wrapping_add(1);
        let Some(msg) = submit_message(&share, sequence_number) else {
            warn!("share with an oversized extranonce (or not an Sv2 share) dropped");
            continue;
        };
        if dump_protocol {
            dump::outbound(&msg);
        }
        let sent = match service.ready().await {
            Ok(s) => {
                s.call(Request::SendUpstream(Subprotocol::Mining, msg))
                    .await
            }
            Err(e) => Err(e),
        };
        match sent {
            Ok(_) => {
                stats.submitted.fetch_add(1, Ordering::Relaxed);
            }
            Err(ServiceError::Stopped) => return,
            Err(e) => warn!(error = %e, "share not sent"),
        }
    }
}
