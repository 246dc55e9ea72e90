//! Ogg pages (RFC 3533): a writer that packs packets into pages, and a reader
//! that walks a file page by page and checks each one, for the recordings'
//! crash repair.
//!
//! A page is a 27-byte header (capture pattern `OggS`, version 0, header type
//! flags, granule position, stream serial number, page sequence number,
//! CRC-32, segment count), a segment table of lacing values (a packet is a run
//! of 255s ended by a value below 255) and the body. The CRC is the plain
//! (unreflected) CRC-32 with polynomial 0x04c11db7, initial value 0 and no
//! final xor, computed over the whole page with its CRC field zeroed.
//!
//! Owns only bytes: no files, no clock. Never reassembles packets on the
//! reading side (the repair does not need them) and never accepts a page
//! whose CRC does not match.

use std::io::{self, Read};

/// The capture pattern every page starts with.
pub const CAPTURE_PATTERN: [u8; 4] = *b"OggS";
/// Bytes in a page header before its segment table.
pub const HEADER_LEN: usize = 27;
/// The largest page: header, 255 lacing values, 255 × 255 body bytes.
pub const MAX_PAGE_LEN: usize = HEADER_LEN + 255 + 255 * 255;
/// Header type flag: the page starts with the rest of a packet begun on the
/// previous page.
pub const FLAG_CONTINUED: u8 = 0x01;
/// Header type flag: first page of a logical bitstream.
pub const FLAG_BOS: u8 = 0x02;
/// Header type flag: last page of a logical bitstream.
pub const FLAG_EOS: u8 = 0x04;
/// The granule position of a page on which no packet ends.
pub const NO_GRANULE: u64 = u64::MAX;
/// Offset of the CRC field in a page header.
const CRC_OFFSET: usize = 22;

/// The CRC-32 lookup table for polynomial 0x04c11db7, most significant bit
/// first (no reflection), as Ogg uses it.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04c1_1db7
            } else {
                r << 1
            };
            bit += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
};

/// Continues an Ogg CRC over `data` (start with 0).
pub fn crc_update(mut crc: u32, data: &[u8]) -> u32 {
    for &byte in data {
        crc = (crc << 8) ^ CRC_TABLE[((crc >> 24) as u8 ^ byte) as usize];
    }
    crc
}

/// The Ogg CRC of a whole page, its CRC field taken as zero.
pub fn page_crc(page: &[u8]) -> u32 {
    if page.len() < HEADER_LEN {
        return crc_update(0, page);
    }
    let crc = crc_update(0, &page[..CRC_OFFSET]);
    let crc = crc_update(crc, &[0; 4]);
    crc_update(crc, &page[CRC_OFFSET + 4..])
}

/// Packs packets of one logical bitstream into pages.
///
/// Complete pages accumulate in an output buffer that the caller drains
/// ([`PageWriter::pending`], [`PageWriter::clear_pending`]) and writes where it
/// likes; nothing is allocated once the buffers have grown to a page.
#[derive(Debug)]
pub struct PageWriter {
    serial: u32,
    sequence: u32,
    /// The next page is the stream's first.
    first: bool,
    /// The next page starts with the rest of a packet.
    continued: bool,
    /// Lacing values of the page being built.
    lacing: Vec<u8>,
    /// Body of the page being built.
    body: Vec<u8>,
    /// Granule position of the last packet that ended on the page being
    /// built, or [`NO_GRANULE`].
    granule: u64,
    /// Complete pages not yet taken by the caller.
    out: Vec<u8>,
    /// Pages emitted so far.
    pages: u64,
}

impl PageWriter {
    /// A writer for the logical bitstream with this serial number.
    pub fn new(serial: u32) -> PageWriter {
        PageWriter {
            serial,
            sequence: 0,
            first: true,
            continued: false,
            lacing: Vec::with_capacity(255),
            body: Vec::with_capacity(8 * 1024),
            granule: NO_GRANULE,
            out: Vec::with_capacity(8 * 1024),
            pages: 0,
        }
    }

    /// A writer that appends to an existing stream whose next page has
    /// sequence number `sequence` (no BOS flag).
    pub fn continuing(serial: u32, sequence: u32) -> PageWriter {
        PageWriter {
            sequence,
            first: false,
            ..PageWriter::new(serial)
        }
    }

