//! The benchmark payload: `{"ssepushBench":[TAG,SEQ,SENT_US]}` (plus optional padding), raw as
//! the event data for servers that relay a POST body (Nchan), or as the `data` of an ssepush
//! event. Receivers find it anywhere in an SSE `data:` line, so the same reader measures any
//! server whatever envelope it wraps the payload in.
//!
//! `TAG` is drawn per run so events of another run (a buffered message replayed to a new
//! subscriber, a second bench against the same server) are told apart and not counted.

/// The JSON key that marks a benchmark payload.
const MARK: &[u8] = b"\"ssepushBench\":[";

/// One decoded payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub tag: u64,
    pub seq: u64,
    /// Unix microseconds when the publisher sent it.
    pub sent_us: u64,
}

/// The payload JSON, with `pad` bytes of filler in a `"pad"` string.
pub fn encode(stamp: Stamp, pad: usize) -> String {
    let mut s = format!(
        "{{\"ssepushBench\":[{},{},{}]",
        stamp.tag, stamp.seq, stamp.sent_us
    );
    if pad > 0 {
        s.push_str(",\"pad\":\"");
        s.extend(std::iter::repeat_n('x', pad));
        s.push('"');
    }
    s.push('}');
    s
}

/// The stamp in an SSE line, if it is a `data:` line holding one.
pub fn find(line: &[u8]) -> Option<Stamp> {
    if !line.starts_with(b"data:") {
        return None;
    }
    let at = line.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let mut nums = [0u64; 3];
    let mut rest = &line[at..];
    for (i, n) in nums.iter_mut().enumerate() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 20 {
            return None;
        }
        *n = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        let sep = if i == 2 { b']' } else { b',' };
        if rest.get(digits) != Some(&sep) {
            return None;
        }
        rest = &rest[digits + 1..];
    }
    Some(Stamp {
        tag: nums[0],
        seq: nums[1],
        sent_us: nums[2],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_raw_and_inside_an_envelope() {
        let s = Stamp {
            tag: 77,
            seq: 3,
            sent_us: 1_700_000_000_123_456,
        };
        let raw = format!("data: {}", encode(s, 5));
        assert_eq!(find(raw.as_bytes()), Some(s));
        let wrapped = format!(
            "data:{{\"channel\":\"bench.sse\",\"data\":{},\"time\":1}}",
            encode(s, 0)
        );
        assert_eq!(find(wrapped.as_bytes()), Some(s));
    }

    #[test]
    fn other_lines_and_broken_stamps_are_none() {
        assert_eq!(find(b"id: 1-2.ab"), None);
        assert_eq!(find(b"data: {\"x\":1}"), None);
        assert_eq!(find(b"data: {\"ssepushBench\":[1,2]}"), None);
        assert_eq!(find(b"data: {\"ssepushBench\":[1,x,3]}"), None);
        assert_eq!(find(b"data: {\"ssepushBench\":[1,2,3"), None);
        assert_eq!(find(b": {\"ssepushBench\":[1,2,3]}"), None);
    }
}
