//! The request body extractor every REST handler uses: oversize, slow, too
//! deeply nested and unreadable bodies are answered in our error format
//! (413, 408, 400, 400) instead of axum's plain-text rejections.

use super::codec::binary::header_length;
use super::config::BodyLimits;
use super::error::ApiError;
use crate::error::Error;
use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use http_body_util::BodyExt as _;

/// The raw request body, with oversize, slow, too deeply nested and
/// unreadable bodies answered in our error format (413, 408, 400, 400).
#[derive(Debug)]
pub(crate) struct Body(pub Bytes);

/// What the guard puts in each request for the body extractor: the
/// configured limits and the body size limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadLimits {
    pub(crate) body: BodyLimits,
    pub(crate) max_bytes: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            body: BodyLimits::default(),
            max_bytes: crate::config::defaults::MAX_BODY_BYTES,
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let limits = req
            .extensions()
            .get::<ReadLimits>()
            .copied()
            .unwrap_or_default();
        Self::read(req, limits).await
    }
}

impl Body {
    /// Reads `req`'s body within `limits`: what the extractor does with the
    /// limits the guard put in the request, for callers handed them directly.
    pub(crate) async fn read(req: Request, limits: ReadLimits) -> Result<Self, ApiError> {
        let ReadLimits {
            body: limits,
            max_bytes,
        } = limits;
        // The JSON part's declared length, read before the request is
        // consumed (no copy of the headers); checked against the body below.
        let declared = header_length(req.headers(), usize::MAX);
        // The size limit is enforced here, not by axum's `DefaultBodyLimit`,
        // so that the inference routes matched outside the router have it.
        let body = http_body_util::Limited::new(req.into_body(), max_bytes);
        let read = tokio::time::timeout(limits.read_timeout, body.collect());
        let bytes = match read.await {
            Err(_) => {
                return Err(ApiError(Error::ClientTimeout(format!(
                    "request body did not arrive within {} s (--body-read-timeout-secs)",
                    limits.read_timeout.as_secs_f64()
                ))));
            }
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError(Error::TooLarge(
                    "request body is larger than the server's limit (--max-body-bytes)".into(),
                )));
            }
            Ok(Err(e)) => {
                return Err(ApiError(Error::invalid(format!(
                    "cannot read the request body: {e}"
                ))));
            }
        };
        // JSON is the whole body, or with the binary extension its first
        // `Inference-Header-Content-Length` bytes (a bad value is the
        // decoder's to report, with the body it describes).
        let json = match declared {
            Ok(None) => &bytes[..],
            // Longer than the body: `get` gives nothing to check, and the
            // decoder reports it.
            Ok(Some(n)) => bytes.get(..n).unwrap_or_default(),
            Err(_) => &[],
        };
        check_json_depth(json, limits.max_json_depth)?;
        Ok(Body(bytes))
    }
}

/// A byte set as a lookup table: callgrind counts fewer instructions per
/// byte than for a `matches!` of five bytes.
const fn table(bytes: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        // `as usize` of a u8 is below 256: `get_mut` is not const.
        #[allow(clippy::indexing_slicing)]
        {
            t[bytes[i] as usize] = true;
        }
        i += 1;
    }
    t
}

/// Bytes that matter outside a string, and inside one.
static STRUCTURE: [bool; 256] = table(b"\"[]{}");
static IN_STRING: [bool; 256] = table(b"\"\\");

fn is_structure(b: &u8) -> bool {
    STRUCTURE.get(usize::from(*b)).copied().unwrap_or(false)
}

/// Where the next byte that can change the depth outside a string is.
///
/// Eight bytes at a time: a word with none of them is skipped with a few
/// arithmetic operations instead of eight table look-ups. `(b | 0x20) &
/// 0xF9` maps all four brackets to 0x79 (and only them, `Y`, `_`, `y` and
/// DEL, which the exact search of that word then passes over), a quote is
/// 0x22; a word has a byte equal to one of them exactly when `word ^ that`
/// has a zero byte.
fn find_structure(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const CASE: u64 = 0x20 * ONES;
    const MASK: u64 = 0xF9 * ONES;
    const BRACKET: u64 = 0x79 * ONES;
    const QUOTE: u64 = 0x22 * ONES;
    let has_zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0usize;
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk).map(u64::from_le_bytes) else {
            break;
        };
        let brackets = ((word | CASE) & MASK) ^ BRACKET;
        let quotes = word ^ QUOTE;
        if has_zero_byte(brackets) || has_zero_byte(quotes) {
            if let Some(i) = chunk.iter().position(is_structure) {
                return Some(offset + i);
            }
        }
        offset += 8;
    }
    let tail = bytes.get(offset..).unwrap_or_default();
    tail.iter().position(is_structure).map(|i| offset + i)
}