    /// Adds one packet whose last sample has granule position `granule`.
    /// A packet that does not fit in the page being built is continued on
    /// the next one (that page is closed and emitted here).
    pub fn add_packet(&mut self, packet: &[u8], granule: u64) {
        let mut rest = packet;
        loop {
            if self.lacing.len() == 255 {
                self.emit(false);
                self.continued = true;
            }
            let take = rest.len().min(255);
            self.lacing.push(take as u8);
            self.body.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            // A packet ends at the first lacing value below 255: a packet
            // whose length is a multiple of 255 ends with a 0.
            if take < 255 {
                break;
            }
        }
        self.granule = granule;
    }

    /// Closes the page being built and emits it, marked last of the stream
    /// when `eos`. Does nothing when the page is empty, unless `eos` (an
    /// empty EOS page is valid Ogg).
    pub fn flush_page(&mut self, eos: bool) {
        if self.lacing.is_empty() && !eos {
            return;
        }
        self.emit(eos);
    }

    /// Packets' bytes waiting for a page to be closed.
    pub fn buffered_body(&self) -> usize {
        self.body.len()
    }

    /// Lacing values used on the page being built (at most 255).
    pub fn buffered_segments(&self) -> usize {
        self.lacing.len()
    }

    /// Complete pages not yet taken.
    pub fn pending(&self) -> &[u8] {
        &self.out
    }

    /// Forgets the pending pages (after the caller wrote them).
    pub fn clear_pending(&mut self) {
        self.out.clear();
    }

    /// Pages emitted so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    fn emit(&mut self, eos: bool) {
        let start = self.out.len();
        let mut flags = 0;
        if self.continued {
            flags |= FLAG_CONTINUED;
        }
        if self.first {
            flags |= FLAG_BOS;
        }
        if eos {
            flags |= FLAG_EOS;
        }
        self.out.extend_from_slice(&CAPTURE_PATTERN);
        self.out.push(0); // version
        self.out.push(flags);
        self.out.extend_from_slice(&self.granule.to_le_bytes());
        self.out.extend_from_slice(&self.serial.to_le_bytes());
        self.out.extend_from_slice(&self.sequence.to_le_bytes());
        self.out.extend_from_slice(&[0; 4]); // CRC, below
        self.out.push(self.lacing.len() as u8);
        self.out.extend_from_slice(&self.lacing);
        self.out.extend_from_slice(&self.body);
        let crc = page_crc(&self.out[start..]);
        self.out[start + CRC_OFFSET..start + CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        self.sequence = self.sequence.wrapping_add(1);
        self.first = false;
        self.continued = false;
        self.lacing.clear();
        self.body.clear();
        self.granule = NO_GRANULE;
        self.pages += 1;
    }
}

/// Why bytes are not a valid page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// Fewer bytes than the page needs: a page cut short (by a crash).
    #[error("page truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the page needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// The bytes do not start with `OggS`.
    #[error("no Ogg capture pattern")]
    NoCapture,
    /// A stream structure version other than 0.
    #[error("unknown Ogg version {0}")]
    Version(u8),
    /// The CRC does not match the page's bytes.
    #[error("page CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
}

/// One page, checked, borrowed from the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page<'a> {
    /// Header type flags ([`FLAG_CONTINUED`], [`FLAG_BOS`], [`FLAG_EOS`]).
    pub flags: u8,
    /// Granule position ([`NO_GRANULE`] when no packet ends here).
    pub granule: u64,
    /// Stream serial number.
    pub serial: u32,
    /// Page sequence number.
    pub sequence: u32,
    /// Header and segment table.
    pub header: &'a [u8],
    /// Packet data.
    pub body: &'a [u8],
}

impl Page<'_> {
    /// Length of the whole page in bytes.
    pub fn len(&self) -> usize {
        self.header.len() + self.body.len()
    }

    /// Never: a page has at least its 27-byte header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the page is the last of its stream.
    pub fn is_eos(&self) -> bool {
        self.flags & FLAG_EOS != 0
    }

    /// Whether the page is the first of its stream.
    pub fn is_bos(&self) -> bool {
        self.flags & FLAG_BOS != 0
    }
}

/// Length of the page at the start of `buf` from its header alone, or how
/// many bytes are needed to know it.
fn page_len(buf: &[u8]) -> Result<usize, PageError> {
    if buf.len() < HEADER_LEN {
        if !CAPTURE_PATTERN.starts_with(&buf[..buf.len().min(4)]) {
            return Err(PageError::NoCapture);
        }
        return Err(PageError::Truncated {
            needed: HEADER_LEN,
            available: buf.len(),
        });
    }
    if buf[..4] != CAPTURE_PATTERN {
        return Err(PageError::NoCapture);
    }
    if buf[4] != 0 {
        return Err(PageError::Version(buf[4]));
    }
    let segments = buf[26] as usize;
    let header_len = HEADER_LEN + segments;
    if buf.len() < header_len {
        return Err(PageError::Truncated {
            needed: header_len,
            available: buf.len(),
        });
    }
    let body_len: usize = buf[HEADER_LEN..header_len]
        .iter()
        .map(|&l| l as usize)
        .sum();
    Ok(header_len + body_len)
}

