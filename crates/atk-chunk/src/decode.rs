//! Bytes to text: BOMs, UTF-8, and legacy encodings guessed with chardetng.

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::Encoding;

/// How many leading bytes are checked for NUL when telling text from binary.
const SNIFF_LEN: usize = 1024;

/// Text decoded from bytes, with the encoding used when it was not plain UTF-8.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decoded {
    pub text: String,
    /// `Some(name)` when the bytes were not UTF-8 (e.g. `windows-1252`, `UTF-16LE`).
    pub encoding: Option<&'static str>,
}

/// Why bytes were not taken as text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NotText {
    /// NUL bytes near the start and no UTF-16 byte-order mark.
    Binary,
}

/// True when the first KB holds a NUL byte.
pub(crate) fn looks_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(SNIFF_LEN)].contains(&0)
}

/// Decodes `bytes`: a BOM wins, then valid UTF-8, then chardetng's guess (Latin-1 and
/// Windows-1252 files become windows-1252, the WHATWG superset). Bytes with NUL in the
/// first KB and no BOM are binary.
pub(crate) fn decode(bytes: &[u8]) -> Result<Decoded, NotText> {
    if let Some((enc, bom_len)) = Encoding::for_bom(bytes) {
        let (text, _) = enc.decode_without_bom_handling(&bytes[bom_len..]);
        let encoding = (enc != encoding_rs::UTF_8).then(|| enc.name());
        return Ok(Decoded {
            text: text.into_owned(),
            encoding,
        });
    }
    if looks_binary(bytes) {
        return Err(NotText::Binary);
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Ok(Decoded {
            text: s.to_string(),
            encoding: None,
        });
    }
    let mut detector = EncodingDetector::new(Iso2022JpDetection::Deny);
    detector.feed(bytes, true);
    let enc = detector.guess(None, Utf8Detection::Deny);
    let (text, _, _) = enc.decode(bytes);
    Ok(Decoded {
        text: text.into_owned(),
        encoding: Some(enc.name()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_utf16_and_binary() {
        let latin1 = b"Caf\xe9 cr\xe8me br\xfbl\xe9e, d\xe9j\xe0 vu \xe0 la fran\xe7aise.";
        let d = decode(latin1).unwrap();
        assert_eq!(d.text, "Café crème brûlée, déjà vu à la française.");
        assert_eq!(d.encoding, Some("windows-1252"));

        let mut utf16 = vec![0xFF, 0xFE];
        for u in "héllo".encode_utf16() {
            utf16.extend(u.to_le_bytes());
        }
        assert_eq!(decode(&utf16).unwrap().text, "héllo");
        assert_eq!(decode(b"\x7fELF\0\0\x01").unwrap_err(), NotText::Binary);
        assert_eq!(decode("ok ✓".as_bytes()).unwrap().encoding, None);
    }
}
