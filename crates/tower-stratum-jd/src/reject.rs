//! Why a declaration is refused: a `DeclareMiningJob.Error` `error_code` (spec 6.4.6) and its
//! human-readable `error_details`.

use tower_stratum_core::message::JobDeclarationOwned;
use tower_stratum_core::session::str0255;
use tower_stratum_core::stratum_core::job_declaration_sv2::{
    DeclareMiningJobErrorOwned, ERROR_CODE_DECLARE_MINING_JOB_INTERNAL_ERROR,
    ERROR_CODE_DECLARE_MINING_JOB_INVALID_COINBASE_TX,
    ERROR_CODE_DECLARE_MINING_JOB_INVALID_COINBASE_TX_INPUT,
    ERROR_CODE_DECLARE_MINING_JOB_INVALID_JOB,
    ERROR_CODE_DECLARE_MINING_JOB_INVALID_MINING_JOB_TOKEN,
    ERROR_CODE_DECLARE_MINING_JOB_MISSING_TXS, ERROR_CODE_DECLARE_MINING_JOB_STALE_CHAIN_TIP,
};
use tower_stratum_core::Sv2Message;

/// A refused declaration: one of `job_declaration_sv2`'s `ERROR_CODE_DECLARE_MINING_JOB_*`
/// codes and the details sent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) code: &'static str,
    pub(crate) details: String,
}

impl Rejection {
    pub(crate) fn invalid_token(details: String) -> Self {
        Self {
            code: ERROR_CODE_DECLARE_MINING_JOB_INVALID_MINING_JOB_TOKEN,
            details,
        }
    }
    pub(crate) fn invalid_coinbase_tx(details: String) -> Self {
        Self {
            code: ERROR_CODE_DECLARE_MINING_JOB_INVALID_COINBASE_TX,
            details,
        }
    }
    pub(crate) fn invalid_coinbase_tx_input(details: String) -> Self {
        Self {
            code: ERROR_CODE_DECLARE_MINING_JOB_INVALID_COINBASE_TX_INPUT,
            details,
        }
    }
    pub(crate) fn stale_chain_tip(details: String) -> Self {
        Self {
            code: ERROR_CODE_DECLARE_MINING_JOB_STALE_CHAIN_TIP,
            details,
        }
    }
    pub(crate) fn missing_txs(details: String) -> Self {
        Self {
            code: ERROR_CODE_DECLARE_MINING_JOB_MISSING_TXS,
            details,
        }
    }
    pub(crate) fn invalid_job(details: String) -> Self {
        Self {
            code: ERROR_CODE_DECLARE_MINING_JOB_INVALID_JOB,
            details,
        }
    }
    pub(crate) fn internal_error(details: String) -> Self {
        Self {
            code: ERROR_CODE_DECLARE_MINING_JOB_INTERNAL_ERROR,
            details,
        }
    }

    /// The `DeclareMiningJob.Error` for `request_id` (details cut to 65,535 bytes, the
    /// `B0_64K` limit).
    pub(crate) fn message(&self, request_id: u32) -> Option<Sv2Message> {
        let mut details = self.details.as_bytes().to_vec();
        details.truncate(usize::from(u16::MAX));
        Some(Sv2Message::JobDeclaration(
            JobDeclarationOwned::DeclareMiningJobError(DeclareMiningJobErrorOwned {
                request_id,
                error_code: str0255(self.code)?,
                error_details: details.try_into().ok()?,
            }),
        ))
    }
}