/// Parses and checks the page at the start of `buf` (bytes after it are
/// ignored).
pub fn parse_page(buf: &[u8]) -> Result<Page<'_>, PageError> {
    let len = page_len(buf)?;
    if buf.len() < len {
        return Err(PageError::Truncated {
            needed: len,
            available: buf.len(),
        });
    }
    let page = &buf[..len];
    let stored = u32::from_le_bytes([
        page[CRC_OFFSET],
        page[CRC_OFFSET + 1],
        page[CRC_OFFSET + 2],
        page[CRC_OFFSET + 3],
    ]);
    let computed = page_crc(page);
    if stored != computed {
        return Err(PageError::Crc { stored, computed });
    }
    let header_len = HEADER_LEN + page[26] as usize;
    let mut granule = [0u8; 8];
    granule.copy_from_slice(&page[6..14]);
    let mut serial = [0u8; 4];
    serial.copy_from_slice(&page[14..18]);
    let mut sequence = [0u8; 4];
    sequence.copy_from_slice(&page[18..22]);
    Ok(Page {
        flags: page[5],
        granule: u64::from_le_bytes(granule),
        serial: u32::from_le_bytes(serial),
        sequence: u32::from_le_bytes(sequence),
        header: &page[..header_len],
        body: &page[header_len..],
    })
}

