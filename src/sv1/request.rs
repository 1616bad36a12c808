//! A Stratum V1 request, from one line of JSON-RPC to a typed [`Request`]: the methods a
//! miner calls, each with its parameters checked (types, hex lengths) here, so the session
//! only ever sees well-formed values.
//!
//! Two stages, because an answer needs the request's id: a line that is not a JSON object
//! with a string `method` is [`ParseError::NotARequest`] (answered with id null, then the
//! connection ends); a request whose parameters are wrong is [`Request`] with
//! [`Method::Invalid`] (answered with error 20, the connection goes on).

use serde_json::Value;

/// A request: its id (echoed in the answer; null for a notification) and what it asks.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The id, as the miner sent it (number, string or null).
    pub id: Value,
    /// The method and its parameters.
    pub method: Method,
}

/// What a request asks, with its parameters checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// `mining.subscribe [user_agent, session_id?]`.
    Subscribe {
        /// The miner's software, if it said.
        user_agent: Option<String>,
    },
    /// `mining.authorize [username, password]` (the password is ignored).
    Authorize {
        /// `user_identity` in the SV2 formats (`ADDRESS.worker`, `sri/solo/ADDRESS/worker`...).
        username: String,
    },
    /// `mining.configure [extensions, parameters]` (BIP310).
    Configure(Configure),
    /// `mining.extranonce.subscribe []`.
    ExtranonceSubscribe,
    /// `mining.suggest_difficulty [difficulty]`.
    SuggestDifficulty(f64),
    /// `mining.submit [worker, job_id, extranonce2, ntime, nonce, version_bits?]`.
    Submit(Submit),
    /// A method this pool does not serve.
    Unknown(String),
    /// A known method with wrong parameters: why.
    Invalid(&'static str),
}

/// mining.configure's extensions and their parameters, as far as this pool serves them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Configure {
    /// `version-rolling`: the miner's mask (`version-rolling.mask`, all bits if absent).
    pub version_rolling: Option<u32>,
    /// `minimum-difficulty`: `minimum-difficulty.value`.
    pub minimum_difficulty: Option<f64>,
    /// `subscribe-extranonce` was asked for.
    pub subscribe_extranonce: bool,
    /// Extensions asked for that this pool does not know (answered `false`).
    pub unknown: Vec<String>,
}

/// mining.submit's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    /// The worker name (the username given to mining.authorize).
    pub worker: String,
    /// The job id, as sent in mining.notify.
    pub job_id: String,
    /// The miner's extranonce bytes (its length is checked by the session, which knows it).
    pub extranonce2: Vec<u8>,
    /// nTime (8 hex digits, big-endian).
    pub ntime: u32,
    /// Nonce (8 hex digits, big-endian).
    pub nonce: u32,
    /// The rolled version bits (BIP310), if sent.
    pub version_bits: Option<u32>,
}

/// A line that is not a JSON-RPC request at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, not an object, or no string `method`.
    #[error("not a JSON-RPC request")]
    NotARequest,
}

/// Longest username taken (the SV2 user_identity is a STR0_255).
pub const MAX_USERNAME_LEN: usize = 255;
/// Longest job id a submit may name (ours are at most 8 hex digits).
const MAX_JOB_ID_LEN: usize = 16;

/// Parses one line.
pub fn parse(line: &[u8]) -> Result<Request, ParseError> {
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(line) else {
        return Err(ParseError::NotARequest);
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    let Some(Value::String(method)) = obj.remove("method") else {
        return Err(ParseError::NotARequest);
    };
    let params = match obj.remove("params") {
        Some(Value::Array(p)) => p,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            return Ok(Request {
                id,
                method: Method::Invalid("params must be an array"),
            });
        }
    };
    let method = match method.as_str() {
        "mining.subscribe" => subscribe(&params),
        "mining.authorize" => authorize(&params),
        "mining.configure" => configure(&params),
        "mining.extranonce.subscribe" => Method::ExtranonceSubscribe,
        "mining.suggest_difficulty" => suggest_difficulty(&params),
        "mining.submit" => submit(&params),
        _ => Method::Unknown(method),
    };
    Ok(Request { id, method })
}

fn subscribe(params: &[Value]) -> Method {
    match params.first() {
        None | Some(Value::Null) => Method::Subscribe { user_agent: None },
        Some(Value::String(s)) => Method::Subscribe {
            user_agent: Some(s.chars().take(MAX_USERNAME_LEN).collect()),
        },
        Some(_) => Method::Invalid("user agent must be a string"),
    }
}

