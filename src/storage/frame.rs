//! The record frame every stored value carries:
//! `[crc32 (u32 BE) | payload length (u32 BE) | payload]`.
//!
//! The checksum covers the record's key as well as its payload, so a record
//! found under the wrong key (a misdirected write) fails the check too.

const HEADER: usize = 8;

/// Frames `payload`, stored under `key`.
pub fn encode_frame(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&checksum(key, payload).to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Verifies a framed value stored under `key` and returns its payload, or
/// why it is corrupt.
pub fn decode_frame<'a>(key: &[u8], value: &'a [u8]) -> Result<&'a [u8], String> {
    if value.len() < HEADER {
        return Err(format!("record is {} bytes, shorter than its {HEADER}-byte header", value.len()));
    }
    let crc = u32::from_be_bytes(value[0..4].try_into().expect("4 bytes"));
    let len = u32::from_be_bytes(value[4..8].try_into().expect("4 bytes")) as usize;
    let payload = &value[HEADER..];
    if payload.len() != len {
        return Err(format!("header says {len} payload bytes, record has {}", payload.len()));
    }
    let actual = checksum(key, payload);
    if actual != crc {
        return Err(format!("checksum mismatch: stored {crc:#010x}, computed {actual:#010x}"));
    }
    Ok(payload)
}

fn checksum(key: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flipped_bit_is_caught() {
        let framed = encode_frame(b"k", b"hello");
        assert_eq!(decode_frame(b"k", &framed), Ok(&b"hello"[..]));
        for i in 0..framed.len() * 8 {
            let mut bad = framed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(decode_frame(b"k", &bad).is_err(), "bit {i} flip undetected");
        }
        assert!(decode_frame(b"other", &framed).is_err(), "record under the wrong key");
        assert!(decode_frame(b"k", &framed[..5]).is_err());
    }
}