/// Sets the EOS flag on a whole, valid page and recomputes its CRC.
pub fn mark_eos(page: &mut [u8]) -> Result<(), PageError> {
    parse_page(page)?;
    page[5] |= FLAG_EOS;
    let crc = page_crc(page);
    page[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The start of the last whole, valid page that ends exactly at the end of
/// `tail`, searching backwards for the capture pattern (which may also occur
/// inside packet data; the CRC tells them apart).
pub fn last_page_ending_at_end(tail: &[u8]) -> Option<(usize, Page<'_>)> {
    let mut end = tail.len();
    while let Some(at) = tail[..end]
        .windows(4)
        .rposition(|w| w == CAPTURE_PATTERN.as_slice())
    {
        if let Ok(page) = parse_page(&tail[at..])
            && at + page.len() == tail.len()
        {
            return Some((at, page));
        }
        end = at + 3;
        if at == 0 {
            break;
        }
    }
    None
}

/// Why reading pages stopped before the end of the input.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading the input failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// The bytes at `offset` are not a valid page (or a page cut short).
    #[error("no valid page at byte {offset}: {error}")]
    Invalid {
        /// Where the bad page starts.
        offset: u64,
        /// What is wrong with it.
        error: PageError,
    },
}

/// Reads pages one after another from the start of a stream, checking each.
#[derive(Debug)]
pub struct PageReader<R> {
    input: R,
    buf: Vec<u8>,
    offset: u64,
}

impl<R: Read> PageReader<R> {
    /// A reader at the start of `input`.
    pub fn new(input: R) -> PageReader<R> {
        PageReader {
            input,
            buf: Vec::with_capacity(MAX_PAGE_LEN),
            offset: 0,
        }
    }

    /// Byte offset of the next page.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next page and its byte offset; `Ok(None)` at a clean end of input
    /// (right after a whole page).
    pub fn next_page(&mut self) -> Result<Option<(u64, Page<'_>)>, ReadError> {
        let offset = self.offset;
        self.buf.clear();
        let got = read_up_to(&mut self.input, &mut self.buf, HEADER_LEN)?;
        if got == 0 {
            return Ok(None);
        }
        let invalid = |error| ReadError::Invalid { offset, error };
        let len = loop {
            match page_len(&self.buf) {
                Ok(len) => break len,
                Err(PageError::Truncated { needed, .. }) => {
                    let want = needed - self.buf.len();
                    if read_up_to(&mut self.input, &mut self.buf, want)? < want {
                        return Err(invalid(PageError::Truncated {
                            needed,
                            available: self.buf.len(),
                        }));
                    }
                }
                Err(e) => return Err(invalid(e)),
            }
        };
        let want = len - self.buf.len();
        read_up_to(&mut self.input, &mut self.buf, want)?;
        let page = parse_page(&self.buf).map_err(invalid)?;
        self.offset += page.len() as u64;
        Ok(Some((offset, page)))
    }
}

/// Appends up to `n` bytes from `input` to `buf`; fewer only at end of input.
fn read_up_to<R: Read>(input: &mut R, buf: &mut Vec<u8>, n: usize) -> io::Result<usize> {
    let before = buf.len();
    input.take(n as u64).read_to_end(buf)?;
    Ok(buf.len() - before)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages as (flags, granule, sequence, body length) from `bytes`.
    fn pages(bytes: &[u8]) -> Vec<(u8, u64, u32, usize)> {
        let mut reader = PageReader::new(bytes);
        let mut out = Vec::new();
        while let Some((_, page)) = reader.next_page().expect("valid pages") {
            out.push((page.flags, page.granule, page.sequence, page.body.len()));
        }
        out
    }

    #[test]
    fn crc_matches_the_reference_check_value() {
        // The Ogg CRC is CRC-32/POSIX (check value 0x765e7680 for
        // "123456789") without its final xor: !0x765e7680 = 0x89a1897f.
        assert_eq!(crc_update(0, b"123456789"), 0x89a1_897f);
    }

    #[test]
    fn writes_flags_granules_sequence_and_lacing() {
        let mut w = PageWriter::new(0x1234_5678);
        w.add_packet(b"head", 0);
        w.flush_page(false);
        w.add_packet(&[7; 255], 960); // a multiple of 255: lacing 255, 0
        w.add_packet(&[8; 10], 1920);
        w.flush_page(false);
        w.add_packet(&[9; 3], 2880);
        w.flush_page(true);
        let bytes = w.pending().to_vec();
        assert_eq!(
            pages(&bytes),
            vec![
                (FLAG_BOS, 0, 0, 4),
                (0, 1920, 1, 265),
                (FLAG_EOS, 2880, 2, 3)
            ]
        );
        let second = parse_page(&bytes[28 + 4..]).expect("second page");
        assert_eq!(&second.header[26..], &[3, 255, 0, 10]);
        assert_eq!(second.serial, 0x1234_5678);
    }

    #[test]
    fn a_long_packet_continues_on_the_next_page() {
        let mut w = PageWriter::new(1);
        let packet = vec![5u8; 255 * 300];
        w.add_packet(&packet, 48_000);
        w.flush_page(true);
        let bytes = w.pending().to_vec();
        assert_eq!(
            pages(&bytes),
            vec![
                (FLAG_BOS, NO_GRANULE, 0, 255 * 255),
                (FLAG_CONTINUED | FLAG_EOS, 48_000, 1, 255 * 45),
            ]
        );
    }

    #[test]
    fn reader_stops_at_a_cut_or_corrupt_page() {
        let mut w = PageWriter::new(1);
        for i in 0..3u64 {
            w.add_packet(&[i as u8; 100], i * 960);
            w.flush_page(false);
        }
        let bytes = w.pending().to_vec();
        let page_len = bytes.len() / 3;
        for cut in [page_len * 2 + 1, page_len * 2 + 20, page_len * 3 - 1] {
            let mut reader = PageReader::new(&bytes[..cut]);
            assert!(reader.next_page().expect("page 0").is_some());
            assert!(reader.next_page().expect("page 1").is_some());
            match reader.next_page() {
                Err(ReadError::Invalid {
                    offset,
                    error: PageError::Truncated { .. },
                }) => assert_eq!(offset, page_len as u64 * 2),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        let mut corrupt = bytes.clone();
        corrupt[page_len + 40] ^= 1;
        let mut reader = PageReader::new(corrupt.as_slice());
        assert!(reader.next_page().expect("page 0").is_some());
        assert!(matches!(
            reader.next_page(),
            Err(ReadError::Invalid {
                error: PageError::Crc { .. },
                ..
            })
        ));
        let mut garbage = PageReader::new(&b"RIFF\0\0\0\0WAVEfmt garbage garbage"[..]);
        assert!(matches!(
            garbage.next_page(),
            Err(ReadError::Invalid {
                offset: 0,
                error: PageError::NoCapture
            })
        ));
    }

    #[test]
    fn mark_eos_keeps_the_page_valid() {
        let mut w = PageWriter::new(9);
        w.add_packet(b"OggS inside a packet", 960);
        w.flush_page(false);
        let mut bytes = w.pending().to_vec();
        mark_eos(&mut bytes).expect("valid page");
        let page = parse_page(&bytes).expect("still valid");
        assert!(page.is_eos() && page.is_bos());
        let (at, found) = last_page_ending_at_end(&bytes).expect("found");
        assert_eq!((at, found.len()), (0, bytes.len()));
        assert!(last_page_ending_at_end(&bytes[..bytes.len() - 1]).is_none());
    }
}
