//! One function per fuzz target, each taking the fuzzer's bytes. Besides "never panics", every
//! harness checks properties the code promises, so a wrong answer is a crash too:
//!
//! * [`sse_parser`]: any chunk split gives the same events as one chunk; held data stays within
//!   the limit; with no limit in play, the output equals a plain reading of WHATWG HTML §9.2.6.
//! * [`channel_pattern`]: parse/display round trips; `Pattern::is_covered_by` equals a brute-force
//!   answer over every channel that can tell the patterns apart.
//! * [`cel_filter`]: compile and evaluate client filters (generated from a CEL grammar, or raw
//!   text) against events with arbitrary JSON; evaluation is deterministic and never panics.
//!   libFuzzer's `-timeout` turns a filter that stalls evaluation into a finding.
//! * [`handoff_json`]: the proxy's `POST /v1/handoffs` body parse and validation; what it accepts
//!   is allowed by `allowed_origins`, carries no forbidden header and has a TTL in range.
//! * [`webhook_json`]: the origin's webhook registration body and its URL/channel/filter checks.
//! * [`ws_message`]: the origin's WebSocket client messages; refusals are 4xx error frames.
//! * [`url_policy`]: the webhook address policy (IPv4-mapped, -compatible and NAT64 forms judged
//!   as their IPv4 address) and the proxy's `allowed_origins` matching.
//!
//! Inputs are bytes read with [`arbitrary::Unstructured`]: the first byte picks a mode (raw text,
//! or a structure built from a small grammar that reaches deep paths quickly).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::{Result as AResult, Unstructured};
use reqwest::Url;
use serde_json::{Map, Value, json};
use ssepush_origin::channel::{Channel, MAX_CHANNEL_LEN, Pattern, PatternSet};
use ssepush_origin::event::{Event, EventId};
use ssepush_origin::filter::{EventVars, Filter, MAX_FILTER_LEN};
use ssepush_origin::sse::parse::{BOM, MIN_MAX_EVENT_BYTES, Message, Parsed, Parser};

// ---------------------------------------------------------------------------------------------
// SSE parser

/// Feeds `stream` to a fresh parser in the given chunks.
fn parse_chunks<'a>(max: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Parsed> {
    let mut parser = Parser::new(max);
    let mut out = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, &mut out);
    }
    out
}

