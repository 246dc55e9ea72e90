//! A bounds-checked cursor over PDU bytes: every read names the field it
//! reads, so a short PDU is a [`PduError::Truncated`] naming that field.
//! Never panics.

use super::PduError;

/// A cursor over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// Reads one octet of `field`.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, PduError> {
        Ok(self.take(1, field)?.first().copied().unwrap_or_default())
    }

    /// Reads `n` octets of `field`.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], PduError> {
        let end = self.pos.checked_add(n).ok_or(PduError::Truncated(field))?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(PduError::Truncated(field))?;
        self.pos = end;
        Ok(slice)
    }

    /// The octets not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    /// Octets read so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}
