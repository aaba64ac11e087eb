//! Builders for the Sv2 messages tests send.

use tower_stratum_core::extensions::{
    decode_negotiation, encode_negotiation, ExtensionsNegotiationOwned,
    RequestExtensionsErrorOwned, RequestExtensionsOwned, RequestExtensionsSuccessOwned,
    EXTENSIONS_NEGOTIATION,
};
use tower_stratum_core::frame::Frame;
use tower_stratum_core::session::str0255;
use tower_stratum_core::stratum_core::binary_sv2::U256Owned;
use tower_stratum_core::stratum_core::binary_sv2::{B032Owned, Seq064KOwned};
use tower_stratum_core::stratum_core::common_messages_sv2::{
    ReconnectOwned, SetupConnectionErrorOwned, SetupConnectionOwned, SetupConnectionSuccess,
};
use tower_stratum_core::stratum_core::mining_sv2::{
    NewMiningJobOwned, OpenExtendedMiningChannelOwned, OpenStandardMiningChannelOwned,
    SubmitSharesExtendedOwned, SubmitSharesStandardOwned,
};
use tower_stratum_core::stratum_core::parsers_sv2::{
    CommonMessagesOwned, MiningOwned, TemplateDistributionOwned,
};
use tower_stratum_core::stratum_core::template_distribution_sv2::CoinbaseOutputConstraintsOwned;
use tower_stratum_core::{Subprotocol, Sv2Message};

pub fn s(v: &str) -> tower_stratum_core::stratum_core::binary_sv2::Str0255Owned {
    str0255(v).unwrap()
}

pub fn setup_connection(p: Subprotocol, min: u16, max: u16, flags: u32) -> Sv2Message {
    Sv2Message::Common(CommonMessagesOwned::SetupConnection(SetupConnectionOwned {
        protocol: p.to_sri(),
        min_version: min,
        max_version: max,
        flags,
        endpoint_host: s("127.0.0.1"),
        endpoint_port: 0,
        vendor: s("test-kit"),
        hardware_version: s(""),
        firmware: s(""),
        device_id: s(""),
    }))
}

pub fn setup_connection_owned(p: Subprotocol, flags: u32) -> SetupConnectionOwned {
    match setup_connection(p, 2, 2, flags) {
        Sv2Message::Common(CommonMessagesOwned::SetupConnection(s)) => s,
        _ => unreachable!(),
    }
}

pub fn setup_success(version: u16, flags: u32) -> Sv2Message {
    Sv2Message::Common(CommonMessagesOwned::SetupConnectionSuccess(
        SetupConnectionSuccess {
            used_version: version,
            flags,
        },
    ))
}

pub fn setup_error(flags: u32, code: &str) -> Sv2Message {
    Sv2Message::Common(CommonMessagesOwned::SetupConnectionError(
        SetupConnectionErrorOwned {
            flags,
            error_code: s(code),
        },
    ))
}

pub fn reconnect(host: &str, port: u16) -> Sv2Message {
    Sv2Message::Common(CommonMessagesOwned::Reconnect(ReconnectOwned {
        new_host: s(host),
        new_port: port,
    }))
}

pub fn open_standard(request_id: u32) -> Sv2Message {
    Sv2Message::Mining(MiningOwned::OpenStandardMiningChannel(
        OpenStandardMiningChannelOwned {
            request_id,
            user_identity: s("tester"),
            nominal_hash_rate: 1.0e6,
            max_target: U256Owned::from([0xffu8; 32]),
        },
    ))
}

pub fn open_extended(request_id: u32) -> Sv2Message {
    Sv2Message::Mining(MiningOwned::OpenExtendedMiningChannel(
        OpenExtendedMiningChannelOwned {
            request_id,
            user_identity: s("tester"),
            nominal_hash_rate: 1.0e6,
            max_target: U256Owned::from([0xffu8; 32]),
            min_extranonce_size: 8,
        },
    ))
}

pub fn submit_standard(channel_id: u32, sequence_number: u32) -> Sv2Message {
    Sv2Message::Mining(MiningOwned::SubmitSharesStandard(
        SubmitSharesStandardOwned {
            channel_id,
            sequence_number,
            job_id: 1,
            nonce: 0,
            ntime: 0,
            version: 0x2000_0000,
        },
    ))
}

pub fn submit_extended(channel_id: u32, sequence_number: u32) -> Sv2Message {
    Sv2Message::Mining(MiningOwned::SubmitSharesExtended(
        SubmitSharesExtendedOwned {
            channel_id,
            sequence_number,
            job_id: 1,
            nonce: 0,
            ntime: 0,
            version: 0x2000_0000,
            extranonce: B032Owned::try_from(vec![0u8; 8]).unwrap(),
        },
    ))
}

/// `RequestExtensions` (extension 0x0001) as the raw extension message that carries it.
pub fn request_extensions(request_id: u16, ids: &[u16]) -> Sv2Message {
    encode_negotiation(ExtensionsNegotiationOwned::RequestExtensions(
        RequestExtensionsOwned {
            request_id,
            requested_extensions: Seq064KOwned::new(ids.to_vec()).unwrap(),
        },
    ))
    .unwrap()
}

/// `RequestExtensions.Success`.
pub fn request_extensions_success(request_id: u16, ids: &[u16]) -> Sv2Message {
    encode_negotiation(ExtensionsNegotiationOwned::RequestExtensionsSuccess(
        RequestExtensionsSuccessOwned {
            request_id,
            supported_extensions: Seq064KOwned::new(ids.to_vec()).unwrap(),
        },
    ))
    .unwrap()
}

/// `RequestExtensions.Error`.
pub fn request_extensions_error(
    request_id: u16,
    unsupported: &[u16],
    required: &[u16],
) -> Sv2Message {
    encode_negotiation(ExtensionsNegotiationOwned::RequestExtensionsError(
        RequestExtensionsErrorOwned {
            request_id,
            unsupported_extensions: Seq064KOwned::new(unsupported.to_vec()).unwrap(),
            required_extensions: Seq064KOwned::new(required.to_vec()).unwrap(),
        },
    ))
    .unwrap()
}

/// The extension 0x0001 message `m` carries, if it is one.
pub fn negotiation(m: &Sv2Message) -> Option<ExtensionsNegotiationOwned> {
    match m {
        Sv2Message::Extension(e) if e.extension_type == EXTENSIONS_NEGOTIATION => {
            decode_negotiation(e.msg_type, e.payload.clone()).ok()
        }
        _ => None,
    }
}

pub fn new_mining_job(channel_id: u32) -> Sv2Message {
    Sv2Message::Mining(MiningOwned::NewMiningJob(NewMiningJobOwned {
        channel_id,
        job_id: 1,
        min_ntime: tower_stratum_core::stratum_core::binary_sv2::Sv2OptionOwned::new(None),
        version: 0x2000_0000,
        merkle_root: U256Owned::from([0u8; 32]),
    }))
}

pub fn coinbase_output_constraints() -> Sv2Message {
    Sv2Message::TemplateDistribution(TemplateDistributionOwned::CoinbaseOutputConstraints(
        CoinbaseOutputConstraintsOwned {
            coinbase_output_max_additional_size: 100,
            coinbase_output_max_additional_sigops: 10,
        },
    ))
}

/// Encodes a message to a frame.
pub fn frame(m: Sv2Message) -> Frame {
    m.encode().unwrap()
}

/// A raw frame with arbitrary header fields.
pub fn raw_frame(extension_type: u16, msg_type: u8, payload: &[u8]) -> Frame {
    Frame {
        extension_type,
        msg_type,
        payload: bytes::Bytes::copy_from_slice(payload),
    }
}