/// WHATWG HTML §9.2.6 read literally over the whole stream (decode, split lines, process
/// fields), without a size limit, plus the parser's documented `LastEventId` for id-only
/// blocks. The oracle for inputs that stay under the limit.
fn reference_parse(stream: &[u8]) -> Vec<Parsed> {
    let stream = stream.strip_prefix(BOM).unwrap_or(stream);
    let text = String::from_utf8_lossy(stream);
    let mut out = Vec::new();
    let (mut data, mut event, mut last_id) = (String::new(), String::new(), String::new());
    let mut id_seen = false;
    let mut line = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\r' && c != '\n' {
            line.push(c);
            continue;
        }
        if c == '\r' && chars.peek() == Some(&'\n') {
            chars.next();
        }
        let l = std::mem::take(&mut line);
        if l.is_empty() {
            if data.is_empty() {
                if id_seen {
                    out.push(Parsed::LastEventId(last_id.clone()));
                }
            } else {
                data.pop();
                out.push(Parsed::Message(Message {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event.clone()
                    },
                    data: std::mem::take(&mut data),
                    last_event_id: last_id.clone(),
                }));
            }
            data.clear();
            event.clear();
            id_seen = false;
            continue;
        }
        if l.starts_with(':') {
            continue;
        }
        let (field, value) = match l.find(':') {
            Some(i) => {
                let v = &l[i + 1..];
                (&l[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (l.as_str(), ""),
        };
        match field {
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "event" => event = value.to_owned(),
            "id" if !value.contains('\0') => {
                last_id = value.to_owned();
                id_seen = true;
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                let ms = value.bytes().fold(0u64, |ms, d| {
                    ms.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                out.push(Parsed::Retry(std::time::Duration::from_millis(ms)));
            }
            _ => {}
        }
    }
    out
}

/// SSE parser: chunk-split invariance, bounded holdings, and agreement with the reference.
pub fn sse_parser(input: &[u8]) {
    let mut u = Unstructured::new(input);
    let max = usize::from(u.arbitrary::<u16>().unwrap_or(0) % 1024);
    let ncuts = u.int_in_range(0..=12u8).unwrap_or(0);
    let mut cuts: Vec<u16> = (0..ncuts)
        .map(|_| u.arbitrary::<u16>().unwrap_or(0))
        .collect();
    let stream = u.take_rest();

    cuts.iter_mut()
        .for_each(|c| *c = (usize::from(*c) % (stream.len() + 1)) as u16);
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0usize;
    for &c in &cuts {
        chunks.push(&stream[from..usize::from(c)]);
        from = usize::from(c);
    }
    chunks.push(&stream[from..]);

    let whole = parse_chunks(max, [stream]);
    let split = parse_chunks(max, chunks.iter().copied());
    assert_eq!(whole, split, "a chunk split changed what was parsed");
    if stream.len() <= 2048 {
        let bytewise = parse_chunks(max, stream.chunks(1));
        assert_eq!(
            whole, bytewise,
            "byte-by-byte feeding changed what was parsed"
        );
    }

    // Bounded: a message's data (plus its final LF) fits the limit; the other fields come from
    // one line of at most `max` bytes, which lossy UTF-8 decoding can at most triple.
    let limit = max.max(MIN_MAX_EVENT_BYTES);
    for p in &whole {
        if let Parsed::Message(m) = p {
            assert!(m.data.len() < limit, "data over the limit was delivered");
            assert!(m.event.len() <= 3 * limit);
            assert!(m.last_event_id.len() <= 3 * limit);
            assert!(!m.event.is_empty());
        }
    }

    // With a limit nothing reaches, the parser is the spec.
    let unbounded = parse_chunks(usize::MAX, chunks.iter().copied());
    assert_eq!(
        unbounded,
        reference_parse(stream),
        "the parser disagrees with WHATWG HTML §9.2.6"
    );
}

// ---------------------------------------------------------------------------------------------
// Channel patterns

const TOKENS: [&str; 6] = ["a", "b", "c1", "*", ">", "a-b"];

fn token(u: &mut Unstructured) -> AResult<String> {
    Ok(if u.ratio(1u8, 8)? {
        u.arbitrary::<String>()?.chars().take(6).collect()
    } else {
        u.choose(&TOKENS)?.to_string()
    })
}

fn pattern_source(u: &mut Unstructured) -> AResult<String> {
    let n = u.int_in_range(1..=5u8)?;
    let tokens: Vec<String> = (0..n).map(|_| token(u)).collect::<AResult<_>>()?;
    Ok(tokens.join("."))
}

fn literal_tokens(p: &str) -> impl Iterator<Item = &str> {
    p.split('.').filter(|t| *t != "*" && *t != ">")
}

/// Every channel over `vocab` of 1 to `max_len` tokens, or `None` when there are too many.
fn all_channels(vocab: &[&str], max_len: usize) -> Option<Vec<String>> {
    let mut total = 0usize;
    for k in 1..=max_len {
        total = total.checked_add(vocab.len().checked_pow(k as u32)?)?;
    }
    if total > 20_000 {
        return None;
    }
    let mut out = Vec::with_capacity(total);
    let mut layer: Vec<String> = vec![String::new()];
    for _ in 0..max_len {
        let mut next = Vec::with_capacity(layer.len() * vocab.len());
        for prefix in &layer {
            for t in vocab {
                next.push(if prefix.is_empty() {
                    (*t).to_owned()
                } else {
                    format!("{prefix}.{t}")
                });
            }
        }
        out.extend(next.iter().cloned());
        layer = next;
    }
    Some(out)
}

fn check_one_source(s: &str) {
    let p = Pattern::parse(s);
    if let Ok(p) = &p {
        assert_eq!(p.as_str(), s);
        assert_eq!(p.to_string(), s);
        assert!(s.len() <= MAX_CHANNEL_LEN);
        assert!(
            p.is_covered_by(std::slice::from_ref(p)),
            "{s} not covered by itself"
        );
        let all = Pattern::parse(">").unwrap();
        assert!(p.is_covered_by(std::slice::from_ref(&all)));
        if let Some(lit) = p.literal() {
            assert_eq!(lit, s);
            assert!(p.matches(s));
        }
    }
    if let Ok(c) = Channel::parse(s) {
        assert_eq!(c.as_str(), s);
        let p = p.as_ref().expect("a valid channel is a valid pattern");
        assert_eq!(p.literal(), Some(s));
        assert!(p.matches(s));
        let json = serde_json::to_string(&c).unwrap();
        let back: Channel = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }
}

/// Channel patterns: parsing, matching, and `is_covered_by` against brute force.
pub fn channel_pattern(input: &[u8]) {
    let mut u = Unstructured::new(input);
    let Ok(raw) = u.arbitrary::<bool>() else {
        return;
    };
    if raw {
        let s = String::from_utf8_lossy(u.take_rest()).into_owned();
        check_one_source(&s);
        return;
    }
    let Ok(want) = pattern_source(&mut u) else {
        return;
    };
    let n = u.int_in_range(0..=4u8).unwrap_or(0);
    let allowed_src: Vec<String> = (0..n).filter_map(|_| pattern_source(&mut u).ok()).collect();
    check_one_source(&want);
    allowed_src.iter().for_each(|s| check_one_source(s));
    let Ok(want_p) = Pattern::parse(&want) else {
        return;
    };
    let allowed: Vec<Pattern> = allowed_src
        .iter()
        .filter_map(|s| Pattern::parse(s).ok())
        .collect();
    let set = PatternSet::new(allowed.iter().cloned());
    let covered = want_p.is_covered_by(&allowed);

    // Brute force: the literal tokens named anywhere plus one named nowhere tell every pattern
    // apart, and one token longer than the longest pattern stands for every longer channel.
    let mut vocab: Vec<&str> = literal_tokens(&want)
        .chain(allowed.iter().flat_map(|p| literal_tokens(p.as_str())))
        .collect();
    vocab.sort_unstable();
    vocab.dedup();
    vocab.push("fresh");
    let max_len = std::iter::once(&want_p)
        .chain(&allowed)
        .map(|p| p.as_str().split('.').count())
        .max()
        .unwrap_or(1)
        + 1;
    let Some(channels) = all_channels(&vocab, max_len) else {
        return;
    };
    let mut brute = true;
    for c in &channels {
        let by_set = set.matches(c);
        assert_eq!(by_set, allowed.iter().any(|a| a.matches(c)));
        if want_p.matches(c) && !by_set {
            brute = false;
        }
        if want_p.matches(c) && covered {
            assert!(by_set, "{want} covered by {allowed_src:?} yet {c} escapes");
        }
    }
    assert_eq!(
        covered, brute,
        "is_covered_by({want}, {allowed_src:?}) = {covered}, brute force says {brute}"
    );
}

// ---------------------------------------------------------------------------------------------
// CEL filters

const VARS: [&str; 8] = [
    "channel",
    "type",
    "id",
    "data",
    "data.n",
    "data.tags",
    "data.user.name",
    "data['k']",
];
const LITERALS: [&str; 16] = [
    "1",
    "0",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615u",
    "1.5",
    "true",
    "null",
    "'x'",
    "\"chat.a\"",
    "b'\\xff'",
    "[1, 2, 3]",
    "{'a': 1}",
    "[]",
    "''",
];
const BINARY: [&str; 14] = [
    "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||", " in ",
];
const METHODS: [&str; 7] = [
    "startsWith",
    "endsWith",
    "contains",
    "matches",
    "size",
    "exists",
    "all",
];
const MACROS: [&str; 5] = ["all", "exists", "exists_one", "map", "filter"];
const FUNCTIONS: [&str; 8] = [
    "size",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "has",
    "timestamp",
];

/// A CEL expression from a small grammar, `depth` levels at most.
fn cel_expr(u: &mut Unstructured, depth: u8, bound: &mut Vec<String>) -> AResult<String> {
    if depth == 0 || u.ratio(1u8, 4)? {
        return Ok(match u.int_in_range(0..=3u8)? {
            0 => u.choose(&VARS)?.to_string(),
            1 if !bound.is_empty() => u.choose(bound)?.clone(),
            2 => format!(
                "{:?}",
                u.arbitrary::<String>()?.chars().take(8).collect::<String>()
            ),
            _ => u.choose(&LITERALS)?.to_string(),
        });
    }
    let d = depth - 1;
    Ok(match u.int_in_range(0..=8u8)? {
        0 => {
            let a = cel_expr(u, d, bound)?;
            let b = cel_expr(u, d, bound)?;
            format!("({a} {} {b})", u.choose(&BINARY)?)
        }
        1 => format!("!({})", cel_expr(u, d, bound)?),
        2 => format!("-({})", cel_expr(u, d, bound)?),
        3 => {
            let c = cel_expr(u, d, bound)?;
            let a = cel_expr(u, d, bound)?;
            let b = cel_expr(u, d, bound)?;
            format!("({c} ? {a} : {b})")
        }
        4 => {
            let t = cel_expr(u, d, bound)?;
            let a = cel_expr(u, d, bound)?;
            format!("{t}.{}({a})", u.choose(&METHODS)?)
        }
        5 => {
            let f = u.choose(&FUNCTIONS)?;
            let a = cel_expr(u, d, bound)?;
            format!("{f}({a})")
        }
        6 => {
            let range = cel_expr(u, d, bound)?;
            let var = format!("v{}", bound.len());
            bound.push(var.clone());
            let body = cel_expr(u, d, bound);
            bound.pop();
            format!("{range}.{}({var}, {})", u.choose(&MACROS)?, body?)
        }
        7 => {
            let n = u.int_in_range(0..=12u8)?;
            let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            format!("[{}]", items.join(", "))
        }
        _ => {
            let t = cel_expr(u, d, bound)?;
            let i = cel_expr(u, d, bound)?;
            format!("{t}[{i}]")
        }
    })
}

/// Bounded arbitrary JSON: an event's `data`.
fn json_value(u: &mut Unstructured, depth: u8) -> AResult<Value> {
    let pick = if depth == 0 {
        u.int_in_range(0..=4u8)?
    } else {
        u.int_in_range(0..=6u8)?
    };
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => json!(u.arbitrary::<i64>()?),
        3 => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        4 => Value::String(u.arbitrary::<String>()?.chars().take(16).collect()),
        5 => {
            let n = u.int_in_range(0..=4u8)?;
            Value::Array(
                (0..n)
                    .map(|_| json_value(u, depth - 1))
                    .collect::<AResult<_>>()?,
            )
        }
        _ => {
            let mut m = Map::new();
            for _ in 0..u.int_in_range(0..=4u8)? {
                let key = (*u.choose(&["n", "k", "tags", "user", "name", "x"])?).to_owned();
                m.insert(key, json_value(u, depth - 1)?);
            }
            Value::Object(m)
        }
    })
}

fn event(u: &mut Unstructured) -> AResult<Event> {
    let id: EventId = "1795546555192-3.5f3e9a21".parse().expect("a valid id");
    Ok(Event {
        id,
        channel: (*u.choose(&["chat.a", "chat.b.c", "x"])?).to_owned(),
        kind: (*u.choose(&["message", "update", "x.y"])?).to_owned(),
        data: json_value(u, 3)?,
        time: id.ms,
    })
}

/// CEL: compile client text under the compile limits, evaluate against arbitrary events.
pub fn cel_filter(input: &[u8]) {
    let mut u = Unstructured::new(input);
    let Ok(raw) = u.arbitrary::<bool>() else {
        return;
    };
    // Raw mode: the rest is the source, evaluated against fixed events. Grammar mode: an
    // expression, then the bytes of arbitrary events.
    let source = if raw {
        let rest = u.bytes(u.len()).unwrap_or_default();
        String::from_utf8_lossy(&rest[..rest.len().min(MAX_FILTER_LEN + 16)]).into_owned()
    } else {
        match cel_expr(&mut u, 6, &mut Vec::new()) {
            Ok(s) => s,
            Err(_) => return,
        }
    };
    let compiled = Filter::compile(&source);
    match &compiled {
        Ok(f) => assert_eq!(f.source(), source),
        Err(e) => assert!(e.line >= 1 && e.column >= 1, "error position {e:?}"),
    }
    assert_eq!(
        compiled.as_ref().ok().map(Filter::source),
        Filter::compile(&source).ok().as_ref().map(Filter::source),
        "compiling twice gave different outcomes"
    );
    let Ok(filter) = compiled else {
        return;
    };
    let fixed = [
        json!({"n": 5, "tags": ["a", "b"], "user": {"name": "ann"}, "k": "v"}),
        json!([1, 2, 3]),
        json!("text"),
    ];
    for data in &fixed {
        let ev = if raw {
            let id: EventId = "1795546555192-3.5f3e9a21".parse().expect("a valid id");
            Event {
                id,
                channel: "chat.a".into(),
                kind: "update".into(),
                data: data.clone(),
                time: id.ms,
            }
        } else {
            match event(&mut u) {
                Ok(ev) => ev,
                Err(_) => return,
            }
        };
        let vars = EventVars::new(&ev);
        let first = filter.matches(&vars);
        assert_eq!(
            first,
            filter.matches(&vars),
            "evaluation is not deterministic"
        );
        assert_eq!(first, filter.matches_event(&ev));
    }
}

// ---------------------------------------------------------------------------------------------
// Handoff and webhook JSON

const URLS: [&str; 12] = [
    "http://127.0.0.1:8080/v1/sse?channel=a",
    "http://127.0.0.1:8081/v1/sse",
    "https://api.example.com/streams/x",
    "https://api.example.com/streamsx",
    "https://api.example.com.evil.net/streams",
    "http://user:pw@127.0.0.1:8080/",
    "ftp://127.0.0.1:8080/",
    "http://[::1]:8080/",
    "http://0x7f.1:8080/",
    "http://127.0.0.1:8080/v1/../../x",
    "https://API.EXAMPLE.COM:443/streams/%2e%2e/x",
    "http://10.0.0.1/",
];
const HEADERS: [&str; 8] = [
    "authorization",
    "Cookie",
    "Host",
    "Transfer-Encoding",
    "last-event-id",
    "x-a\r\nb",
    "",
    "x-custom",
];
const FORBIDDEN_HEADERS: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "last-event-id",
    "accept",
];

