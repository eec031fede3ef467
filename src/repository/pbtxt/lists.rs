//! A workaround for one gap of `prost-reflect`'s text-format parser.
//!
//! NOTE: the text format lets a message field omit the ':' before a list of
//! messages (`input [ { ... } ]`, the form Triton's documentation and most
//! `config.pbtxt` files use), but prost-reflect 0.16 accepts the list only
//! after a ':' (`input: [ ... ]`). See the grammar's `MessageField` at
//! https://protobuf.dev/reference/protobuf/textformat-spec/#fields. Until
//! prost-reflect accepts it, a ':' is inserted between a field name and a
//! '[' that follows it directly; the parsing itself stays prost-reflect's.
//!
//! This is a scan of tokens, not a parser: it skips strings and comments,
//! and treats an identifier as a field name unless a ':' precedes it (then
//! it is an enum value; a value is never followed by '[').

/// The text with the missing colons inserted, and the byte offsets (in the
/// original text) where each was inserted, ascending.
pub(super) fn colons_before_lists(text: &str) -> (String, Vec<usize>) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut inserted = Vec::new();
    // The last significant token: whether it was an identifier that names a
    // field (not a value after ':'), and what preceded it.
    let mut previous: Option<u8> = None;
    let mut field_name = false;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' | b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                previous = Some(b'"');
                field_name = false;
            }
            b if b.is_ascii_whitespace() => i += 1,
            b if b.is_ascii_alphabetic() || b == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                // A dotted or numeric continuation is never a field name.
                field_name = previous != Some(b':') && previous != Some(b'.');
                previous = Some(b'a');
            }
            b'[' => {
                if field_name {
                    out.push_str(&text[copied..i]);
                    out.push(':');
                    copied = i;
                    inserted.push(i);
                }
                field_name = false;
                previous = Some(b);
                i += 1;
            }
            _ => {
                field_name = false;
                previous = Some(b);
                i += 1;
            }
        }
    }
    out.push_str(&text[copied..]);
    (out, inserted)
}

/// Maps an offset in the normalised text back to the original text.
pub(super) fn original_offset(offset: usize, inserted: &[usize]) -> usize {
    let mut original = offset;
    for (n, &at) in inserted.iter().enumerate() {
        // The n-th insertion sits at `at + n` in the normalised text.
        if at + n < offset {
            original -= 1;
        }
    }
    original
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_colon_goes_between_a_field_and_its_list_only() {
        let (text, at) = colons_before_lists(
            "input [ { dims: [ 1 ] } ]\nkind: KIND_GPU\ns: \"a [ b\" # c [ d\nv [ ]",
        );
        assert_eq!(
            text,
            "input :[ { dims: [ 1 ] } ]\nkind: KIND_GPU\ns: \"a [ b\" # c [ d\nv :[ ]"
        );
        assert_eq!(at, vec![6, 62]);
        assert_eq!(original_offset(8, &at), 7);
        assert_eq!(original_offset(3, &at), 3);
    }

    #[test]
    fn values_and_escapes_are_left_alone() {
        let text = "a: \"q\\\"[\" b: 'x' c: [ 1, 2 ] d: E\n";
        assert_eq!(colons_before_lists(text).0, text);
    }
}
