//! Layer compression: recognising it (by media type or magic bytes) and the streaming
//! decoders (flate2 for gzip, ruzstd for zstd, both pure Rust).

use std::io::{self, BufRead, BufReader, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a layer media type declares (OCI and Docker schema 2), or `None`
    /// for a media type that is not a layer tar.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        // Parameters ("; charset=…") never change the compression.
        let mt = mt.split(';').next().unwrap_or("").trim();
        let (kind, suffix) = match mt.split_once('+') {
            Some((k, s)) => (k, Some(s)),
            None => (mt, None),
        };
        match kind {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => match suffix {
                None => Some(Compression::None),
                Some("gzip") => Some(Compression::Gzip),
                Some("zstd") => Some(Compression::Zstd),
                Some(_) => None,
            },
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
                if suffix.is_none() =>
            {
                Some(Compression::Gzip)
            }
            "application/vnd.docker.image.rootfs.diff.tar.zstd" if suffix.is_none() => {
                Some(Compression::Zstd)
            }
            "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar"
            | "application/x-tar"
                if suffix.is_none() =>
            {
                Some(Compression::None)
            }
            _ => None,
        }
    }

    /// The compression the first bytes of a blob show (anything unrecognised is taken to
    /// be a plain tar).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A reader of the decompressed stream. Gzip accepts concatenated members (pigz, some
/// registries) and checks each member's CRC; zstd accepts several frames, skips skippable
/// frames and checks content checksums.
pub fn decompress<'a>(r: impl Read + 'a, c: Compression) -> crate::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(ZstdReader {
            src: BufReader::with_capacity(128 * 1024, r),
            dec: FrameDecoder::new(),
            in_frame: false,
        }),
    })
}

/// Streams every frame of a zstd blob; ruzstd's own `StreamingDecoder` stops after one.
struct ZstdReader<R: BufRead> {
    src: R,
    dec: FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.in_frame {
                if self.dec.can_collect() > 0 {
                    return self.dec.read(buf);
                }
                if self.dec.is_finished() {
                    if let (Some(want), Some(got)) = (
                        self.dec.get_checksum_from_data(),
                        self.dec.get_calculated_checksum(),
                    ) {
                        if want != got {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "zstd frame checksum mismatch",
                            ));
                        }
                    }
                    self.in_frame = false;
                    continue;
                }
                let want = buf.len().max(64 * 1024);
                self.dec
                    .decode_blocks(&mut self.src, BlockDecodingStrategy::UptoBytes(want))
                    .map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
                    })?;
            } else {
                if self.src.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.dec.init(&mut self.src) {
                    Ok(()) => self.in_frame = true,
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        let skipped =
                            io::copy(&mut (&mut self.src).take(length.into()), &mut io::sink())?;
                        if skipped != u64::from(length) {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("zstd: {e}"),
                        ))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        use Compression::*;
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Some(None)),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Some(Gzip),
            ),
            ("application/vnd.docker.image.rootfs.diff.tar", Some(None)),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip; x=y",
                Some(Gzip),
            ),
            ("application/vnd.oci.image.layer.v1.tar+bzip2", Option::None),
            ("application/vnd.oci.image.config.v1+json", Option::None),
            (
                "application/vnd.docker.container.image.v1+json",
                Option::None,
            ),
        ];
        for (mt, want) in cases {
            assert_eq!(Compression::from_media_type(mt), want, "{mt}");
        }
    }

    #[test]
    fn sniffing() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/passwd\0"), Compression::None);
        assert_eq!(Compression::sniff(&[]), Compression::None);
    }

    fn read_all(r: &[u8], c: Compression) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decompress(r, c).unwrap().read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn zstd_several_frames_and_skippable_frame() {
        use ruzstd::encoding::{compress_to_vec, CompressionLevel};
        let mut blob = compress_to_vec(&b"first frame "[..], CompressionLevel::Fastest);
        // A skippable frame: magic 0x184D2A50, little-endian length, payload.
        blob.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9]);
        blob.extend(compress_to_vec(
            &b"second frame"[..],
            CompressionLevel::Fastest,
        ));
        assert_eq!(
            read_all(&blob, Compression::Zstd).unwrap(),
            b"first frame second frame"
        );
    }

    #[test]
    fn zstd_corruption_is_an_error() {
        use ruzstd::encoding::{compress_to_vec, CompressionLevel};
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let blob = compress_to_vec(&data[..], CompressionLevel::Fastest);
        assert!(read_all(&blob[..blob.len() / 2], Compression::Zstd).is_err());
    }

    #[test]
    fn gzip_concatenated_members() {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut blob = Vec::new();
        for part in [&b"one "[..], b"two"] {
            let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(part).unwrap();
            blob.extend(enc.finish().unwrap());
        }
        assert_eq!(read_all(&blob, Compression::Gzip).unwrap(), b"one two");
        assert!(read_all(&blob[..blob.len() - 3], Compression::Gzip).is_err());
    }
}