fn short_string(u: &mut Unstructured, max: usize) -> AResult<String> {
    Ok(u.arbitrary::<String>()?.chars().take(max).collect())
}

fn url_string(u: &mut Unstructured) -> AResult<String> {
    if u.ratio(1u8, 3)? {
        short_string(u, 64)
    } else {
        Ok(u.choose(&URLS)?.to_string())
    }
}

fn maybe<T>(
    u: &mut Unstructured,
    f: impl FnOnce(&mut Unstructured) -> AResult<T>,
) -> AResult<Option<T>> {
    if u.arbitrary()? {
        Ok(Some(f(u)?))
    } else {
        Ok(None)
    }
}

fn insert_opt(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.to_owned(), v);
    }
}

fn handoff_value(u: &mut Unstructured) -> AResult<Value> {
    let mut stream = Map::new();
    stream.insert("url".into(), Value::String(url_string(u)?));
    let mut headers = Map::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        let name = if u.ratio(1u8, 4)? {
            short_string(u, 12)?
        } else {
            u.choose(&HEADERS)?.to_string()
        };
        headers.insert(name, Value::String(short_string(u, 24)?));
    }
    stream.insert("headers".into(), Value::Object(headers));
    insert_opt(
        &mut stream,
        "lastEventId",
        maybe(u, |u| {
            Ok(Value::String(
                (*u.choose(&[
                    "",
                    "1-0",
                    "1795546555192-3.5f3e9a21",
                    "x",
                    "99999999999999999999-0",
                ])?)
                .to_owned(),
            ))
        })?,
    );
    let push = match u.int_in_range(0..=3u8)? {
        0 => json!({"platform": "apns", "token": u.choose(&["ab", "abc", "", "00ff"])?,
                    "topic": short_string(u, 8)?,
                    "environment": u.choose(&["production", "sandbox", "x"])?}),
        1 => json!({"platform": "fcm", "token": short_string(u, 16)?}),
        2 => json!({"platform": "webpush", "subscription": {
            "endpoint": url_string(u)?,
            "keys": {"p256dh": short_string(u, 90)?, "auth": short_string(u, 24)?}}}),
        _ => json!({"platform": short_string(u, 8)?}),
    };
    let mut wake = Map::new();
    insert_opt(
        &mut wake,
        "filter",
        maybe(u, |u| Ok(Value::String(cel_expr(u, 3, &mut Vec::new())?)))?,
    );
    insert_opt(
        &mut wake,
        "coalesceMs",
        maybe(u, |u| Ok(json!(u.arbitrary::<u64>()?)))?,
    );
    insert_opt(
        &mut wake,
        "maxPerHour",
        maybe(u, |u| Ok(json!(u.arbitrary::<i64>()?)))?,
    );
    insert_opt(
        &mut wake,
        "mode",
        maybe(u, |u| {
            Ok(json!(u.choose(&[
                "visible",
                "silent",
                "background",
                "x"
            ])?))
        })?,
    );
    let mut req = Map::new();
    req.insert("stream".into(), Value::Object(stream));
    req.insert("push".into(), push);
    req.insert("wake".into(), Value::Object(wake));
    insert_opt(
        &mut req,
        "ttlSec",
        maybe(u, |u| Ok(json!(u.arbitrary::<u32>()?)))?,
    );
    if u.ratio(1u8, 8)? {
        req.insert(short_string(u, 6)?, Value::Null);
    }
    Ok(Value::Object(req))
}

