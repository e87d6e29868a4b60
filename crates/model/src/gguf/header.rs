//! A walk over a GGUF file's header, before candle's reader parses it, that checks every
//! size the header states against the file's length and refuses what would make the
//! reader panic.
//!
//! candle 0.11's reader bounds string and array lengths by the bytes left in the file,
//! but divides by `general.alignment` unchecked (a file saying 0 panics it), and a later
//! candle could drop a bound; this walk does not depend on it. It reads nothing into
//! memory but keys (up to 64 KiB each) and allocates nothing per stated count. The tensor
//! table's offsets and sizes are checked after parsing, in [`super::GgufFile::open`].

use std::io::{BufRead, Seek};

/// Nesting depth of arrays of arrays this walk follows (candle's limit too).
const MAX_DEPTH: usize = 64;

/// Keys are short names; a longer one is a damaged file.
const MAX_KEY_BYTES: u64 = 1 << 16;

/// The header's byte reader: little-endian integers, lengths checked against the file.
struct Walker<'a, R> {
    reader: &'a mut R,
    file_len: u64,
    pos: u64,
    /// Length prefixes are u32 in GGUF v1, u64 after.
    wide: bool,
}

impl<R: BufRead + Seek> Walker<'_, R> {
    fn remaining(&self) -> u64 {
        self.file_len.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.reader.read_exact(&mut b).map_err(|_| {
            format!(
                "the file ends inside the header (reading {what} at byte {})",
                self.pos
            )
        })?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    fn length(&mut self, what: &str) -> Result<u64, String> {
        if self.wide {
            self.u64(what)
        } else {
            self.u32(what).map(u64::from)
        }
    }

    /// Skips `n` bytes that must lie within the file.
    fn skip(&mut self, n: u64, what: &str) -> Result<(), String> {
        if n > self.remaining() {
            return Err(format!(
                "{what} at byte {} states {n} bytes, but only {} remain in the file",
                self.pos,
                self.remaining()
            ));
        }
        let step = i64::try_from(n).map_err(|_| format!("{what}: {n} bytes"))?;
        self.reader
            .seek_relative(step)
            .map_err(|e| format!("{what}: {e}"))?;
        self.pos += n;
        Ok(())
    }

    /// A string's length, checked to fit in the file.
    fn string_len(&mut self, what: &str) -> Result<u64, String> {
        let len = self.length(what)?;
        if len > self.remaining() {
            return Err(format!(
                "{what} at byte {} states a length of {len} bytes, but only {} remain in the file",
                self.pos,
                self.remaining()
            ));
        }
        Ok(len)
    }

    fn key(&mut self) -> Result<String, String> {
        let len = self.string_len("a metadata key")?;
        if len > MAX_KEY_BYTES {
            return Err(format!("a metadata key at byte {} is {len} bytes long", self.pos));
        }
        let mut key = vec![0u8; len as usize];
        self.reader
            .read_exact(&mut key)
            .map_err(|_| "the file ends inside a metadata key".to_string())?;
        self.pos += len;
        Ok(String::from_utf8_lossy(&key).into_owned())
    }

    /// The size on disk of one value of a fixed-size type, `None` for strings and arrays.
    fn fixed_size(value_type: u32) -> Result<Option<u64>, String> {
        Ok(Some(match value_type {
            0 | 1 | 7 => 1,           // u8, i8, bool
            2 | 3 => 2,               // u16, i16
            4..=6 => 4,               // u32, i32, f32
            10..=12 => 8,             // u64, i64, f64
            8 | 9 => return Ok(None), // string, array
            other => return Err(format!("unknown metadata value type {other}")),
        }))
    }

    /// Skips one value of `value_type`, checking every length in it.
    fn value(&mut self, value_type: u32, depth: usize, key: &str) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("`{key}`: arrays nested deeper than {MAX_DEPTH}"));
        }
        match Self::fixed_size(value_type)? {
            Some(n) => self.skip(n, &format!("`{key}`")),
            None if value_type == 8 => {
                let len = self.string_len(&format!("the string `{key}`"))?;
                self.skip(len, &format!("the string `{key}`"))
            }
            None => {
                let element = self.u32(&format!("the element type of `{key}`"))?;
                let count = self.length(&format!("the length of `{key}`"))?;
                match Self::fixed_size(element)? {
                    Some(size) => {
                        let bytes = count
                            .checked_mul(size)
                            .ok_or_else(|| format!("`{key}`: {count} elements overflow"))?;
                        self.skip(bytes, &format!("the array `{key}` of {count} elements"))
                    }
                    None => {
                        // Each string or array element takes at least its length prefix.
                        let least = (if element == 8 { 4 } else { 8 }) + u64::from(self.wide) * 4;
                        if count > self.remaining() / least {
                            return Err(format!(
                                "the array `{key}` states {count} elements, more than the {} bytes left can hold",
                                self.remaining()
                            ));
                        }
                        for _ in 0..count {
                            self.value(element, depth + 1, key)?;
                        }
                        Ok(())
                    }
                }
            }
        }
    }
}

/// Walks the header of a GGUF file of `file_len` bytes from its start. An error says
/// what is wrong and where.
pub(super) fn check<R: BufRead + Seek>(reader: &mut R, file_len: u64) -> Result<(), String> {
    let mut w = Walker {
        reader,
        file_len,
        pos: 0,
        wide: true,
    };
    let magic = w.u32("the magic number")?;
    if magic != 0x4655_4747 && magic != 0x4747_5546 {
        // candle's reader names it.
        return Ok(());
    }
    let version = w.u32("the version")?;
    w.wide = version != 1;
    let tensors = w.length("the tensor count")?;
    let entries = w.length("the metadata count")?;
    // A metadata entry takes at least a key length, a type and one byte; a tensor entry
    // a name length, a dimension count, a type and an offset.
    let prefix = if w.wide { 8 } else { 4 };
    let least = entries
        .saturating_mul(prefix + 5)
        .saturating_add(tensors.saturating_mul(prefix + 16));
    if least > w.remaining() {
        return Err(format!(
            "the header states {tensors} tensors and {entries} metadata entries, which need at least \
             {least} bytes, but the file has {file_len}"
        ));
    }
    for _ in 0..entries {
        let key = w.key()?;
        let value_type = w.u32(&format!("the type of `{key}`"))?;
        if key == "general.alignment" && matches!(value_type, 0..=5) {
            // The integer types candle reads the alignment from; it divides by it.
            let size = Walker::<R>::fixed_size(value_type)?.unwrap_or(1) as usize;
            let mut b = [0u8; 8];
            w.reader
                .read_exact(&mut b[..size])
                .map_err(|_| "the file ends inside `general.alignment`".to_string())?;
            w.pos += size as u64;
            if u64::from_le_bytes(b) == 0 {
                return Err("`general.alignment` is 0".into());
            }
            continue;
        }
        w.value(value_type, 0, &key)?;
    }
    Ok(())
}
