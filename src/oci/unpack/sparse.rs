//! Sparse files as GNU tar writes them, so they extract with their holes and their real
//! content instead of as a map plus packed data.
//!
//! Old GNU format (type `S`) is decoded by the tar crate, which reads holes as zeros; the
//! writer below turns runs of zeros back into holes. PAX format carries the map in
//! `GNU.sparse.*` records (versions 0.0 and 0.1) or at the start of the data (1.0, GNU
//! tar's default), and the real name and size in records too.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// What the `GNU.sparse.*` PAX records of an entry say.
#[derive(Debug, Default)]
pub(super) struct PaxSparse {
    pub(super) name: Option<Vec<u8>>,
    pub(super) real_size: Option<u64>,
    major: Option<u64>,
    minor: Option<u64>,
    /// Offsets and lengths, flattened, from `map` (0.1) or `offset`/`numbytes` (0.0).
    map: Vec<u64>,
}

impl PaxSparse {
    /// Takes one PAX record; false if it is not a sparse record.
    pub(super) fn record(&mut self, key: &[u8], value: &[u8]) -> Result<bool, String> {
        let Some(key) = key.strip_prefix(b"GNU.sparse.") else {
            return Ok(false);
        };
        let num = |v: &[u8]| -> Result<u64, String> {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| format!("bad sparse record value '{}'", String::from_utf8_lossy(v)))
        };
        match key {
            b"name" => self.name = Some(value.to_vec()),
            b"realsize" | b"size" => self.real_size = Some(num(value)?),
            b"major" => self.major = Some(num(value)?),
            b"minor" => self.minor = Some(num(value)?),
            b"offset" | b"numbytes" => self.map.push(num(value)?),
            b"map" => {
                for v in value.split(|&b| b == b',').filter(|v| !v.is_empty()) {
                    self.map.push(num(v)?);
                }
            }
            // numblocks: implied by the map's length.
            _ => {}
        }
        Ok(true)
    }

    pub(super) fn is_sparse(&self) -> bool {
        self.real_size.is_some() || self.major.is_some() || !self.map.is_empty()
    }

    /// Writes the file: each data chunk at its offset, holes left unwritten. Returns the
    /// number of data bytes written.
    pub(super) fn write(
        &self,
        data: &mut impl Read,
        f: &mut File,
        buf: &mut [u8],
    ) -> Result<u64, String> {
        let map = match (self.major, self.minor) {
            (Some(1), Some(0)) => read_map_from_data(data)?,
            (Some(1), minor) => {
                return Err(format!(
                    "unsupported GNU sparse format 1.{}",
                    minor.unwrap_or(0)
                ))
            }
            _ => self.map.clone(),
        };
        if map.len() % 2 != 0 {
            return Err("sparse map with an odd number of values".into());
        }
        let real_size = self.real_size.ok_or("sparse file without its real size")?;
        let mut written = 0;
        for chunk in map.chunks(2) {
            let (offset, len) = (chunk[0], chunk[1]);
            if !matches!(offset.checked_add(len), Some(end) if end <= real_size) {
                return Err(format!(
                    "sparse chunk {offset}+{len} beyond the file size {real_size}"
                ));
            }
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| format!("writing: {e}"))?;
            let n = copy_exact(&mut data.take(len), f, buf)?;
            if n != len {
                return Err("sparse data ends early".into());
            }
            written += n;
        }
        f.set_len(real_size).map_err(|e| format!("writing: {e}"))?;
        Ok(written)
    }
}

fn copy_exact(data: &mut impl Read, f: &mut File, buf: &mut [u8]) -> Result<u64, String> {
    let mut n = 0;
    loop {
        let got = match data.read(buf) {
            Ok(0) => return Ok(n),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading content: {e}")),
        };
        f.write_all(&buf[..got])
            .map_err(|e| format!("writing: {e}"))?;
        n += got as u64;
    }
}

/// Format 1.0: decimal numbers, one per line (count, then offset and length pairs),
/// padded with NULs to a 512-byte block boundary, before the data.
fn read_map_from_data(data: &mut impl Read) -> Result<Vec<u64>, String> {
    let mut numbers = Vec::new();
    let mut count: Option<u64> = None;
    let mut current: Option<u64> = None;
    let mut block = [0u8; 512];
    loop {
        data.read_exact(&mut block)
            .map_err(|e| format!("reading sparse map: {e}"))?;
        for &b in block.iter() {
            match b {
                b'0'..=b'9' => {
                    let v = current.unwrap_or(0);
                    current = Some(
                        v.checked_mul(10)
                            .and_then(|v| v.checked_add(u64::from(b - b'0')))
                            .ok_or("sparse map number overflows")?,
                    );
                }
                b'\n' => {
                    let v = current.take().ok_or("empty line in sparse map")?;
                    match count {
                        None => {
                            // Each pair takes at least 4 bytes of map: a bound on allocation.
                            if v > 1 << 24 {
                                return Err(format!("sparse map of {v} chunks"));
                            }
                            count = Some(v);
                        }
                        Some(_) => numbers.push(v),
                    }
                }
                0 if current.is_none() => {}
                _ => return Err("malformed sparse map".into()),
            }
        }
        if let Some(c) = count {
            if numbers.len() as u64 >= 2 * c && current.is_none() {
                numbers.truncate(2 * c as usize);
                return Ok(numbers);
            }
        }
    }
}

/// Writes `data` to `f`, seeking over all-zero blocks so they become holes, then sets the
/// length (a trailing hole has no data to write). For old GNU sparse entries, whose holes
/// the tar crate reads back as zeros.
pub(super) fn write_with_holes(
    data: &mut impl Read,
    f: &mut File,
    buf: &mut [u8],
) -> Result<u64, String> {
    let mut pos = 0u64;
    loop {
        let n = match data.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading content: {e}")),
        };
        let chunk = &buf[..n];
        if chunk.iter().all(|&b| b == 0) {
            f.seek(SeekFrom::Current(n as i64))
                .map_err(|e| format!("writing: {e}"))?;
        } else {
            f.write_all(chunk).map_err(|e| format!("writing: {e}"))?;
        }
        pos += n as u64;
    }
    f.set_len(pos).map_err(|e| format!("writing: {e}"))?;
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_from_data() {
        let mut data = b"2\n0\n5\n1000\n3\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"hellobye");
        let mut r = &data[..];
        assert_eq!(read_map_from_data(&mut r).unwrap(), vec![0, 5, 1000, 3]);
        assert_eq!(r, b"hellobye");
        let mut bad = b"1\n0\nx\n".to_vec();
        bad.resize(512, 0);
        assert!(read_map_from_data(&mut &bad[..]).is_err());
        assert!(read_map_from_data(&mut &b"1\n0\n"[..]).is_err());
    }

    #[test]
    fn pax_records() {
        let mut s = PaxSparse::default();
        assert!(!s.record(b"path", b"x").unwrap());
        assert!(s.record(b"GNU.sparse.map", b"0,5,100,3").unwrap());
        assert!(s.record(b"GNU.sparse.size", b"103").unwrap());
        assert!(s.is_sparse());
        assert_eq!(s.map, vec![0, 5, 100, 3]);
        assert!(s.record(b"GNU.sparse.size", b"lots").is_err());
    }
}