/// The body bytes of a JSON request: the raw fuzzer bytes, or a structured request.
fn body_bytes(
    input: &[u8],
    structured: impl FnOnce(&mut Unstructured) -> AResult<Value>,
) -> Option<Vec<u8>> {
    let (&mode, rest) = input.split_first()?;
    if mode & 1 == 0 {
        return Some(rest.to_vec());
    }
    let mut u = Unstructured::new(rest);
    structured(&mut u)
        .ok()
        .map(|v| serde_json::to_vec(&v).unwrap())
}

/// The proxy's handoff creation: JSON body parse plus `handoff::validate`.
pub fn handoff_json(input: &[u8]) {
    use ssepush_proxy::protocol::HandoffRequest;
    let Some(body) = body_bytes(input, handoff_value) else {
        return;
    };
    let Ok(req) = serde_json::from_slice::<HandoffRequest>(&body) else {
        return;
    };
    let settings = ssepush_proxy::settings::Settings::default();
    let listen: SocketAddr = "127.0.0.1:8090".parse().unwrap();
    let list = vec![
        "http://127.0.0.1:8080".to_owned(),
        "https://api.example.com/streams".to_owned(),
    ];
    let allow = ssepush_proxy::allow::OriginAllowList::parse(&list, listen).unwrap();
    let Ok((spec, _cursor)) = ssepush_proxy::handoff::validate(req, &settings, &allow, |_| true)
    else {
        return;
    };
    let url = &spec.stream.url;
    assert!(allow.allows(url), "accepted a URL allowed_origins refuses");
    assert!(matches!(url.scheme(), "http" | "https"));
    assert!(url.username().is_empty() && url.password().is_none());
    for (name, value) in &spec.stream.headers.0 {
        let lower = name.to_ascii_lowercase();
        assert!(
            !FORBIDDEN_HEADERS.contains(&lower.as_str()),
            "accepted header {name:?}"
        );
        assert!(!name.is_empty());
        assert!(
            !value.contains(['\r', '\n', '\0']),
            "accepted a header value with a line break"
        );
    }
    assert!(spec.ttl_secs >= 1 && spec.ttl_secs <= settings.max_ttl_secs);
    assert!(spec.wake.max_per_hour >= 1);
    assert_eq!(spec.stream.key(), spec.stream.clone().key());
}

