//! Content digests (`sha256:<hex>`) and a reader that verifies one while the bytes stream by.

use std::fmt;
use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use crate::{err, Result};

/// A validated `sha256:<64 lowercase hex>` digest. Other algorithms are refused: every
/// registry serves sha256 and the store is keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest> {
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| err!("invalid digest `{s}`: expected sha256:<hex>"))?;
        if algo != "sha256" {
            return Err(err!(
                "unsupported digest algorithm `{algo}` in `{s}`: only sha256 is supported"
            ));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err!(
                "invalid digest `{s}`: sha256 needs 64 lowercase hex digits"
            ));
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    fn from_hasher(h: Sha256) -> Digest {
        Digest {
            hex: hex_lower(&h.finalize()),
        }
    }

    /// The 64 hex digits, as used for file names in the store.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, for progress lines.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Passes bytes through while hashing and counting them, and turns the end of the stream
/// into an error unless exactly `expected_size` bytes with digest `expected` went by.
///
/// The check happens on the read that returns EOF, so a consumer that reads to the end
/// (a tar extractor draining its input, `io::copy`) sees a mismatch as an I/O error before it
/// can declare success. Reading more than `expected_size` bytes fails immediately: a
/// registry cannot make us store or unpack more than the manifest promised.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    seen: u64,
    expected: Digest,
    expected_size: u64,
    verified: bool,
    /// The first size or digest failure: every later read returns it again. The hash is
    /// finalised once, at the first EOF; a consumer that reads past a failure (to drain or
    /// to give a better message) must not get a verdict on an emptied hasher.
    failure: Option<(io::ErrorKind, String)>,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Digest, expected_size: u64) -> Self {
        VerifyingReader {
            inner,
            hasher: Sha256::new(),
            seen: 0,
            expected,
            expected_size,
            verified: false,
            failure: None,
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.seen
    }

    /// Whether EOF was reached with the right size and digest.
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// The size or digest failure this reader reported, if any: a consumer may wrap the
    /// I/O error in its own words, and callers want this exact one.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_ref().map(|(_, m)| m.as_str())
    }

    fn fail(&mut self, kind: io::ErrorKind, msg: String) -> io::Error {
        self.failure = Some((kind, msg.clone()));
        io::Error::new(kind, msg)
    }

    /// Read to the end (discarding) so the digest is checked even when the consumer stopped
    /// early, e.g. at a tar end-of-archive marker followed by padding.
    pub fn finish(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 64 * 1024];
        while !self.verified {
            if self.read(&mut buf)? == 0 && !self.verified {
                return Err(io::Error::other("blob ended without being verified"));
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.verified {
            return Ok(0);
        }
        if let Some((kind, msg)) = &self.failure {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            if self.seen != self.expected_size {
                let msg = format!(
                    "blob {} is truncated: got {} of {} bytes",
                    self.expected, self.seen, self.expected_size
                );
                return Err(self.fail(io::ErrorKind::UnexpectedEof, msg));
            }
            let got = Digest::from_hasher(std::mem::take(&mut self.hasher));
            if got != self.expected {
                let msg = format!(
                    "digest mismatch: expected {} but the data hashes to {got}",
                    self.expected
                );
                return Err(self.fail(io::ErrorKind::InvalidData, msg));
            }
            self.verified = true;
            return Ok(0);
        }
        self.seen += n as u64;
        if self.seen > self.expected_size {
            let msg = format!(
                "blob {} is larger than the {} bytes its manifest declares",
                self.expected, self.expected_size
            );
            return Err(self.fail(io::ErrorKind::InvalidData, msg));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints_sha256() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.short(), "e3b0c44298fc");
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "sha256:abc",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn verifying_reader_accepts_exact_content() {
        let data = b"hello world".to_vec();
        let mut r = VerifyingReader::new(&data[..], Digest::of(&data), data.len() as u64);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert!(r.verified());
    }

    #[test]
    fn verifying_reader_names_both_digests_on_mismatch() {
        let expected = Digest::of(b"hello world");
        let mut r = VerifyingReader::new(&b"hello worle"[..], expected.clone(), 11);
        let e = r.read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains(&expected.to_string()), "{e}");
        assert!(e.contains(&Digest::of(b"hello worle").to_string()), "{e}");
    }

    #[test]
    fn a_failure_is_sticky_and_its_digest_is_the_datas() {
        let expected = Digest::of(b"hello world");
        let mut r = VerifyingReader::new(&b"hello worle"[..], expected, 11);
        let first = r.read_to_end(&mut Vec::new()).unwrap_err().to_string();
        // Reading on (a consumer draining after an error) repeats the verdict.
        let again = r.read(&mut [0u8; 16]).unwrap_err().to_string();
        assert_eq!(first, again);
        assert!(
            again.contains(&Digest::of(b"hello worle").to_string()),
            "{again}"
        );
        assert_eq!(r.failure(), Some(first.as_str()));
    }

    #[test]
    fn verifying_reader_enforces_size_both_ways() {
        let d = Digest::of(b"abc");
        let e = VerifyingReader::new(&b"ab"[..], d.clone(), 3)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = VerifyingReader::new(&b"abcd"[..], d, 3)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("larger"), "{e}");
    }
}
