//! Interoperability of our SV2 codec (`blvm_stratum_v2::wire`) with the Stratum Reference
//! Implementation crates (`binary_sv2`, `framing_sv2`, `codec_sv2`, `parsers_sv2` and the
//! message crates).
//!
//! For every message of the Common, Mining, Template Distribution and 0x0001 protocols a
//! property test generates field values over their whole ranges and bounds, builds the message
//! with our types and with SRI's from the same values, and checks that:
//!
//! 1. our frame (`encode_frame`) and SRI's frame (`MessageFrame` written through `codec_sv2`'s
//!    `Encoder`) are byte-identical, header included;
//! 2. SRI's header, read by SRI, names the message the way we do (extension_type, channel_msg
//!    bit, msg_type, msg_length);
//! 3. we decode SRI's bytes (`Frame::parse_exact`, then `message()` and `decode::<M>()`) into the
//!    message we built;
//! 4. SRI decodes our bytes (`AnyMessage::try_from((Header, payload))`) into fields equal to the
//!    generated values;
//! 5. re-encoding what we decoded gives the same bytes again.
//!
//! Then: the `user_identity` TLV of extension 0x0002 on SubmitSharesExtended against SRI's
//! `Tlv`/`TlvList`, and a stream of random SRI-encoded frames fed to our `FrameDecoder` in
//! random chunk sizes.
//!
//! BOOL bytes other than 0 and 1 are never given to SRI here (SRI's decoder has a `panic!()` arm
//! for them, unreachable in binary_sv2 7.0.0, which masks the least significant bit as the spec
//! says); `bool_reads_only_the_lsb` checks our side alone.

use binary_sv2::{
    B016M, B032, B064K, B0255, Seq064K, Seq0255, Str0255, Sv2Option, U256 as SriU256,
};
use blvm_stratum_v2::wire::{
    B0_16M, B0_32, B0_64K, B0_255, Frame, FrameDecoder, HEADER_LEN, MAX_PAYLOAD_LEN, Message,
    Seq0_64K, Seq0_255, Str0_255, Sv2Message, TlvDecoder, TlvEncoder, TxList, USER_IDENTITY,
    WireError, common, encode_frame, encode_frame_with_tlv, encode_message_frame, extensions,
    mining, template_distribution as tdp,
};
use codec_sv2::{EncodableFrame, Encoder, MessageFrame};
use common_messages_sv2::Protocol;
use extensions_sv2::UserIdentity;
use framing_sv2::header::Header;
use parsers_sv2::{
    AnyMessage, CommonMessages, Extensions, ExtensionsNegotiation, Mining, TemplateDistribution,
    Tlv as SriTlv, TlvField, TlvList, parse_message_frame_with_tlvs,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::fmt;

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// Proptest configuration: `cases` cases (or `PROPTEST_CASES` when set, for a longer soak), no
/// regression files written next to the sources.
fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bytes shown as hex when an assertion fails.
#[derive(PartialEq, Eq)]
struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 512;
        write!(f, "[{} bytes] ", self.0.len())?;
        for b in self.0.iter().take(SHOWN) {
            write!(f, "{b:02x}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, "...")?;
        }
        Ok(())
    }
}

/// Deterministic pseudo-random bytes (xorshift64), for large values that would be slow to
/// generate byte by byte.
fn fill(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Our whole frame for `m`.
fn our_frame<'a, M: Sv2Message<'a>>(m: &M) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(m, &mut out).expect("our encoder refused a valid message");
    out
}

/// SRI's whole frame for `msg`: a `MessageFrame` written by `codec_sv2`'s plaintext `Encoder`,
/// checked against `EncodableFrame::encode_into` on an exact-size buffer.
fn sri_frame(msg: AnyMessage<'_>) -> Vec<u8> {
    let frame: MessageFrame<AnyMessage<'_>> = msg.try_into().expect("SRI refused to frame");
    let mut direct = vec![0u8; frame.encoded_length()];
    frame
        .clone()
        .encode_into(&mut direct)
        .expect("SRI encode_into failed");
    let mut encoder = Encoder::new();
    let via_codec = encoder.encode(frame).expect("SRI codec encoder failed");
    assert_eq!(
        Hex(via_codec.as_ref()),
        Hex(&direct),
        "codec_sv2 Encoder and MessageFrame::encode_into disagree"
    );
    direct
}

/// Decodes `frame` as the type of `like` (lets the macro name the type without spelling it).
fn decode_like<'a, M: Sv2Message<'a>>(
    frame: &Frame<'a>,
    _like: &M,
) -> Result<(M, &'a [u8]), WireError> {
    frame.decode::<M>()
}

/// The spec's name of `M`.
fn name_of<'a, M: Sv2Message<'a>>(_m: &M) -> &'static str {
    M::NAME
}

/// Reads the header of `bytes` with SRI and checks it names `M` the way we do.
fn check_header<'a, M: Sv2Message<'a>>(_m: &M, bytes: &[u8]) -> Result<(), TestCaseError> {
    let h = Header::from_bytes(bytes).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    prop_assert_eq!(h.ext_type(), M::frame_extension_type(), "{}", M::NAME);
    prop_assert_eq!(h.ext_type_without_channel_msg(), M::EXTENSION_TYPE);
    prop_assert_eq!(
        h.channel_msg(),
        M::CHANNEL_MSG,
        "{} channel_msg bit",
        M::NAME
    );
    prop_assert_eq!(h.msg_type(), M::MSG_TYPE);
    prop_assert_eq!(h.payload_length(), bytes.len() - HEADER_LEN);
    Ok(())
}

/// A field of an SRI message compared with the value it was generated from.
trait Same<T: ?Sized> {
    fn same(&self, v: &T) -> bool;
}

macro_rules! same_by_eq {
    ($($t:ty),*) => {$(
        impl Same<$t> for $t {
            fn same(&self, v: &$t) -> bool {
                self == v
            }
        }
    )*};
}
same_by_eq!(u8, u16, u32, u64, bool);

impl Same<f32> for f32 {
    /// Bit for bit: -0.0 and 0.0 differ on the wire.
    fn same(&self, v: &f32) -> bool {
        self.to_bits() == v.to_bits()
    }
}

impl Same<u8> for Protocol {
    fn same(&self, v: &u8) -> bool {
        *self as u8 == *v
    }
}

impl Same<[u8; 32]> for SriU256<'_> {
    fn same(&self, v: &[u8; 32]) -> bool {
        self.as_bytes() == v
    }
}

macro_rules! same_bytes {
    ($($t:ident),*) => {$(
        impl Same<Vec<u8>> for $t<'_> {
            fn same(&self, v: &Vec<u8>) -> bool {
                self.as_bytes() == v.as_slice()
            }
        }
    )*};
}
same_bytes!(B032, B0255, B064K, B016M);

impl Same<String> for Str0255<'_> {
    fn same(&self, v: &String) -> bool {
        self.as_bytes() == v.as_bytes()
    }
}

impl Same<Option<u32>> for Sv2Option<'_, u32> {
    fn same(&self, v: &Option<u32>) -> bool {
        self.as_ref().copied() == *v
    }
}

impl Same<Vec<[u8; 32]>> for Seq0255<'_, SriU256<'_>> {
    fn same(&self, v: &Vec<[u8; 32]>) -> bool {
        self.len() == v.len() && self.iter().zip(v).all(|(a, b)| a.as_bytes() == b)
    }
}

impl Same<Vec<u16>> for Seq064K<'_, u16> {
    fn same(&self, v: &Vec<u16>) -> bool {
        self.as_slice() == v.as_slice()
    }
}

impl Same<Vec<u32>> for Seq064K<'_, u32> {
    fn same(&self, v: &Vec<u32>) -> bool {
        self.as_slice() == v.as_slice()
    }
}

impl Same<Vec<Vec<u8>>> for Seq064K<'_, B016M<'_>> {
    fn same(&self, v: &Vec<Vec<u8>>) -> bool {
        self.len() == v.len()
            && self
                .iter()
                .zip(v)
                .all(|(a, b)| a.as_bytes() == b.as_slice())
    }
}

// Builders of our borrowed types and of SRI's from the same owned values.