fn webhook_value(u: &mut Unstructured) -> AResult<Value> {
    let mut m = Map::new();
    m.insert("url".into(), Value::String(url_string(u)?));
    let n = u.int_in_range(0..=3u8)?;
    let channels: Vec<Value> = (0..n)
        .map(|_| pattern_source(u).map(Value::String))
        .collect::<AResult<_>>()?;
    m.insert("channels".into(), Value::Array(channels));
    insert_opt(
        &mut m,
        "filter",
        maybe(u, |u| Ok(Value::String(cel_expr(u, 3, &mut Vec::new())?)))?,
    );
    insert_opt(
        &mut m,
        "from",
        maybe(u, |u| {
            Ok(json!(u.choose(&["now", "0-0", "1-0.5f3e9a21", "x"])?))
        })?,
    );
    insert_opt(
        &mut m,
        "enabled",
        maybe(u, |u| Ok(Value::Bool(u.arbitrary()?)))?,
    );
    Ok(Value::Object(m))
}

/// The origin's webhook registration and update bodies, and the checks their fields get.
pub fn webhook_json(input: &[u8]) {
    use ssepush_origin::server::webhooks::{CreateRequest, PatchRequest};
    use ssepush_origin::webhooks::{check_channels, check_url, ip_allowed, ip_literal};
    let Some(body) = body_bytes(input, webhook_value) else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return;
    };
    let _ = serde_json::from_value::<CreateRequest>(value.clone());
    let _ = serde_json::from_value::<PatchRequest>(value.clone());
    if let Some(url) = value.get("url").and_then(Value::as_str) {
        for allow_private in [false, true] {
            if let Ok(parsed) = check_url(url, allow_private) {
                assert!(matches!(parsed.scheme(), "http" | "https"));
                assert!(parsed.username().is_empty() && parsed.password().is_none());
                assert!(parsed.fragment().is_none());
                assert!(parsed.host_str().is_some_and(|h| !h.is_empty()));
                if let (false, Some(ip)) = (allow_private, ip_literal(&parsed)) {
                    assert!(ip_allowed(ip), "accepted a webhook to {ip}");
                }
            }
        }
    }
    if let Some(Value::Array(list)) = value.get("channels") {
        let channels: Vec<String> = list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        if let Ok(set) = check_channels(&channels) {
            assert!(!set.is_empty());
        }
    }
    if let Some(f) = value.get("filter").and_then(Value::as_str) {
        let _ = Filter::compile(f);
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket messages

fn ws_value(u: &mut Unstructured) -> AResult<Value> {
    let mut m = Map::new();
    let kind = *u.choose(&["subscribe", "unsubscribe", "filter", "publish", "ping", "x"])?;
    if u.ratio(7u8, 8)? {
        m.insert("type".into(), json!(kind));
    }
    let id = if u.ratio(1u8, 6)? {
        json!(u.arbitrary::<i32>()?)
    } else {
        json!(short_string(u, 140)?)
    };
    match kind {
        "subscribe" => {
            m.insert("id".into(), id);
            let n = u.int_in_range(0..=3u8)?;
            let chans: Vec<Value> = (0..n)
                .map(|_| pattern_source(u).map(Value::String))
                .collect::<AResult<_>>()?;
            m.insert("channels".into(), Value::Array(chans));
            insert_opt(
                &mut m,
                "filter",
                maybe(u, |u| Ok(Value::String(cel_expr(u, 3, &mut Vec::new())?)))?,
            );
            insert_opt(
                &mut m,
                "lastEventId",
                maybe(u, |u| Ok(json!(u.choose(&["1-0", "x", "", "1-0.zz"])?)))?,
            );
        }
        "unsubscribe" => {
            m.insert("id".into(), id);
        }
        "filter" => {
            m.insert("id".into(), id);
            insert_opt(
                &mut m,
                "filter",
                maybe(u, |u| Ok(Value::String(cel_expr(u, 3, &mut Vec::new())?)))?,
            );
        }
        "publish" => {
            m.insert("channel".into(), Value::String(pattern_source(u)?));
            insert_opt(
                &mut m,
                "eventType",
                maybe(u, |u| {
                    Ok(json!(u.choose(&["update", "ssepush.reset", "", "a\nb"])?))
                })?,
            );
            m.insert("data".into(), json_value(u, 2)?);
            insert_opt(&mut m, "ref", maybe(u, |_| Ok(id.clone()))?);
        }
        _ => {}
    }
    if u.ratio(1u8, 10)? {
        m.insert(short_string(u, 6)?, Value::Null);
    }
    Ok(Value::Object(m))
}

/// The origin's WebSocket client message parser and its error frames.
pub fn ws_message(input: &[u8]) {
    use ssepush_origin::server::ws::message::{Command, MAX_REF_LEN, error_frame, parse};
    let Some(body) = body_bytes(input, ws_value) else {
        return;
    };
    // A WebSocket text frame is UTF-8 (RFC 6455 §5.6); the server refuses other frames earlier.
    let text = String::from_utf8_lossy(&body);
    match parse(&text) {
        Err(rejection) => {
            assert!(
                rejection.error.status.is_client_error(),
                "status {}",
                rejection.error.status
            );
            if let Some(r) = &rejection.reference {
                assert!(r.is_number() || r.as_str().is_some_and(|s| s.len() <= MAX_REF_LEN));
            }
            let frame = error_frame(rejection.reference.as_ref(), &rejection.error);
            assert_eq!(frame["type"], "error");
            assert!(frame["code"].is_string() && frame["message"].is_string());
            serde_json::to_string(&frame).unwrap();
        }
        Ok(Command::Subscribe { id, patterns, .. }) => {
            assert!(!id.is_empty() && id.len() <= MAX_REF_LEN);
            assert!(!patterns.is_empty());
        }
        Ok(Command::Publish { event, .. }) => {
            assert!(Channel::parse(event.channel.as_str()).is_ok());
            assert!(!event.kind.is_empty() && !event.kind.starts_with("ssepush."));
            assert!(!event.kind.contains(['\r', '\n']));
        }
        Ok(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// URL and address policy

fn v4_form_agrees(v6: Ipv6Addr, v4: Ipv4Addr) {
    assert_eq!(
        ssepush_origin::webhooks::ip_allowed(IpAddr::V6(v6)),
        ssepush_origin::webhooks::ip_allowed(IpAddr::V4(v4)),
        "{v6} judged unlike {v4}"
    );
}

/// Addresses ssepush's webhook policy promises to refuse (module docs and issue 12 §3), as
/// plain range tests independent of the code under test.
fn must_refuse_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 0
        || o[0] == 10
        || o[0] == 127
        || (o[0] == 169 && o[1] == 254)
        || (o[0] == 172 && (16..=31).contains(&o[1]))
        || (o[0] == 192 && o[1] == 168)
        || (o[0] == 100 && (64..=127).contains(&o[1]))
        || o[0] >= 224
}

/// The webhook target policy and the proxy's `allowed_origins`.
pub fn url_policy(input: &[u8]) {
    use ssepush_origin::webhooks::{check_url, ip_allowed, ip_literal};
    let mut u = Unstructured::new(input);
    let Ok(mode) = u.int_in_range(0..=2u8) else {
        return;
    };
    match mode {
        0 => {
            // Addresses: every IPv6 spelling of an IPv4 address is judged as that address.
            let Ok(raw) = u.arbitrary::<[u8; 16]>() else {
                return;
            };
            let v4 = Ipv4Addr::new(raw[12], raw[13], raw[14], raw[15]);
            let v6 = Ipv6Addr::from(raw);
            let _ = ip_allowed(IpAddr::V6(v6));
            if must_refuse_v4(v4) {
                assert!(!ip_allowed(IpAddr::V4(v4)), "{v4} allowed");
            }
            v4_form_agrees(v4.to_ipv6_mapped(), v4);
            if !v4.is_unspecified() && v4 != Ipv4Addr::new(0, 0, 0, 1) {
                v4_form_agrees(Ipv6Addr::from(u128::from(u32::from(v4))), v4);
            }
            v4_form_agrees(
                Ipv6Addr::from((0x64_ff9b_u128 << 96) | u128::from(u32::from(v4))),
                v4,
            );
            // The same address written in a URL is judged the same way.
            for text in [format!("http://{v4}/"), format!("http://[{v6}]/")] {
                let ip = ip_literal(&Url::parse(&text).unwrap()).expect("an IP literal");
                assert_eq!(check_url(&text, false).is_ok(), ip_allowed(ip), "{text}");
            }
        }
        1 => {
            // Webhook URLs: whatever a URL parser makes of the text, an accepted IP host is a
            // public one (decimal, hex and short IPv4 forms included).
            let text = if u.arbitrary::<bool>().unwrap_or(false) {
                String::from_utf8_lossy(u.take_rest()).into_owned()
            } else {
                let host = u
                    .choose(&[
                        "127.1",
                        "0x7f000001",
                        "2130706433",
                        "0177.0.0.1",
                        "[::ffff:7f00:1]",
                        "[::127.0.0.1]",
                        "localhost",
                        "10.0.0.1.",
                        "%31%32%37.0.0.1",
                        "example.com",
                        "8.8.8.8",
                        "[fe80::1%25eth0]",
                    ])
                    .copied()
                    .unwrap_or("x");
                let tail = short_string(&mut u, 16).unwrap_or_default();
                format!("http://{host}{tail}")
            };
            if let Ok(parsed) = check_url(&text, false) {
                if let Some(ip) = ip_literal(&parsed) {
                    assert!(ip_allowed(ip), "{text:?} accepted with host {ip}");
                }
                // The same check on the URL's own serialisation agrees (no parse differential).
                assert!(check_url(parsed.as_str(), false).is_ok());
            }
        }
        _ => {
            // allowed_origins: an allowed URL is http(s), matches an entry's scheme, host and
            // port, and stays allowed after a serialise/parse round trip.
            use ssepush_proxy::allow::OriginAllowList;
            let n = u.int_in_range(0..=3u8).unwrap_or(0);
            let list: Vec<String> = (0..n).filter_map(|_| url_string(&mut u).ok()).collect();
            let listen: SocketAddr = if u.arbitrary().unwrap_or(true) {
                "127.0.0.1:8090".parse().unwrap()
            } else {
                "0.0.0.0:8090".parse().unwrap()
            };
            let Ok(allow) = OriginAllowList::parse(&list, listen) else {
                return;
            };
            let Ok(text) = url_string(&mut u) else {
                return;
            };
            let Ok(url) = Url::parse(&text) else {
                return;
            };
            let allowed = allow.allows(&url);
            if allowed {
                assert!(matches!(url.scheme(), "http" | "https"));
                let entries: Vec<Url> = list.iter().filter_map(|e| Url::parse(e).ok()).collect();
                if entries.is_empty() {
                    assert!(
                        listen.ip().is_loopback(),
                        "allowed with no list off loopback"
                    );
                } else {
                    assert!(entries.iter().any(|e| e.scheme() == url.scheme()
                        && e.host() == url.host()
                        && e.port_or_known_default() == url.port_or_known_default()));
                }
            }
            if let Ok(again) = Url::parse(url.as_str()) {
                assert_eq!(
                    allow.allows(&again),
                    allowed,
                    "{url} changes verdict when re-parsed"
                );
            }
        }
    }
}
