//! The snapshot file format: how a cut of the key-value map is laid out on
//! disk and on the wire, and how every byte of it is checked when read.
//!
//! ```text
//! header  magic "RAFTKVSN" | version u32 | len u32 | SnapshotHeader[len] | crc32(SnapshotHeader) u32
//! chunk*  len u32 (> 0) | records u32 | crc32(payload) u32 | payload[len]
//!         (payload: length-delimited mvccpb.KeyValue records, in key order)
//! end     len u32 = 0
//! footer  records u64 | crc32(every byte before this field) u32 | magic "RAFTKVND"
//! ```
//!
//! Integers are little-endian. A reader accepts a file only if every chunk's
//! checksum, the record count and the whole-file checksum agree, and nothing
//! follows the footer; a failure names the file and the byte offset.
//!
//! A backup (`Maintenance/Snapshot`, what `etcdctl snapshot save` writes)
//! is the same file followed by etcd's trailer: zero bytes up to a multiple
//! of 512, then the SHA-256 of everything before it. etcdctl refuses a
//! stream without it ("sha256 checksum not found"); [`read_backup`] checks
//! and strips it.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use prost::Message as _;

use super::{Result, SnapshotError};
use crate::proto::SnapshotHeader;
use crate::proto::mvccpb::KeyValue;

const MAGIC: &[u8; 8] = b"RAFTKVSN";
const FOOTER_MAGIC: &[u8; 8] = b"RAFTKVND";
pub const VERSION: u32 = 1;
/// Records are grouped into chunks of about this many bytes, each checked
/// on its own, so corruption is found close to where it is.
const CHUNK_BYTES: usize = 64 << 10;
/// Larger lengths in a header or chunk are corruption, not a reason to
/// allocate.
const MAX_SECTION_BYTES: u32 = 64 << 20;

/// etcd's trailer for a backup of `size` bytes: the zero padding to a
/// multiple of 512 (etcdctl expects `size % 512 == 32` with the digest).
pub fn backup_padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// Reads a backup: a snapshot file, with or without etcd's trailer. A
/// trailer whose digest does not match is not stripped, so the reader
/// reports the bytes after the footer.
pub fn read_backup(path: &Path) -> Result<Loaded> {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).map_err(|source| SnapshotError::Io { path: path.to_path_buf(), error: source })?;
    if bytes.len() % 512 == 32 && bytes.len() >= 512 + 32 {
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if sha2::Sha256::digest(body).as_slice() == digest {
            // The footer ends in a non-zero magic byte: the zeros after it
            // are all padding.
            let end = body.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            return read_from(&body[..end], path);
        }
    }
    read_from(&bytes[..], path)
}

/// A snapshot read back: its header and its records in key order.
#[derive(Debug)]
pub struct Loaded {
    pub header: SnapshotHeader,
    pub records: Vec<KeyValue>,
}

/// Counts and checksums every byte written through it.
struct Counting<W> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a snapshot to `out` and returns the number of bytes written. The
/// caller makes it durable (see [`super::SnapshotDir::save`]).
pub fn write<'a, W: Write>(
    out: W,
    header: &SnapshotHeader,
    records: impl IntoIterator<Item = &'a KeyValue>,
) -> io::Result<u64> {
    let mut out = Counting { inner: BufWriter::with_capacity(1 << 20, out), crc: crc32fast::Hasher::new(), bytes: 0 };
    let head = header.encode_to_vec();
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    out.write_all(&(head.len() as u32).to_le_bytes())?;
    out.write_all(&head)?;
    out.write_all(&crc32fast::hash(&head).to_le_bytes())?;

    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 4096);
    let (mut in_chunk, mut total) = (0u32, 0u64);
    for kv in records {
        kv.encode_length_delimited(&mut chunk).expect("a Vec grows as needed");
        in_chunk += 1;
        total += 1;
        if chunk.len() >= CHUNK_BYTES {
            write_chunk(&mut out, &chunk, in_chunk)?;
            chunk.clear();
            in_chunk = 0;
        }
    }
    if !chunk.is_empty() {
        write_chunk(&mut out, &chunk, in_chunk)?;
    }
    out.write_all(&0u32.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    let file_crc = out.crc.clone().finalize();
    out.write_all(&file_crc.to_le_bytes())?;
    out.write_all(FOOTER_MAGIC)?;
    out.flush()?;
    Ok(out.bytes)
}