fn s255(s: &str) -> Str0_255<'_> {
    Str0_255::new(s).expect("generated string within STR0_255")
}
fn b32(b: &[u8]) -> B0_32<'_> {
    B0_32::new(b).expect("generated bytes within B0_32")
}
fn b255(b: &[u8]) -> B0_255<'_> {
    B0_255::new(b).expect("generated bytes within B0_255")
}
fn b64k(b: &[u8]) -> B0_64K<'_> {
    B0_64K::new(b).expect("generated bytes within B0_64K")
}
fn sri_str(s: &str) -> Str0255<'_> {
    Str0255::new(s.as_bytes()).expect("SRI refused a STR0_255")
}
fn sri_b32(b: &[u8]) -> B032<'_> {
    B032::new(b).expect("SRI refused a B0_32")
}
fn sri_b255(b: &[u8]) -> B0255<'_> {
    B0255::new(b).expect("SRI refused a B0_255")
}
fn sri_b64k(b: &[u8]) -> B064K<'_> {
    B064K::new(b).expect("SRI refused a B0_64K")
}
fn sri_u256(h: &[u8; 32]) -> SriU256<'_> {
    SriU256::from(h)
}
fn sri_path(p: &[[u8; 32]]) -> Seq0255<'_, SriU256<'_>> {
    Seq0255::new(p.iter().map(SriU256::from).collect()).expect("SRI refused a SEQ0_255")
}
fn sri_seq<T: Clone>(v: &[T]) -> Seq064K<'_, T> {
    Seq064K::new(v.to_vec()).expect("SRI refused a SEQ0_64K")
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

macro_rules! int_strategy {
    ($($name:ident: $t:ty),*) => {$(
        /// Any value, with the bounds and small values drawn often.
        fn $name() -> BoxedStrategy<$t> {
            prop_oneof![
                1 => Just(<$t>::MIN),
                1 => Just(<$t>::MAX),
                1 => (0 as $t)..=16,
                6 => any::<$t>(),
            ]
            .boxed()
        }
    )*};
}
int_strategy!(u16s: u16, u32s: u32, u64s: u64);

/// Any F32 but NaN: random bit patterns plus zeros of both signs, infinities, subnormals and
/// the extremes.
fn f32s() -> BoxedStrategy<f32> {
    prop_oneof![
        6 => any::<u32>().prop_map(f32::from_bits),
        2 => any::<f32>(),
        1 => prop::sample::select(vec![
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::from_bits(0x8000_0001),
            f32::MAX,
            f32::MIN,
            1e15,
        ]),
    ]
    .prop_filter("F32 must not be NaN", |f| !f.is_nan())
    .boxed()
}

fn opt_u32() -> BoxedStrategy<Option<u32>> {
    prop::option::of(u32s()).boxed()
}

fn u256() -> BoxedStrategy<[u8; 32]> {
    prop_oneof![
        1 => Just([0u8; 32]),
        1 => Just([0xffu8; 32]),
        8 => any::<[u8; 32]>(),
    ]
    .boxed()
}

/// Bytes up to `max` long: short ones byte by byte, any length and exactly `max` from a seed.
fn bytes_upto(max: usize) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..=max.min(64)),
        3 => (0..=max, any::<u64>()).prop_map(|(n, s)| fill(n, s)),
        1 => any::<u64>().prop_map(move |s| fill(max, s)),
        1 => Just(Vec::new()),
    ]
    .boxed()
}

/// Takes whole characters while they fit `max` bytes.
fn take_bytes(chars: Vec<char>, max: usize) -> String {
    let mut s = String::new();
    for c in chars {
        if s.len() + c.len_utf8() > max {
            break;
        }
        s.push(c);
    }
    s
}

/// UTF-8 strings up to `max` bytes: arbitrary Unicode (multi-byte characters near the bound),
/// printable ASCII, and strings of exactly `max` bytes.
fn string_upto(max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        4 => vec(any::<char>(), 0..=max).prop_map(move |c| take_bytes(c, max)),
        2 => vec(0x20u8..0x7f, 0..=max).prop_map(|b| String::from_utf8(b).expect("ASCII")),
        1 => vec(any::<char>(), 0..=max).prop_map(move |c| {
            let mut s = take_bytes(c, max);
            while s.len() < max {
                s.push('~');
            }
            s
        }),
        1 => Just(String::new()),
    ]
    .boxed()
}

fn str255() -> BoxedStrategy<String> {
    string_upto(255)
}

/// SEQ0_255[U256]: up to 255 hashes, sometimes exactly 255.
fn merkle_path() -> BoxedStrategy<Vec<[u8; 32]>> {
    prop_oneof![
        6 => vec(any::<[u8; 32]>(), 0..=16),
        3 => vec(any::<[u8; 32]>(), 0..=255),
        1 => vec(any::<[u8; 32]>(), 255..=255),
    ]
    .boxed()
}

/// SEQ0_64K of fixed-size integers: a few hundred elements, rarely exactly 65535.
macro_rules! seq64k_strategy {
    ($($name:ident: $t:ty),*) => {$(
        fn $name() -> BoxedStrategy<Vec<$t>> {
            prop_oneof![
                12 => vec(any::<$t>(), 0..=300),
                1 => any::<u64>().prop_map(|s| {
                    fill(65_535 * std::mem::size_of::<$t>(), s)
                        .chunks_exact(std::mem::size_of::<$t>())
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                        .collect()
                }),
            ]
            .boxed()
        }
    )*};
}
seq64k_strategy!(seq_u16: u16, seq_u32: u32);