fn authorize(params: &[Value]) -> Method {
    match params.first() {
        Some(Value::String(s)) if s.len() <= MAX_USERNAME_LEN => Method::Authorize {
            username: s.clone(),
        },
        Some(Value::String(_)) => Method::Invalid("username longer than 255 bytes"),
        _ => Method::Invalid("username must be a string"),
    }
}

fn suggest_difficulty(params: &[Value]) -> Method {
    match params.first().and_then(Value::as_f64) {
        Some(d) if d.is_finite() && d > 0.0 => Method::SuggestDifficulty(d),
        _ => Method::Invalid("difficulty must be a positive number"),
    }
}

fn configure(params: &[Value]) -> Method {
    let Some(Value::Array(names)) = params.first() else {
        return Method::Invalid("extensions must be an array");
    };
    let empty = serde_json::Map::new();
    let values = match params.get(1) {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => &empty,
        Some(_) => return Method::Invalid("extension parameters must be an object"),
    };
    let mut c = Configure::default();
    for name in names {
        let Some(name) = name.as_str() else {
            return Method::Invalid("extension names must be strings");
        };
        match name {
            "version-rolling" => {
                let mask = match values.get("version-rolling.mask") {
                    None => u32::MAX,
                    Some(Value::String(h)) => match hex_u32_loose(h) {
                        Some(m) => m,
                        None => return Method::Invalid("version-rolling.mask must be hex"),
                    },
                    Some(_) => return Method::Invalid("version-rolling.mask must be hex"),
                };
                c.version_rolling = Some(mask);
            }
            "minimum-difficulty" => match values
                .get("minimum-difficulty.value")
                .and_then(Value::as_f64)
            {
                Some(d) if d.is_finite() && d > 0.0 => c.minimum_difficulty = Some(d),
                _ => return Method::Invalid("minimum-difficulty.value must be a positive number"),
            },
            "subscribe-extranonce" => c.subscribe_extranonce = true,
            other if c.unknown.len() < 16 => c.unknown.push(other.chars().take(64).collect()),
            _ => {}
        }
    }
    Method::Configure(c)
}

fn submit(params: &[Value]) -> Method {
    let text = |i: usize| params.get(i).and_then(Value::as_str);
    let (Some(worker), Some(job_id), Some(extranonce2), Some(ntime), Some(nonce)) =
        (text(0), text(1), text(2), text(3), text(4))
    else {
        return Method::Invalid("submit needs five strings");
    };
    if worker.len() > MAX_USERNAME_LEN || job_id.len() > MAX_JOB_ID_LEN {
        return Method::Invalid("worker or job id too long");
    }
    let Ok(extranonce2) = bitcoin::hex::FromHex::from_hex(extranonce2) else {
        return Method::Invalid("extranonce2 must be hex");
    };
    let (Some(ntime), Some(nonce)) = (hex_u32(ntime), hex_u32(nonce)) else {
        return Method::Invalid("ntime and nonce must be 8 hex digits");
    };
    let version_bits = match params.get(5) {
        None | Some(Value::Null) => None,
        Some(Value::String(v)) => match hex_u32(v) {
            Some(v) => Some(v),
            None => return Method::Invalid("version bits must be 8 hex digits"),
        },
        Some(_) => return Method::Invalid("version bits must be 8 hex digits"),
    };
    Method::Submit(Submit {
        worker: worker.to_owned(),
        job_id: job_id.to_owned(),
        extranonce2,
        ntime,
        nonce,
        version_bits,
    })
}

/// Exactly 8 hex digits, big-endian (how SV1 writes nTime, nonces and version bits); not a
/// sign, which `from_str_radix` alone would take.
fn hex_u32(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())?
}