fn write_chunk(out: &mut impl Write, payload: &[u8], records: u32) -> io::Result<()> {
    out.write_all(&(payload.len() as u32).to_le_bytes())?;
    out.write_all(&records.to_le_bytes())?;
    out.write_all(&crc32fast::hash(payload).to_le_bytes())?;
    out.write_all(payload)
}

/// Reads and verifies the snapshot file at `path`.
pub fn read(path: &Path) -> Result<Loaded> {
    let file = std::fs::File::open(path).map_err(|source| SnapshotError::Io { path: path.into(), error: source })?;
    read_from(BufReader::with_capacity(1 << 20, file), path)
}

/// Reads and verifies a snapshot from `input`; `path` names it in errors.
pub fn read_from(input: impl Read, path: &Path) -> Result<Loaded> {
    let mut r = Reader { inner: input, crc: crc32fast::Hasher::new(), offset: 0, path };
    let magic: [u8; 8] = r.array()?;
    if &magic != MAGIC {
        return Err(r.corrupt(0, "not a raftkv snapshot (bad magic)"));
    }
    let version = u32::from_le_bytes(r.array()?);
    if version != VERSION {
        return Err(r.corrupt(8, format!("format version {version} is not supported (this build reads {VERSION})")));
    }
    let head_at = r.offset;
    let head_len = r.length()?;
    let head = r.bytes(head_len)?;
    let head_crc = u32::from_le_bytes(r.array()?);
    if crc32fast::hash(&head) != head_crc {
        return Err(r.corrupt(head_at, "header checksum mismatch"));
    }
    let header =
        SnapshotHeader::decode(head.as_slice()).map_err(|e| r.corrupt(head_at, format!("undecodable header: {e}")))?;
    if header.meta.is_none() {
        return Err(r.corrupt(head_at, "header names no snapshot point"));
    }

    let mut records = Vec::new();
    loop {
        let chunk_at = r.offset;
        let len = r.length()?;
        if len == 0 {
            break;
        }
        let count = u32::from_le_bytes(r.array()?);
        let crc = u32::from_le_bytes(r.array()?);
        let payload = r.bytes(len)?;
        if crc32fast::hash(&payload) != crc {
            return Err(r.corrupt(chunk_at, "chunk checksum mismatch"));
        }
        let mut rest = bytes::Bytes::from(payload);
        for _ in 0..count {
            let kv = KeyValue::decode_length_delimited(&mut rest)
                .map_err(|e| r.corrupt(chunk_at, format!("undecodable record: {e}")))?;
            records.push(kv);
        }
        if !rest.is_empty() {
            return Err(r.corrupt(chunk_at, format!("chunk holds more than its {count} records")));
        }
    }
    let footer_at = r.offset;
    let total = u64::from_le_bytes(r.array()?);
    let expected_crc = r.crc.clone().finalize();
    let file_crc = u32::from_le_bytes(r.array()?);
    let end: [u8; 8] = r.array()?;
    if &end != FOOTER_MAGIC {
        return Err(r.corrupt(footer_at, "bad footer magic"));
    }
    if file_crc != expected_crc {
        return Err(r.corrupt(footer_at, "whole-file checksum mismatch"));
    }
    if total != records.len() as u64 {
        return Err(r.corrupt(footer_at, format!("footer counts {total} records, chunks hold {}", records.len())));
    }
    let mut extra = [0u8; 1];
    if r.inner.read(&mut extra).map_err(|e| r.io(e))? != 0 {
        return Err(r.corrupt(r.offset, "bytes after the footer"));
    }
    Ok(Loaded { header, records })
}