/// SEQ0_64K[B0_16M]: a few transactions of a few hundred bytes; sometimes one longer than
/// 65535 bytes (a U24 length with its third byte set), sometimes many empty ones.
fn tx_list() -> BoxedStrategy<Vec<Vec<u8>>> {
    prop_oneof![
        8 => vec(
            (0usize..=400, any::<u64>()).prop_map(|(n, s)| fill(n, s)),
            0..=6
        ),
        1 => (65_536usize..=70_000, any::<u64>()).prop_map(|(n, s)| vec![fill(n, s)]),
        1 => (0usize..=1000).prop_map(|n| vec![Vec::new(); n]),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// The per-message check
// ---------------------------------------------------------------------------------------------

/// Compares the fields of an SRI message with the generated values.
macro_rules! check_sri_fields {
    ($d:ident { $($f:ident => $v:expr),* $(,)? }) => {$(
        prop_assert!(
            Same::same(&$d.$f, &$v),
            "SRI decoded {} = {:?}, generated {:?}",
            stringify!($f),
            $d.$f,
            $v
        );
    )*};
}

/// Runs checks 1-5 of the module documentation for one message built both ways.
macro_rules! interop {
    (
        ours: $ours:expr,
        sri: $sri:expr,
        sri_decoded: $pat:pat => $d:ident { $($f:ident => $v:expr),* $(,)? } $(,)?
    ) => {{
        let ours = $ours;
        let name = name_of(&ours);

        // 1. Byte-identical frames.
        let our_bytes = our_frame(&ours);
        let sri_bytes = sri_frame($sri);
        prop_assert_eq!(Hex(&our_bytes), Hex(&sri_bytes), "{}: frames differ", name);

        // 2. SRI reads our header as naming this message.
        check_header(&ours, &our_bytes)?;

        // 3. We decode SRI's bytes into the message we built.
        let frame = Frame::parse_exact(&sri_bytes)
            .map_err(|e| TestCaseError::fail(format!("{name}: parse_exact: {e}")))?;
        let (typed, rest) = decode_like(&frame, &ours)
            .map_err(|e| TestCaseError::fail(format!("{name}: decode: {e}")))?;
        prop_assert!(rest.is_empty(), "{}: {} unread bytes", name, rest.len());
        prop_assert_eq!(&typed, &ours);
        let (any, rest) = frame
            .message()
            .map_err(|e| TestCaseError::fail(format!("{name}: message(): {e}")))?;
        prop_assert!(rest.is_empty(), "{}: {} unread bytes", name, rest.len());
        prop_assert_eq!(any.name(), name);
        prop_assert_eq!(&any, &Message::from(ours.clone()));

        // 5. Re-encoding what we decoded gives the same bytes.
        prop_assert_eq!(Hex(&our_frame(&typed)), Hex(&our_bytes));
        let mut again = Vec::new();
        encode_message_frame(&any, &mut again)
            .map_err(|e| TestCaseError::fail(format!("{name}: encode_message_frame: {e}")))?;
        prop_assert_eq!(Hex(&again), Hex(&our_bytes));

        // 4. SRI decodes our bytes into the generated values.
        let mut buf = our_bytes.clone();
        let header = Header::from_bytes(&buf)
            .map_err(|e| TestCaseError::fail(format!("{name}: SRI header: {e:?}")))?;
        match AnyMessage::try_from((header, &mut buf[HEADER_LEN..])) {
            Ok($pat) => {
                check_sri_fields!($d { $($f => $v),* });
            }
            other => prop_assert!(false, "{}: SRI decoded {:?}", name, other),
        }
    }};
}

// ---------------------------------------------------------------------------------------------
// Common protocol (spec 03 §3.6)
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn setup_connection(
        // SRI's `Protocol` only holds the three values the spec defines.
        protocol in 0u8..=2,
        min_version in u16s(),
        max_version in u16s(),
        flags in u32s(),
        endpoint_host in str255(),
        endpoint_port in u16s(),
        vendor in str255(),
        hardware_version in str255(),
        firmware in str255(),
        device_id in str255(),
    ) {
        interop! {
            ours: common::SetupConnection {
                protocol,
                min_version,
                max_version,
                flags,
                endpoint_host: s255(&endpoint_host),
                endpoint_port,
                vendor: s255(&vendor),
                hardware_version: s255(&hardware_version),
                firmware: s255(&firmware),
                device_id: s255(&device_id),
            },
            sri: AnyMessage::Common(CommonMessages::SetupConnection(
                common_messages_sv2::SetupConnection {
                    protocol: Protocol::try_from(protocol).expect("0..=2"),
                    min_version,
                    max_version,
                    flags,
                    endpoint_host: sri_str(&endpoint_host),
                    endpoint_port,
                    vendor: sri_str(&vendor),
                    hardware_version: sri_str(&hardware_version),
                    firmware: sri_str(&firmware),
                    device_id: sri_str(&device_id),
                },
            )),
            sri_decoded: AnyMessage::Common(CommonMessages::SetupConnection(d)) => d {
                protocol => protocol,
                min_version => min_version,
                max_version => max_version,
                flags => flags,
                endpoint_host => endpoint_host,
                endpoint_port => endpoint_port,
                vendor => vendor,
                hardware_version => hardware_version,
                firmware => firmware,
                device_id => device_id,
            },
        }
    }

    #[test]
    fn setup_connection_success(used_version in u16s(), flags in u32s()) {
        interop! {
            ours: common::SetupConnectionSuccess { used_version, flags },
            sri: AnyMessage::Common(CommonMessages::SetupConnectionSuccess(
                common_messages_sv2::SetupConnectionSuccess { used_version, flags },
            )),
            sri_decoded: AnyMessage::Common(CommonMessages::SetupConnectionSuccess(d)) => d {
                used_version => used_version,
                flags => flags,
            },
        }
    }

    #[test]
    fn setup_connection_error(flags in u32s(), error_code in str255()) {
        interop! {
            ours: common::SetupConnectionError { flags, error_code: s255(&error_code) },
            sri: AnyMessage::Common(CommonMessages::SetupConnectionError(
                common_messages_sv2::SetupConnectionError {
                    flags,
                    error_code: sri_str(&error_code),
                },
            )),
            sri_decoded: AnyMessage::Common(CommonMessages::SetupConnectionError(d)) => d {
                flags => flags,
                error_code => error_code,
            },
        }
    }

    #[test]
    fn channel_endpoint_changed(channel_id in u32s()) {
        interop! {
            ours: common::ChannelEndpointChanged { channel_id },
            sri: AnyMessage::Common(CommonMessages::ChannelEndpointChanged(
                common_messages_sv2::ChannelEndpointChanged { channel_id },
            )),
            sri_decoded: AnyMessage::Common(CommonMessages::ChannelEndpointChanged(d)) => d {
                channel_id => channel_id,
            },
        }
    }

    #[test]
    fn reconnect(new_host in str255(), new_port in u16s()) {
        interop! {
            ours: common::Reconnect { new_host: s255(&new_host), new_port },
            sri: AnyMessage::Common(CommonMessages::Reconnect(common_messages_sv2::Reconnect {
                new_host: sri_str(&new_host),
                new_port,
            })),
            sri_decoded: AnyMessage::Common(CommonMessages::Reconnect(d)) => d {
                new_host => new_host,
                new_port => new_port,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mining protocol (spec 05, ids and channel_msg bits from 08)
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn open_standard_mining_channel(
        request_id in u32s(),
        user_identity in str255(),
        nominal_hash_rate in f32s(),
        max_target in u256(),
    ) {
        interop! {
            ours: mining::OpenStandardMiningChannel {
                request_id,
                user_identity: s255(&user_identity),
                nominal_hash_rate,
                max_target,
            },
            sri: AnyMessage::Mining(Mining::OpenStandardMiningChannel(
                mining_sv2::OpenStandardMiningChannel {
                    request_id,
                    user_identity: sri_str(&user_identity),
                    nominal_hash_rate,
                    max_target: sri_u256(&max_target),
                },
            )),
            sri_decoded: AnyMessage::Mining(Mining::OpenStandardMiningChannel(d)) => d {
                request_id => request_id,
                user_identity => user_identity,
                nominal_hash_rate => nominal_hash_rate,
                max_target => max_target,
            },
        }
    }

    #[test]
    fn open_standard_mining_channel_success(
        request_id in u32s(),
        channel_id in u32s(),
        target in u256(),
        extranonce_prefix in bytes_upto(32),
        group_channel_id in u32s(),
    ) {
        interop! {
            ours: mining::OpenStandardMiningChannelSuccess {
                request_id,
                channel_id,
                target,
                extranonce_prefix: b32(&extranonce_prefix),
                group_channel_id,
            },
            sri: AnyMessage::Mining(Mining::OpenStandardMiningChannelSuccess(
                mining_sv2::OpenStandardMiningChannelSuccess {
                    request_id,
                    channel_id,
                    target: sri_u256(&target),
                    extranonce_prefix: sri_b32(&extranonce_prefix),
                    group_channel_id,
                },
            )),
            sri_decoded: AnyMessage::Mining(Mining::OpenStandardMiningChannelSuccess(d)) => d {
                request_id => request_id,
                channel_id => channel_id,
                target => target,
                extranonce_prefix => extranonce_prefix,
                group_channel_id => group_channel_id,
            },
        }
    }

    #[test]
    fn open_mining_channel_error(request_id in u32s(), error_code in str255()) {
        interop! {
            ours: mining::OpenMiningChannelError { request_id, error_code: s255(&error_code) },
            sri: AnyMessage::Mining(Mining::OpenMiningChannelError(
                mining_sv2::OpenMiningChannelError {
                    request_id,
                    error_code: sri_str(&error_code),
                },
            )),
            sri_decoded: AnyMessage::Mining(Mining::OpenMiningChannelError(d)) => d {
                request_id => request_id,
                error_code => error_code,
            },
        }
    }

    #[test]
    fn open_extended_mining_channel(
        request_id in u32s(),
        user_identity in str255(),
        nominal_hash_rate in f32s(),
        max_target in u256(),
        min_extranonce_size in u16s(),
    ) {
        interop! {
            ours: mining::OpenExtendedMiningChannel {
                request_id,
                user_identity: s255(&user_identity),
                nominal_hash_rate,
                max_target,
                min_extranonce_size,
            },
            sri: AnyMessage::Mining(Mining::OpenExtendedMiningChannel(
                mining_sv2::OpenExtendedMiningChannel {
                    request_id,
                    user_identity: sri_str(&user_identity),
                    nominal_hash_rate,
                    max_target: sri_u256(&max_target),
                    min_extranonce_size,
                },
            )),
            sri_decoded: AnyMessage::Mining(Mining::OpenExtendedMiningChannel(d)) => d {
                request_id => request_id,
                user_identity => user_identity,
                nominal_hash_rate => nominal_hash_rate,
                max_target => max_target,
                min_extranonce_size => min_extranonce_size,
            },
        }
    }

    #[test]
    fn open_extended_mining_channel_success(
        request_id in u32s(),
        channel_id in u32s(),
        target in u256(),
        extranonce_size in u16s(),
        extranonce_prefix in bytes_upto(32),
        group_channel_id in u32s(),
    ) {
        interop! {
            ours: mining::OpenExtendedMiningChannelSuccess {
                request_id,
                channel_id,
                target,
                extranonce_size,
                extranonce_prefix: b32(&extranonce_prefix),
                group_channel_id,
            },
            sri: AnyMessage::Mining(Mining::OpenExtendedMiningChannelSuccess(
                mining_sv2::OpenExtendedMiningChannelSuccess {
                    request_id,
                    channel_id,
                    target: sri_u256(&target),
                    extranonce_size,
                    extranonce_prefix: sri_b32(&extranonce_prefix),
                    group_channel_id,
                },
            )),
            sri_decoded: AnyMessage::Mining(Mining::OpenExtendedMiningChannelSuccess(d)) => d {
                request_id => request_id,
                channel_id => channel_id,
                target => target,
                extranonce_size => extranonce_size,
                extranonce_prefix => extranonce_prefix,
                group_channel_id => group_channel_id,
            },
        }
    }

    #[test]
    fn new_mining_job(
        channel_id in u32s(),
        job_id in u32s(),
        min_ntime in opt_u32(),
        version in u32s(),
        merkle_root in u256(),
    ) {
        interop! {
            ours: mining::NewMiningJob { channel_id, job_id, min_ntime, version, merkle_root },
            sri: AnyMessage::Mining(Mining::NewMiningJob(mining_sv2::NewMiningJob {
                channel_id,
                job_id,
                min_ntime: Sv2Option::new(min_ntime),
                version,
                merkle_root: sri_u256(&merkle_root),
            })),
            sri_decoded: AnyMessage::Mining(Mining::NewMiningJob(d)) => d {
                channel_id => channel_id,
                job_id => job_id,
                min_ntime => min_ntime,
                version => version,
                merkle_root => merkle_root,
            },
        }
    }

    #[test]
    fn update_channel(
        channel_id in u32s(),
        nominal_hash_rate in f32s(),
        maximum_target in u256(),
    ) {
        interop! {
            ours: mining::UpdateChannel { channel_id, nominal_hash_rate, maximum_target },
            sri: AnyMessage::Mining(Mining::UpdateChannel(mining_sv2::UpdateChannel {
                channel_id,
                nominal_hash_rate,
                maximum_target: sri_u256(&maximum_target),
            })),
            sri_decoded: AnyMessage::Mining(Mining::UpdateChannel(d)) => d {
                channel_id => channel_id,
                nominal_hash_rate => nominal_hash_rate,
                maximum_target => maximum_target,
            },
        }
    }

    #[test]
    fn update_channel_error(channel_id in u32s(), error_code in str255()) {
        interop! {
            ours: mining::UpdateChannelError { channel_id, error_code: s255(&error_code) },
            sri: AnyMessage::Mining(Mining::UpdateChannelError(mining_sv2::UpdateChannelError {
                channel_id,
                error_code: sri_str(&error_code),
            })),
            sri_decoded: AnyMessage::Mining(Mining::UpdateChannelError(d)) => d {
                channel_id => channel_id,
                error_code => error_code,
            },
        }
    }

    #[test]
    fn close_channel(channel_id in u32s(), reason_code in str255()) {
        interop! {
            ours: mining::CloseChannel { channel_id, reason_code: s255(&reason_code) },
            sri: AnyMessage::Mining(Mining::CloseChannel(mining_sv2::CloseChannel {
                channel_id,
                reason_code: sri_str(&reason_code),
            })),
            sri_decoded: AnyMessage::Mining(Mining::CloseChannel(d)) => d {
                channel_id => channel_id,
                reason_code => reason_code,
            },
        }
    }

    #[test]
    fn set_extranonce_prefix(channel_id in u32s(), extranonce_prefix in bytes_upto(32)) {
        interop! {
            ours: mining::SetExtranoncePrefix {
                channel_id,
                extranonce_prefix: b32(&extranonce_prefix),
            },
            sri: AnyMessage::Mining(Mining::SetExtranoncePrefix(mining_sv2::SetExtranoncePrefix {
                channel_id,
                extranonce_prefix: sri_b32(&extranonce_prefix),
            })),
            sri_decoded: AnyMessage::Mining(Mining::SetExtranoncePrefix(d)) => d {
                channel_id => channel_id,
                extranonce_prefix => extranonce_prefix,
            },
        }
    }

    #[test]
    fn submit_shares_standard(
        channel_id in u32s(),
        sequence_number in u32s(),
        job_id in u32s(),
        nonce in u32s(),
        ntime in u32s(),
        version in u32s(),
    ) {
        interop! {
            ours: mining::SubmitSharesStandard {
                channel_id,
                sequence_number,
                job_id,
                nonce,
                ntime,
                version,
            },
            sri: AnyMessage::Mining(Mining::SubmitSharesStandard(
                mining_sv2::SubmitSharesStandard {
                    channel_id,
                    sequence_number,
                    job_id,
                    nonce,
                    ntime,
                    version,
                },
            )),
            sri_decoded: AnyMessage::Mining(Mining::SubmitSharesStandard(d)) => d {
                channel_id => channel_id,
                sequence_number => sequence_number,
                job_id => job_id,
                nonce => nonce,
                ntime => ntime,
                version => version,
            },
        }
    }

    #[test]
    fn submit_shares_extended(
        channel_id in u32s(),
        sequence_number in u32s(),
        job_id in u32s(),
        nonce in u32s(),
        ntime in u32s(),
        version in u32s(),
        extranonce in bytes_upto(32),
    ) {
        interop! {
            ours: mining::SubmitSharesExtended {
                channel_id,
                sequence_number,
                job_id,
                nonce,
                ntime,
                version,
                extranonce: b32(&extranonce),
            },
            sri: AnyMessage::Mining(Mining::SubmitSharesExtended(
                mining_sv2::SubmitSharesExtended {
                    channel_id,
                    sequence_number,
                    job_id,
                    nonce,
                    ntime,
                    version,
                    extranonce: sri_b32(&extranonce),
                },
            )),
            sri_decoded: AnyMessage::Mining(Mining::SubmitSharesExtended(d)) => d {
                channel_id => channel_id,
                sequence_number => sequence_number,
                job_id => job_id,
                nonce => nonce,
                ntime => ntime,
                version => version,
                extranonce => extranonce,
            },
        }
    }

    #[test]
    fn submit_shares_success(
        channel_id in u32s(),
        last_sequence_number in u32s(),
        new_submits_accepted_count in u32s(),
        new_shares_sum in u64s(),
    ) {
        interop! {
            ours: mining::SubmitSharesSuccess {
                channel_id,
                last_sequence_number,
                new_submits_accepted_count,
                new_shares_sum,
            },
            sri: AnyMessage::Mining(Mining::SubmitSharesSuccess(mining_sv2::SubmitSharesSuccess {
                channel_id,
                last_sequence_number,
                new_submits_accepted_count,
                new_shares_sum,
            })),
            sri_decoded: AnyMessage::Mining(Mining::SubmitSharesSuccess(d)) => d {
                channel_id => channel_id,
                last_sequence_number => last_sequence_number,
                new_submits_accepted_count => new_submits_accepted_count,
                new_shares_sum => new_shares_sum,
            },
        }
    }

    #[test]
    fn submit_shares_error(
        channel_id in u32s(),
        sequence_number in u32s(),
        error_code in str255(),
    ) {
        interop! {
            ours: mining::SubmitSharesError {
                channel_id,
                sequence_number,
                error_code: s255(&error_code),
            },
            sri: AnyMessage::Mining(Mining::SubmitSharesError(mining_sv2::SubmitSharesError {
                channel_id,
                sequence_number,
                error_code: sri_str(&error_code),
            })),
            sri_decoded: AnyMessage::Mining(Mining::SubmitSharesError(d)) => d {
                channel_id => channel_id,
                sequence_number => sequence_number,
                error_code => error_code,
            },
        }
    }

    #[test]
    fn set_new_prev_hash(
        channel_id in u32s(),
        job_id in u32s(),
        prev_hash in u256(),
        min_ntime in u32s(),
        nbits in u32s(),
    ) {
        interop! {
            ours: mining::SetNewPrevHash { channel_id, job_id, prev_hash, min_ntime, nbits },
            sri: AnyMessage::Mining(Mining::SetNewPrevHash(mining_sv2::SetNewPrevHash {
                channel_id,
                job_id,
                prev_hash: sri_u256(&prev_hash),
                min_ntime,
                nbits,
            })),
            sri_decoded: AnyMessage::Mining(Mining::SetNewPrevHash(d)) => d {
                channel_id => channel_id,
                job_id => job_id,
                prev_hash => prev_hash,
                min_ntime => min_ntime,
                nbits => nbits,
            },
        }
    }

    #[test]
    fn set_target(channel_id in u32s(), maximum_target in u256()) {
        interop! {
            ours: mining::SetTarget { channel_id, maximum_target },
            sri: AnyMessage::Mining(Mining::SetTarget(mining_sv2::SetTarget {
                channel_id,
                maximum_target: sri_u256(&maximum_target),
            })),
            sri_decoded: AnyMessage::Mining(Mining::SetTarget(d)) => d {
                channel_id => channel_id,
                maximum_target => maximum_target,
            },
        }
    }

    #[test]
    fn set_custom_mining_job_success(
        channel_id in u32s(),
        request_id in u32s(),
        job_id in u32s(),
    ) {
        interop! {
            ours: mining::SetCustomMiningJobSuccess { channel_id, request_id, job_id },
            sri: AnyMessage::Mining(Mining::SetCustomMiningJobSuccess(
                mining_sv2::SetCustomMiningJobSuccess { channel_id, request_id, job_id },
            )),
            sri_decoded: AnyMessage::Mining(Mining::SetCustomMiningJobSuccess(d)) => d {
                channel_id => channel_id,
                request_id => request_id,
                job_id => job_id,
            },
        }
    }

    #[test]
    fn set_custom_mining_job_error(
        channel_id in u32s(),
        request_id in u32s(),
        error_code in str255(),
    ) {
        interop! {
            ours: mining::SetCustomMiningJobError {
                channel_id,
                request_id,
                error_code: s255(&error_code),
            },
            sri: AnyMessage::Mining(Mining::SetCustomMiningJobError(
                mining_sv2::SetCustomMiningJobError {
                    channel_id,
                    request_id,
                    error_code: sri_str(&error_code),
                },
            )),
            sri_decoded: AnyMessage::Mining(Mining::SetCustomMiningJobError(d)) => d {
                channel_id => channel_id,
                request_id => request_id,
                error_code => error_code,
            },
        }
    }
}

// Mining messages with large variable-length fields: fewer cases.
proptest! {
    #![proptest_config(cfg(96))]

    #[test]
    fn new_extended_mining_job(
        channel_id in u32s(),
        job_id in u32s(),
        min_ntime in opt_u32(),
        version in u32s(),
        version_rolling_allowed in any::<bool>(),
        merkle_path in merkle_path(),
        coinbase_tx_prefix in bytes_upto(65_535),
        coinbase_tx_suffix in bytes_upto(65_535),
    ) {
        interop! {
            ours: mining::NewExtendedMiningJob {
                channel_id,
                job_id,
                min_ntime,
                version,
                version_rolling_allowed,
                merkle_path: Seq0_255::new(&merkle_path).expect("<= 255 hashes"),
                coinbase_tx_prefix: b64k(&coinbase_tx_prefix),
                coinbase_tx_suffix: b64k(&coinbase_tx_suffix),
            },
            sri: AnyMessage::Mining(Mining::NewExtendedMiningJob(
                mining_sv2::NewExtendedMiningJob {
                    channel_id,
                    job_id,
                    min_ntime: Sv2Option::new(min_ntime),
                    version,
                    version_rolling_allowed,
                    merkle_path: sri_path(&merkle_path),
                    coinbase_tx_prefix: sri_b64k(&coinbase_tx_prefix),
                    coinbase_tx_suffix: sri_b64k(&coinbase_tx_suffix),
                },
            )),
            sri_decoded: AnyMessage::Mining(Mining::NewExtendedMiningJob(d)) => d {
                channel_id => channel_id,
                job_id => job_id,
                min_ntime => min_ntime,
                version => version,
                version_rolling_allowed => version_rolling_allowed,
                merkle_path => merkle_path,
                coinbase_tx_prefix => coinbase_tx_prefix,
                coinbase_tx_suffix => coinbase_tx_suffix,
            },
        }
    }

    #[test]
    fn set_custom_mining_job(
        channel_id in u32s(),
        request_id in u32s(),
        mining_job_token in bytes_upto(255),
        version in u32s(),
        prev_hash in u256(),
        min_ntime in u32s(),
        nbits in u32s(),
        coinbase_tx_version in u32s(),
        coinbase_prefix in bytes_upto(255),
        coinbase_tx_input_n_sequence in u32s(),
        coinbase_tx_outputs in bytes_upto(65_535),
        coinbase_tx_locktime in u32s(),
        merkle_path in merkle_path(),
    ) {
        interop! {
            ours: mining::SetCustomMiningJob {
                channel_id,
                request_id,
                mining_job_token: b255(&mining_job_token),
                version,
                prev_hash,
                min_ntime,
                nbits,
                coinbase_tx_version,
                coinbase_prefix: b255(&coinbase_prefix),
                coinbase_tx_input_n_sequence,
                coinbase_tx_outputs: b64k(&coinbase_tx_outputs),
                coinbase_tx_locktime,
                merkle_path: Seq0_255::new(&merkle_path).expect("<= 255 hashes"),
            },
            sri: AnyMessage::Mining(Mining::SetCustomMiningJob(mining_sv2::SetCustomMiningJob {
                channel_id,
                request_id,
                token: sri_b255(&mining_job_token),
                version,
                prev_hash: sri_u256(&prev_hash),
                min_ntime,
                nbits,
                coinbase_tx_version,
                coinbase_prefix: sri_b255(&coinbase_prefix),
                coinbase_tx_input_n_sequence,
                coinbase_tx_outputs: sri_b64k(&coinbase_tx_outputs),
                coinbase_tx_locktime,
                merkle_path: sri_path(&merkle_path),
            })),
            sri_decoded: AnyMessage::Mining(Mining::SetCustomMiningJob(d)) => d {
                channel_id => channel_id,
                request_id => request_id,
                token => mining_job_token,
                version => version,
                prev_hash => prev_hash,
                min_ntime => min_ntime,
                nbits => nbits,
                coinbase_tx_version => coinbase_tx_version,
                coinbase_prefix => coinbase_prefix,
                coinbase_tx_input_n_sequence => coinbase_tx_input_n_sequence,
                coinbase_tx_outputs => coinbase_tx_outputs,
                coinbase_tx_locktime => coinbase_tx_locktime,
                merkle_path => merkle_path,
            },
        }
    }

    #[test]
    fn set_group_channel(group_channel_id in u32s(), channel_ids in seq_u32()) {
        interop! {
            ours: mining::SetGroupChannel {
                group_channel_id,
                channel_ids: Seq0_64K::new(&channel_ids).expect("<= 65535 ids"),
            },
            sri: AnyMessage::Mining(Mining::SetGroupChannel(mining_sv2::SetGroupChannel {
                group_channel_id,
                channel_ids: sri_seq(&channel_ids),
            })),
            sri_decoded: AnyMessage::Mining(Mining::SetGroupChannel(d)) => d {
                group_channel_id => group_channel_id,
                channel_ids => channel_ids,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Template Distribution protocol (spec 07)
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn coinbase_output_constraints(
        coinbase_output_max_additional_size in u32s(),
        coinbase_output_max_additional_sigops in u16s(),
    ) {
        interop! {
            ours: tdp::CoinbaseOutputConstraints {
                coinbase_output_max_additional_size,
                coinbase_output_max_additional_sigops,
            },
            sri: AnyMessage::TemplateDistribution(TemplateDistribution::CoinbaseOutputConstraints(
                template_distribution_sv2::CoinbaseOutputConstraints {
                    coinbase_output_max_additional_size,
                    coinbase_output_max_additional_sigops,
                },
            )),
            sri_decoded: AnyMessage::TemplateDistribution(
                TemplateDistribution::CoinbaseOutputConstraints(d)
            ) => d {
                coinbase_output_max_additional_size => coinbase_output_max_additional_size,
                coinbase_output_max_additional_sigops => coinbase_output_max_additional_sigops,
            },
        }
    }

    #[test]
    fn template_set_new_prev_hash(
        template_id in u64s(),
        prev_hash in u256(),
        header_timestamp in u32s(),
        n_bits in u32s(),
        target in u256(),
    ) {
        interop! {
            ours: tdp::SetNewPrevHash { template_id, prev_hash, header_timestamp, n_bits, target },
            sri: AnyMessage::TemplateDistribution(TemplateDistribution::SetNewPrevHash(
                template_distribution_sv2::SetNewPrevHash {
                    template_id,
                    prev_hash: sri_u256(&prev_hash),
                    header_timestamp,
                    n_bits,
                    target: sri_u256(&target),
                },
            )),
            sri_decoded: AnyMessage::TemplateDistribution(TemplateDistribution::SetNewPrevHash(d))
                => d {
                template_id => template_id,
                prev_hash => prev_hash,
                header_timestamp => header_timestamp,
                n_bits => n_bits,
                target => target,
            },
        }
    }

    #[test]
    fn request_transaction_data(template_id in u64s()) {
        interop! {
            ours: tdp::RequestTransactionData { template_id },
            sri: AnyMessage::TemplateDistribution(TemplateDistribution::RequestTransactionData(
                template_distribution_sv2::RequestTransactionData { template_id },
            )),
            sri_decoded: AnyMessage::TemplateDistribution(
                TemplateDistribution::RequestTransactionData(d)
            ) => d {
                template_id => template_id,
            },
        }
    }

    #[test]
    fn request_transaction_data_error(template_id in u64s(), error_code in str255()) {
        interop! {
            ours: tdp::RequestTransactionDataError { template_id, error_code: s255(&error_code) },
            sri: AnyMessage::TemplateDistribution(
                TemplateDistribution::RequestTransactionDataError(
                    template_distribution_sv2::RequestTransactionDataError {
                        template_id,
                        error_code: sri_str(&error_code),
                    },
                ),
            ),
            sri_decoded: AnyMessage::TemplateDistribution(
                TemplateDistribution::RequestTransactionDataError(d)
            ) => d {
                template_id => template_id,
                error_code => error_code,
            },
        }
    }
}

// Template Distribution messages with large variable-length fields: fewer cases.
proptest! {
    #![proptest_config(cfg(96))]

    #[test]
    fn new_template(
        template_id in u64s(),
        future_template in any::<bool>(),
        version in u32s(),
        coinbase_tx_version in u32s(),
        coinbase_prefix in bytes_upto(255),
        coinbase_tx_input_sequence in u32s(),
        coinbase_tx_value_remaining in u64s(),
        coinbase_tx_outputs_count in u32s(),
        coinbase_tx_outputs in bytes_upto(65_535),
        coinbase_tx_locktime in u32s(),
        merkle_path in merkle_path(),
    ) {
        interop! {
            ours: tdp::NewTemplate {
                template_id,
                future_template,
                version,
                coinbase_tx_version,
                coinbase_prefix: b255(&coinbase_prefix),
                coinbase_tx_input_sequence,
                coinbase_tx_value_remaining,
                coinbase_tx_outputs_count,
                coinbase_tx_outputs: b64k(&coinbase_tx_outputs),
                coinbase_tx_locktime,
                merkle_path: Seq0_255::new(&merkle_path).expect("<= 255 hashes"),
            },
            sri: AnyMessage::TemplateDistribution(TemplateDistribution::NewTemplate(
                template_distribution_sv2::NewTemplate {
                    template_id,
                    future_template,
                    version,
                    coinbase_tx_version,
                    coinbase_prefix: sri_b255(&coinbase_prefix),
                    coinbase_tx_input_sequence,
                    coinbase_tx_value_remaining,
                    coinbase_tx_outputs_count,
                    coinbase_tx_outputs: sri_b64k(&coinbase_tx_outputs),
                    coinbase_tx_locktime,
                    merkle_path: sri_path(&merkle_path),
                },
            )),
            sri_decoded: AnyMessage::TemplateDistribution(TemplateDistribution::NewTemplate(d))
                => d {
                template_id => template_id,
                future_template => future_template,
                version => version,
                coinbase_tx_version => coinbase_tx_version,
                coinbase_prefix => coinbase_prefix,
                coinbase_tx_input_sequence => coinbase_tx_input_sequence,
                coinbase_tx_value_remaining => coinbase_tx_value_remaining,
                coinbase_tx_outputs_count => coinbase_tx_outputs_count,
                coinbase_tx_outputs => coinbase_tx_outputs,
                coinbase_tx_locktime => coinbase_tx_locktime,
                merkle_path => merkle_path,
            },
        }
    }

    #[test]
    fn request_transaction_data_success(
        template_id in u64s(),
        excess_data in bytes_upto(65_535),
        transaction_list in tx_list(),
    ) {
        let txs: Vec<B0_16M<'_>> = transaction_list
            .iter()
            .map(|t| B0_16M::new(t).expect("<= 2^24-1 bytes"))
            .collect();
        interop! {
            ours: tdp::RequestTransactionDataSuccess {
                template_id,
                excess_data: b64k(&excess_data),
                transaction_list: TxList::new(&txs).expect("<= 65535 transactions"),
            },
            sri: AnyMessage::TemplateDistribution(
                TemplateDistribution::RequestTransactionDataSuccess(
                    template_distribution_sv2::RequestTransactionDataSuccess {
                        template_id,
                        excess_data: sri_b64k(&excess_data),
                        transaction_list: Seq064K::new(
                            transaction_list
                                .iter()
                                .map(|t| B016M::new(t).expect("SRI refused a B0_16M"))
                                .collect(),
                        )
                        .expect("SRI refused a SEQ0_64K"),
                    },
                ),
            ),
            sri_decoded: AnyMessage::TemplateDistribution(
                TemplateDistribution::RequestTransactionDataSuccess(d)
            ) => d {
                template_id => template_id,
                excess_data => excess_data,
                transaction_list => transaction_list,
            },
        }
    }

    #[test]
    fn submit_solution(
        template_id in u64s(),
        version in u32s(),
        header_timestamp in u32s(),
        header_nonce in u32s(),
        coinbase_tx in bytes_upto(65_535),
    ) {
        interop! {
            ours: tdp::SubmitSolution {
                template_id,
                version,
                header_timestamp,
                header_nonce,
                coinbase_tx: b64k(&coinbase_tx),
            },
            sri: AnyMessage::TemplateDistribution(TemplateDistribution::SubmitSolution(
                template_distribution_sv2::SubmitSolution {
                    template_id,
                    version,
                    header_timestamp,
                    header_nonce,
                    coinbase_tx: sri_b64k(&coinbase_tx),
                },
            )),
            sri_decoded: AnyMessage::TemplateDistribution(TemplateDistribution::SubmitSolution(d))
                => d {
                template_id => template_id,
                version => version,
                header_timestamp => header_timestamp,
                header_nonce => header_nonce,
                coinbase_tx => coinbase_tx,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Extension 0x0001, extensions negotiation
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(128))]

    #[test]
    fn request_extensions(request_id in u16s(), requested_extensions in seq_u16()) {
        interop! {
            ours: extensions::RequestExtensions {
                request_id,
                requested_extensions: Seq0_64K::new(&requested_extensions).expect("<= 65535"),
            },
            sri: AnyMessage::Extensions(Extensions::ExtensionsNegotiation(
                ExtensionsNegotiation::RequestExtensions(extensions_sv2::RequestExtensions {
                    request_id,
                    requested_extensions: sri_seq(&requested_extensions),
                }),
            )),
            sri_decoded: AnyMessage::Extensions(Extensions::ExtensionsNegotiation(
                ExtensionsNegotiation::RequestExtensions(d),
            )) => d {
                request_id => request_id,
                requested_extensions => requested_extensions,
            },
        }
    }

    #[test]
    fn request_extensions_success(request_id in u16s(), supported_extensions in seq_u16()) {
        interop! {
            ours: extensions::RequestExtensionsSuccess {
                request_id,
                supported_extensions: Seq0_64K::new(&supported_extensions).expect("<= 65535"),
            },
            sri: AnyMessage::Extensions(Extensions::ExtensionsNegotiation(
                ExtensionsNegotiation::RequestExtensionsSuccess(
                    extensions_sv2::RequestExtensionsSuccess {
                        request_id,
                        supported_extensions: sri_seq(&supported_extensions),
                    },
                ),
            )),
            sri_decoded: AnyMessage::Extensions(Extensions::ExtensionsNegotiation(
                ExtensionsNegotiation::RequestExtensionsSuccess(d),
            )) => d {
                request_id => request_id,
                supported_extensions => supported_extensions,
            },
        }
    }

    #[test]
    fn request_extensions_error(
        request_id in u16s(),
        unsupported_extensions in seq_u16(),
        required_extensions in seq_u16(),
    ) {
        interop! {
            ours: extensions::RequestExtensionsError {
                request_id,
                unsupported_extensions: Seq0_64K::new(&unsupported_extensions)
                    .expect("<= 65535"),
                required_extensions: Seq0_64K::new(&required_extensions).expect("<= 65535"),
            },
            sri: AnyMessage::Extensions(Extensions::ExtensionsNegotiation(
                ExtensionsNegotiation::RequestExtensionsError(
                    extensions_sv2::RequestExtensionsError {
                        request_id,
                        unsupported_extensions: sri_seq(&unsupported_extensions),
                        required_extensions: sri_seq(&required_extensions),
                    },
                ),
            )),
            sri_decoded: AnyMessage::Extensions(Extensions::ExtensionsNegotiation(
                ExtensionsNegotiation::RequestExtensionsError(d),
            )) => d {
                request_id => request_id,
                unsupported_extensions => unsupported_extensions,
                required_extensions => required_extensions,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TLV: user_identity of extension 0x0002 on SubmitSharesExtended (spec 03 §3.4.3, 0x0002)
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn user_identity_tlv_on_submit_shares_extended(
        channel_id in u32s(),
        sequence_number in u32s(),
        job_id in u32s(),
        nonce in u32s(),
        ntime in u32s(),
        version in u32s(),
        extranonce in bytes_upto(32),
        user_identity in string_upto(32),
        // A field of an extension we do not know, after ours (TLVs are ordered by extension).
        unknown in prop::option::of((0x0003u16..=0x7fff, any::<u8>(), bytes_upto(300))),
    ) {
        let ours = mining::SubmitSharesExtended {
            channel_id,
            sequence_number,
            job_id,
            nonce,
            ntime,
            version,
            extranonce: b32(&extranonce),
        };
        let sri = mining_sv2::SubmitSharesExtended {
            channel_id,
            sequence_number,
            job_id,
            nonce,
            ntime,
            version,
            extranonce: sri_b32(&extranonce),
        };

        // Ours: the message, then the TLV fields.
        let mut tlv = TlvEncoder::new();
        tlv.push(USER_IDENTITY.extension_type, USER_IDENTITY.field_type, user_identity.as_bytes())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Some((ext, field, value)) = &unknown {
            tlv.push(*ext, *field, value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let mut our_bytes = Vec::new();
        encode_frame_with_tlv(&ours, &tlv, &mut our_bytes)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;

        // SRI: UserIdentity -> Tlv, listed in a TlvList appended to the message.
        let ui = UserIdentity::new(&user_identity).map_err(TestCaseError::fail)?;
        let ui_tlv = ui.to_tlv().map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(
            Hex(&ui_tlv.encode().map_err(|e| TestCaseError::fail(format!("{e:?}")))?),
            Hex(&{
                let mut only = Vec::new();
                let mut enc = TlvEncoder::new();
                enc.push(0x0002, 0x01, user_identity.as_bytes())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                enc.write(&mut only);
                only
            })
        );
        let mut sri_tlvs = vec![ui_tlv.clone()];
        if let Some((ext, field, value)) = &unknown {
            sri_tlvs.push(SriTlv::new(*ext, *field, value.clone()));
        }
        let list = TlvList::from_slice(&sri_tlvs).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let sri_bytes = list
            .build_frame_bytes_with_tlvs(Mining::SubmitSharesExtended(sri))
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(Hex(&our_bytes), Hex(&sri_bytes));

        // We decode SRI's frame: the message, then the user_identity; unknown fields skipped.
        let frame = Frame::parse_exact(&sri_bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (decoded, rest) = frame
            .decode::<mining::SubmitSharesExtended>()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&decoded, &ours);
        let fields: Vec<_> = TlvDecoder::new(rest, &[USER_IDENTITY])
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(fields.len(), 1);
        prop_assert_eq!(fields[0].extension_type, 0x0002);
        prop_assert_eq!(fields[0].field_type, 0x01);
        prop_assert_eq!(fields[0].value, user_identity.as_bytes());
        let (any, rest_any) = frame.message().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(any, Message::SubmitSharesExtended(ours.clone()));
        prop_assert_eq!(rest_any, rest);

        // SRI decodes our frame with 0x0002 negotiated: the message and the user_identity.
        let mut buf = our_bytes.clone();
        let header = Header::from_bytes(&buf).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let (msg, tlvs) = parse_message_frame_with_tlvs(header, &mut buf[HEADER_LEN..], &[0x0002])
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        match msg {
            AnyMessage::Mining(Mining::SubmitSharesExtended(d)) => {
                check_sri_fields!(d {
                    channel_id => channel_id,
                    sequence_number => sequence_number,
                    job_id => job_id,
                    nonce => nonce,
                    ntime => ntime,
                    version => version,
                    extranonce => extranonce,
                });
            }
            other => prop_assert!(false, "SRI decoded {:?}", other),
        }
        let tlvs = tlvs.unwrap_or_default();
        prop_assert_eq!(tlvs.len(), 1);
        prop_assert_eq!(&tlvs[0], &ui_tlv);
        let back = UserIdentity::from_tlv(&tlvs[0]).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(back.as_str(), Some(user_identity.as_str()));
    }
}

/// The spec's "Worker_001" example (03 §3.4.3, extensions/0x0002). The spec prints the Type and
/// Length big-endian (`00 02 01 00 0A ...`), which contradicts its own rule that multibyte data
/// types are little-endian (03 §3.1); we and SRI both encode little-endian.
#[test]
fn user_identity_tlv_spec_example() {
    let mut enc = TlvEncoder::new();
    enc.push(0x0002, 0x01, b"Worker_001").expect("valid TLV");
    let mut ours = Vec::new();
    enc.write(&mut ours);
    let sri = UserIdentity::new("Worker_001")
        .expect("valid")
        .to_bytes()
        .expect("SRI encodes");
    let expected = [
        0x02, 0x00, 0x01, 0x0a, 0x00, 0x57, 0x6f, 0x72, 0x6b, 0x65, 0x72, 0x5f, 0x30, 0x30, 0x31,
    ];
    assert_eq!(Hex(&ours), Hex(&expected));
    assert_eq!(Hex(&sri), Hex(&expected));
    let fields: Vec<_> = TlvDecoder::new(&expected, &[USER_IDENTITY])
        .collect::<Result<_, _>>()
        .expect("decodes");
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0].value, b"Worker_001");
}

/// BOOL (03 §3.1): recipients must read only the least significant bit. Checks our decoder
/// alone (see the module documentation about SRI).
#[test]
fn bool_reads_only_the_lsb() {
    let msg = tdp::NewTemplate {
        template_id: 7,
        future_template: false,
        version: 0x2000_0000,
        coinbase_tx_version: 2,
        coinbase_prefix: b255(&[1, 2, 3]),
        coinbase_tx_input_sequence: u32::MAX,
        coinbase_tx_value_remaining: 625_000_000,
        coinbase_tx_outputs_count: 0,
        coinbase_tx_outputs: b64k(&[]),
        coinbase_tx_locktime: 0,
        merkle_path: Seq0_255::new(&[]).expect("empty"),
    };
    let canonical = our_frame(&msg);
    let bool_at = HEADER_LEN + 8;
    assert_eq!(canonical[bool_at], 0);
    for byte in [0x02u8, 0x03, 0xfe, 0xff, 0x80, 0x81] {
        let mut bytes = canonical.clone();
        bytes[bool_at] = byte;
        let frame = Frame::parse_exact(&bytes).expect("frame");
        let (decoded, rest) = frame.decode::<tdp::NewTemplate>().expect("decodes");
        assert!(rest.is_empty());
        assert_eq!(decoded.future_template, byte & 1 == 1, "byte {byte:#04x}");
        let mut expect = canonical.clone();
        expect[bool_at] = byte & 1;
        assert_eq!(Hex(&our_frame(&decoded)), Hex(&expect));
    }
}

/// STR0_255 is "L bytes" (03 §3.1) and `user_identity` an "unconstrained sequence of bytes"
/// for which UTF-8 is only recommended (05 §5.3.2); SRI accepts any bytes, and so do we.
#[test]
fn non_utf8_str0_255_from_sri_decodes() {
    let sri = mining_sv2::OpenStandardMiningChannel {
        request_id: 1,
        user_identity: Str0255::new(&[0xff]).expect("SRI takes any bytes"),
        nominal_hash_rate: 0.0,
        max_target: sri_u256(&[0xff; 32]),
    };
    let bytes = sri_frame(AnyMessage::Mining(Mining::OpenStandardMiningChannel(sri)));
    let mut expected = vec![
        0x00, 0x00, 0x10, 0x2a, 0x00, 0x00, // header: ext 0, msg_type 0x10, msg_length 42
        0x01, 0x00, 0x00, 0x00, // request_id 1
        0x01, 0xff, // user_identity: 1 byte, 0xff (not UTF-8)
        0x00, 0x00, 0x00, 0x00, // nominal_hash_rate 0.0
    ];
    expected.extend_from_slice(&[0xff; 32]); // max_target
    assert_eq!(Hex(&bytes), Hex(&expected));

    // SRI decodes its own frame.
    let mut buf = bytes.clone();
    let header = Header::from_bytes(&buf).expect("header");
    assert!(AnyMessage::try_from((header, &mut buf[HEADER_LEN..])).is_ok());

    // So do we, byte for byte.
    let frame = Frame::parse_exact(&bytes).expect("frame");
    let decoded = frame.decode::<mining::OpenStandardMiningChannel>();
    assert!(decoded.is_ok(), "{decoded:?}");
}

// ---------------------------------------------------------------------------------------------
// Streaming: SRI-encoded frames fed to our FrameDecoder in random chunks
// ---------------------------------------------------------------------------------------------

/// One SRI-encoded frame of a random message, small or large.
fn arb_sri_frame() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => (u32s(), u32s(), u32s(), u32s(), u32s(), u32s(), bytes_upto(32)).prop_map(
            |(channel_id, sequence_number, job_id, nonce, ntime, version, extranonce)| {
                sri_frame(AnyMessage::Mining(Mining::SubmitSharesExtended(
                    mining_sv2::SubmitSharesExtended {
                        channel_id,
                        sequence_number,
                        job_id,
                        nonce,
                        ntime,
                        version,
                        extranonce: sri_b32(&extranonce),
                    },
                )))
            }
        ),
        2 => (
            u32s(),
            u32s(),
            opt_u32(),
            u32s(),
            any::<bool>(),
            merkle_path(),
            bytes_upto(65_535),
            bytes_upto(65_535),
        )
            .prop_map(|(channel_id, job_id, min_ntime, version, vra, path, prefix, suffix)| {
                sri_frame(AnyMessage::Mining(Mining::NewExtendedMiningJob(
                    mining_sv2::NewExtendedMiningJob {
                        channel_id,
                        job_id,
                        min_ntime: Sv2Option::new(min_ntime),
                        version,
                        version_rolling_allowed: vra,
                        merkle_path: sri_path(&path),
                        coinbase_tx_prefix: sri_b64k(&prefix),
                        coinbase_tx_suffix: sri_b64k(&suffix),
                    },
                )))
            }),
        2 => (0u8..=2, u16s(), u32s(), str255(), str255()).prop_map(
            |(protocol, version, flags, host, vendor)| {
                sri_frame(AnyMessage::Common(CommonMessages::SetupConnection(
                    common_messages_sv2::SetupConnection {
                        protocol: Protocol::try_from(protocol).expect("0..=2"),
                        min_version: version,
                        max_version: version,
                        flags,
                        endpoint_host: sri_str(&host),
                        endpoint_port: 3333,
                        vendor: sri_str(&vendor),
                        hardware_version: sri_str(""),
                        firmware: sri_str(""),
                        device_id: sri_str(""),
                    },
                )))
            }
        ),
        1 => (u64s(), bytes_upto(1000), tx_list()).prop_map(|(template_id, excess, txs)| {
            sri_frame(AnyMessage::TemplateDistribution(
                TemplateDistribution::RequestTransactionDataSuccess(
                    template_distribution_sv2::RequestTransactionDataSuccess {
                        template_id,
                        excess_data: sri_b64k(&excess),
                        transaction_list: Seq064K::new(
                            txs.iter().map(|t| B016M::new(t).expect("B0_16M")).collect(),
                        )
                        .expect("SEQ0_64K"),
                    },
                ),
            ))
        }),
        1 => (u16s(), vec(any::<u16>(), 0..=64)).prop_map(|(request_id, exts)| {
            sri_frame(AnyMessage::Extensions(Extensions::ExtensionsNegotiation(
                ExtensionsNegotiation::RequestExtensions(extensions_sv2::RequestExtensions {
                    request_id,
                    requested_extensions: sri_seq(&exts),
                }),
            )))
        }),
        1 => u32s().prop_map(|channel_id| {
            sri_frame(AnyMessage::Common(CommonMessages::ChannelEndpointChanged(
                common_messages_sv2::ChannelEndpointChanged { channel_id },
            )))
        }),
    ]
    .boxed()
}

/// Chunk sizes from 1 byte to 64 KiB, small ones often.
fn chunk_sizes() -> BoxedStrategy<Vec<usize>> {
    vec(
        prop_oneof![
            4 => 1usize..=16,
            3 => 1usize..=1024,
            2 => 1usize..=65_536,
            1 => Just(65_536usize),
        ],
        1..=64,
    )
    .boxed()
}

proptest! {
    #![proptest_config(cfg(64))]

    #[test]
    fn frame_decoder_reassembles_sri_stream(
        frames in vec(arb_sri_frame(), 1..=48),
        sizes in chunk_sizes(),
    ) {
        let stream = frames.concat();
        let mut decoder = FrameDecoder::new(MAX_PAYLOAD_LEN);
        let mut pos = 0;
        let mut next_size = sizes.iter().cycle();
        let mut got = 0usize;
        let mut reencoded = Vec::new();
        while pos < stream.len() {
            let n = (*next_size.next().expect("cycle")).min(stream.len() - pos);
            decoder
                .push(&stream[pos..pos + n])
                .map_err(|e| TestCaseError::fail(format!("push: {e}")))?;
            pos += n;
            while let Some(frame) = decoder
                .next_frame()
                .map_err(|e| TestCaseError::fail(format!("next_frame: {e}")))?
            {
                prop_assert!(got < frames.len(), "more frames out than in");
                let expected = &frames[got];
                prop_assert_eq!(&frame.header.to_bytes()[..], &expected[..HEADER_LEN]);
                prop_assert_eq!(Hex(frame.payload), Hex(&expected[HEADER_LEN..]));
                let (msg, rest) = frame
                    .message()
                    .map_err(|e| TestCaseError::fail(format!("frame {got}: {e}")))?;
                prop_assert!(rest.is_empty());
                reencoded.clear();
                encode_message_frame(&msg, &mut reencoded)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(Hex(&reencoded), Hex(expected));
                got += 1;
            }
        }
        prop_assert_eq!(got, frames.len());
        prop_assert_eq!(decoder.buffered(), 0);
    }
}