/// 1 to 8 hex digits (a BIP310 mask, which some miners write without leading zeros).
fn hex_u32_loose(s: &str) -> Option<u32> {
    (!s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn method(line: &str) -> Method {
        parse(line.as_bytes()).unwrap().method
    }

    #[test]
    fn not_a_request() {
        for line in [
            "",
            "{",
            "[]",
            "42",
            "{\"id\":1}",
            "{\"id\":1,\"method\":7}",
            "\u{0}\u{1}",
        ] {
            assert_eq!(
                parse(line.as_bytes()),
                Err(ParseError::NotARequest),
                "{line:?}"
            );
        }
        assert_eq!(parse(&[0xff, 0xfe]), Err(ParseError::NotARequest));
    }

    #[test]
    fn subscribe_and_authorize() {
        let r =
            parse(br#"{"id":1,"method":"mining.subscribe","params":["cgminer/4.10"]}"#).unwrap();
        assert_eq!(r.id, json!(1));
        assert_eq!(
            r.method,
            Method::Subscribe {
                user_agent: Some("cgminer/4.10".into())
            }
        );
        assert_eq!(
            method(r#"{"id":"a","method":"mining.subscribe"}"#),
            Method::Subscribe { user_agent: None }
        );
        assert_eq!(
            method(r#"{"id":2,"method":"mining.authorize","params":["bcrt1qxyz.w1","x"]}"#),
            Method::Authorize {
                username: "bcrt1qxyz.w1".into()
            }
        );
        assert!(matches!(
            method(r#"{"id":2,"method":"mining.authorize","params":[5]}"#),
            Method::Invalid(_)
        ));
        let long = format!(
            r#"{{"id":2,"method":"mining.authorize","params":["{}"]}}"#,
            "u".repeat(256)
        );
        assert!(matches!(method(&long), Method::Invalid(_)));
        assert!(matches!(
            method(r#"{"id":2,"method":"mining.subscribe","params":{"a":1}}"#),
            Method::Invalid(_)
        ));
    }

    #[test]
    fn configure_bip310() {
        let m = method(
            r#"{"id":1,"method":"mining.configure","params":[["version-rolling","minimum-difficulty","subscribe-extranonce","info"],{"version-rolling.mask":"1fffe000","version-rolling.min-bit-count":2,"minimum-difficulty.value":2048}]}"#,
        );
        assert_eq!(
            m,
            Method::Configure(Configure {
                version_rolling: Some(0x1fff_e000),
                minimum_difficulty: Some(2048.0),
                subscribe_extranonce: true,
                unknown: vec!["info".into()],
            })
        );
        assert!(matches!(
            method(
                r#"{"id":1,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"xyz"}]}"#
            ),
            Method::Invalid(_)
        ));
        assert!(matches!(
            method(r#"{"id":1,"method":"mining.configure","params":["version-rolling"]}"#),
            Method::Invalid(_)
        ));
    }

    #[test]
    fn submit_checks_types_and_hex_lengths() {
        assert_eq!(
            method(
                r#"{"id":4,"method":"mining.submit","params":["w","1a","00000000deadbeef","5f5e1000","0000abcd","00002000"]}"#
            ),
            Method::Submit(Submit {
                worker: "w".into(),
                job_id: "1a".into(),
                extranonce2: vec![0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef],
                ntime: 0x5f5e_1000,
                nonce: 0xabcd,
                version_bits: Some(0x2000),
            })
        );
        for bad in [
            r#"["w","1a","0g","5f5e1000","0000abcd"]"#,
            r#"["w","1a","000","5f5e1000","0000abcd"]"#,
            r#"["w","1a","00","5f5e100","0000abcd"]"#,
            r#"["w","1a","00","5f5e1000","0000abcd0"]"#,
            r#"["w","1a","00","5f5e1000","0000abcd","2000"]"#,
            r#"["w","1a","00","5f5e1000",7]"#,
            r#"["w","1a","00","5f5e1000"]"#,
            r#"["w","11111111111111111","00","5f5e1000","0000abcd"]"#,
            // Eight characters but not eight hex digits (Rust's integer parser takes a sign).
            r#"["w","1a","00","+5f5e100","0000abcd"]"#,
            r#"["w","1a","00","5f5e1000","+000abcd"]"#,
            r#"["w","1a","00","5f5e1000","0000abcd","+0002000"]"#,
        ] {
            let line = format!(r#"{{"id":4,"method":"mining.submit","params":{bad}}}"#);
            assert!(matches!(method(&line), Method::Invalid(_)), "{bad}");
        }
    }

    #[test]
    fn unknown_and_suggest() {
        assert_eq!(
            method(r#"{"id":9,"method":"mining.foo","params":[]}"#),
            Method::Unknown("mining.foo".into())
        );
        assert_eq!(
            method(r#"{"id":null,"method":"mining.suggest_difficulty","params":[512]}"#),
            Method::SuggestDifficulty(512.0)
        );
        assert!(matches!(
            method(r#"{"id":9,"method":"mining.suggest_difficulty","params":[-1]}"#),
            Method::Invalid(_)
        ));
    }
}