struct Reader<'p, R> {
    inner: R,
    crc: crc32fast::Hasher,
    offset: u64,
    path: &'p Path,
}

impl<R: Read> Reader<'_, R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => self.corrupt(self.offset, "file ends early (truncated)"),
            _ => self.io(e),
        })?;
        self.crc.update(buf);
        self.offset += buf.len() as u64;
        Ok(())
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }
    fn length(&mut self) -> Result<u32> {
        let at = self.offset;
        let len = u32::from_le_bytes(self.array()?);
        if len > MAX_SECTION_BYTES {
            return Err(self.corrupt(at, format!("section length {len} is implausible")));
        }
        Ok(len)
    }
    fn bytes(&mut self, len: u32) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        self.fill(&mut buf)?;
        Ok(buf)
    }
    fn corrupt(&self, offset: u64, reason: impl Into<String>) -> SnapshotError {
        SnapshotError::Corrupt { path: self.path.into(), offset, reason: reason.into() }
    }
    fn io(&self, source: io::Error) -> SnapshotError {
        SnapshotError::Io { path: self.path.into(), error: source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ConfState, SnapshotMeta};
    use bytes::Bytes;

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            meta: Some(SnapshotMeta { index: 42, term: 3, conf: Some(ConfState::with_voters([1, 2, 3])) }),
            revision: 17,
            compact_revision: 5,
            membership: None,
            alarms: Vec::new(),
            leases: Vec::new(),
            auth: None,
        }
    }

    fn records(n: usize) -> Vec<KeyValue> {
        (0..n)
            .map(|i| KeyValue {
                key: Bytes::from(format!("key-{i:08}")),
                create_revision: i as i64 + 1,
                mod_revision: i as i64 + 2,
                version: 1,
                value: Bytes::from(vec![b'v'; 300]),
                lease: 0,
            })
            .collect()
    }

    fn encode(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, &header(), &records(n)).unwrap();
        out
    }

    #[test]
    fn round_trips_header_and_records_across_chunks() {
        let bytes = encode(1000); // ~330 KB: several chunks
        let loaded = read_from(bytes.as_slice(), Path::new("s")).unwrap();
        assert_eq!(loaded.header, header());
        assert_eq!(loaded.records, records(1000));
        let empty = read_from(encode(0).as_slice(), Path::new("s")).unwrap();
        assert!(empty.records.is_empty());
    }

    #[test]
    fn any_flipped_byte_is_named_with_its_offset() {
        let bytes = encode(500);
        // Every byte of a small file; a stride over a larger one.
        for at in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            match read_from(bad.as_slice(), Path::new("snap-x")) {
                Err(e @ SnapshotError::Corrupt { .. }) => {
                    assert!(e.to_string().contains("snap-x at byte"), "{e}");
                }
                other => panic!("flipped byte {at} not detected: {other:?}"),
            }
        }
    }

    #[test]
    fn a_bad_record_is_reported_at_its_chunk() {
        let mut bytes = encode(1000);
        // The header is 8 + 4 + 4 + len + 4 bytes; the first chunk starts there.
        let head_len = header().encode_to_vec().len() as u64;
        let chunk_at = 20 + head_len;
        bytes[chunk_at as usize + 12 + 5] ^= 1; // a byte of the first record
        match read_from(bytes.as_slice(), Path::new("s")) {
            Err(SnapshotError::Corrupt { offset, reason, .. }) => {
                assert_eq!(offset, chunk_at);
                assert!(reason.contains("chunk checksum"), "{reason}");
            }
            other => panic!("not detected: {other:?}"),
        }
    }

    #[test]
    fn truncation_and_trailing_bytes_are_corruption() {
        let bytes = encode(100);
        for len in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
            let err = read_from(&bytes[..len], Path::new("s")).unwrap_err();
            assert!(matches!(err, SnapshotError::Corrupt { .. }), "{len}: {err}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let err = read_from(longer.as_slice(), Path::new("s")).unwrap_err();
        assert!(err.to_string().contains("after the footer"), "{err}");
    }
}