/// Refuses JSON nested deeper than `max` arrays/objects, in one pass and
/// before any parsing, so no parser recursion depends on the client.
/// Bytes that cannot change the depth (digits, commas, string contents) are
/// skipped a word at a time ([`find_structure`]) or by a table search, so
/// long numeric arrays cost little.
pub(crate) fn check_json_depth(json: &[u8], max: usize) -> Result<(), Error> {
    // No deeper than the number of `[` and `{` (strings' included): most
    // bodies, flat or nested tensors alike, hold fewer than `max`. Counted
    // in byte lanes, 255 bytes at a time so a lane cannot overflow: about
    // 0.7 instructions a byte (callgrind), against 5 for a count in `usize`
    // and about 15 for the scan below through string-heavy JSON.
    let opens: usize = json
        .chunks(255)
        .map(|chunk| {
            let n = chunk
                .iter()
                .fold(0u8, |n, &b| n + u8::from(b == b'[' || b == b'{'));
            usize::from(n)
        })
        .sum();
    if opens <= max {
        return Ok(());
    }
    let in_string = |b: &u8| IN_STRING.get(usize::from(*b)).copied().unwrap_or(false);
    let mut depth = 0usize;
    let mut rest = json;
    loop {
        let Some(at) = find_structure(rest) else {
            return Ok(());
        };
        match rest.get(at) {
            Some(b'"') => {
                // Skip the string: to its closing quote, stepping over escapes.
                let mut i = at + 1;
                loop {
                    let Some(off) = rest.get(i..).and_then(|r| r.iter().position(in_string)) else {
                        return Ok(());
                    };
                    i += off;
                    if rest.get(i) == Some(&b'\\') {
                        i += 2;
                    } else {
                        break;
                    }
                }
                rest = rest.get(i + 1..).unwrap_or_default();
                continue;
            }
            Some(b'[' | b'{') => {
                depth += 1;
                if depth > max {
                    return Err(Error::invalid(format!(
                        "request JSON nests deeper than {max} levels (--max-json-depth)"
                    )));
                }
            }
            _ => depth = depth.saturating_sub(1),
        }
        rest = rest.get(at + 1..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_only_structure() {
        assert!(check_json_depth(br#"{"a":[[1,2],[3]]}"#, 3).is_ok());
        assert!(check_json_depth(br#"{"a":[[1,2],[3]]}"#, 2).is_err());
        // Brackets inside strings, with escaped quotes, do not count.
        assert!(check_json_depth(br#"{"s":"[[[[\"[[[["}"#, 1).is_ok());
        let deep = "[".repeat(10_000);
        let err = check_json_depth(deep.as_bytes(), 64).unwrap_err();
        assert!(err.to_string().contains("deeper than 64"), "{err}");
    }

    /// The byte-by-byte check this one replaced, as the reference.
    fn depth_reference(json: &[u8], max: usize) -> bool {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for &b in json {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return false;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        true
    }

    proptest::proptest! {
        #[test]
        fn depth_check_agrees_with_the_byte_loop(
            text in proptest::collection::vec(proptest::sample::select(b"[]{}\"\\,1a Y_y\x7f".to_vec()), 0..96),
            max in 0usize..6,
        ) {
            proptest::prop_assert_eq!(check_json_depth(&text, max).is_ok(), depth_reference(&text, max));
        }

        /// Any bytes, mostly ones that are skipped a word at a time, with
        /// structure at every offset within a word.
        #[test]
        fn word_skipping_agrees_with_the_byte_loop(
            text in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => proptest::sample::select(b"0123456789,.e- ".to_vec()),
                    1 => proptest::num::u8::ANY,
                ],
                0..200,
            ),
            max in 0usize..4,
        ) {
            proptest::prop_assert_eq!(check_json_depth(&text, max).is_ok(), depth_reference(&text, max));
        }
    }
}
