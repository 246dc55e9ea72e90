//! Framing of the modem's output: arbitrary byte chunks in, [`Frame`]s out.
//!
//! Owns line framing (`\r\n`, a bare `\r` or a bare `\n` ends a line; empty
//! lines are skipped; blanks around a line are trimmed), the SMS `> ` prompt
//! (which has no line ending), and garbage: a line that is not UTF-8, carries
//! control bytes, or grows past `max_line_len` becomes one [`Frame::Garbage`]
//! and framing resumes at the next line end. NUL, Ctrl-Z (0x1A) and ESC
//! (0x1B) bytes are dropped: modems emit NULs when a port opens, and echo our
//! own Ctrl-Z and ESC.
//!
//! Never interprets a line (that is [`super::parser`]), never holds more than
//! `max_line_len` bytes, never panics.

/// One unit of modem output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A non-empty line, trimmed, without its line ending.
    Line(String),
    /// The `> ` prompt: the modem waits for an SMS PDU ended by Ctrl-Z.
    Prompt,
    /// Bytes that are not a line of text.
    Garbage(Garbage),
}

/// What was thrown away, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbage {
    /// Why it is garbage.
    pub reason: GarbageReason,
    /// How many bytes were thrown away.
    pub len: usize,
    /// The first bytes, printable ASCII kept and the rest as `\xNN`.
    pub preview: String,
}

/// Why bytes were garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GarbageReason {
    /// The line is not valid UTF-8.
    NotUtf8,
    /// The line holds control bytes other than tab.
    ControlBytes,
    /// The line grew past the framer's limit before it ended.
    TooLong,
}

/// How many bytes a garbage preview shows.
const PREVIEW_BYTES: usize = 32;

/// The incremental framer. Feed it chunks as they arrive; it keeps the
/// unfinished line between calls.
#[derive(Debug, Clone)]
pub struct Framer {
    buf: Vec<u8>,
    max_line_len: usize,
    /// Bytes thrown away so far of an over-long line, and its preview.
    discarding: Option<(usize, String)>,
    prompt_expected: bool,
    skip_space: bool,
}

impl Framer {
    /// A framer that turns lines longer than `max_line_len` bytes into garbage.
    pub fn new(max_line_len: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            max_line_len: max_line_len.max(8),
            discarding: None,
            prompt_expected: false,
            skip_space: false,
        }
    }

    /// Tells the framer a `> ` prompt may come: a lone `>` at the end of a
    /// chunk is then taken as the prompt without waiting for its space.
    pub fn set_prompt_expected(&mut self, expected: bool) {
        self.prompt_expected = expected;
    }

    /// Bytes of the unfinished line held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Forgets the unfinished line (after the port was reopened).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.discarding = None;
        self.skip_space = false;
    }

    /// Frames `bytes`, appending what completed to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        for &b in bytes {
            if std::mem::take(&mut self.skip_space) && b == b' ' {
                continue;
            }
            if b == b'\r' || b == b'\n' {
                if let Some((len, preview)) = self.discarding.take() {
                    out.push(Frame::Garbage(Garbage {
                        reason: GarbageReason::TooLong,
                        len,
                        preview,
                    }));
                } else {
                    self.finish_line(out);
                }
                continue;
            }
            if let Some((len, _)) = self.discarding.as_mut() {
                *len = len.saturating_add(1);
                continue;
            }
            if matches!(b, 0x00 | 0x1A | 0x1B) {
                continue;
            }
            self.buf.push(b);
            if self.buf == b"> " {
                self.buf.clear();
                out.push(Frame::Prompt);
            } else if self.buf.len() > self.max_line_len {
                let preview = preview(&self.buf);
                self.discarding = Some((self.buf.len(), preview));
                self.buf.clear();
            }
        }
        if self.prompt_expected && self.buf == b">" {
            self.buf.clear();
            self.skip_space = true;
            out.push(Frame::Prompt);
        }
    }

    fn finish_line(&mut self, out: &mut Vec<Frame>) {
        let raw = std::mem::take(&mut self.buf);
        let trimmed = raw.trim_ascii();
        if trimmed.is_empty() {
            return;
        }
        let garbage = |reason| {
            Frame::Garbage(Garbage {
                reason,
                len: trimmed.len(),
                preview: preview(trimmed),
            })
        };
        if trimmed
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7F)
        {
            out.push(garbage(GarbageReason::ControlBytes));
            return;
        }
        match std::str::from_utf8(trimmed) {
            Ok(text) => out.push(Frame::Line(text.to_owned())),
            Err(_) => out.push(garbage(GarbageReason::NotUtf8)),
        }
    }
}

/// A short printable rendering of `bytes` for logs.
pub fn preview(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(PREVIEW_BYTES) {
        if (0x20..0x7F).contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    if bytes.len() > PREVIEW_BYTES {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames `chunks` one after the other and renders what came out.
    fn check(chunks: &[&[u8]], prompt_expected: bool, expect: &[&str]) {
        let mut framer = Framer::new(16);
        framer.set_prompt_expected(prompt_expected);
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk, &mut out);
        }
        let got: Vec<String> = out
            .iter()
            .map(|f| match f {
                Frame::Line(l) => format!("line {l}"),
                Frame::Prompt => "prompt".to_owned(),
                Frame::Garbage(g) => format!("garbage {:?} {} {}", g.reason, g.len, g.preview),
            })
            .collect();
        assert_eq!(got, expect, "chunks {chunks:?}");
    }

    #[test]
    fn frames_lines() {
        check(&[b"\r\nOK\r\n"], false, &["line OK"]);
        check(&[b"\r", b"\nO", b"K", b"\r", b"\n"], false, &["line OK"]);
        check(
            &[b"A\rB\nC\r\n\r\n\r\nD"],
            false,
            &["line A", "line B", "line C"],
        );
        check(&[b"  +CSQ: 1,2 \t\r\n"], false, &["line +CSQ: 1,2"]);
        check(&[b"\0\0AT\x1a\r\n"], false, &["line AT"]);
    }

    #[test]
    fn frames_the_prompt() {
        check(&[b"\r\n> "], false, &["prompt"]);
        check(&[b"\r\n>", b" "], false, &["prompt"]);
        check(&[b"\r\n>"], false, &[]);
        check(&[b"\r\n>"], true, &["prompt"]);
        check(
            &[b"\r\n>", b" +CMGS: 5\r\n"],
            true,
            &["prompt", "line +CMGS: 5"],
        );
        check(&[b"a> \r\n"], false, &["line a>"]);
    }

    #[test]
    fn turns_garbage_into_frames_and_resyncs() {
        check(
            &[b"\xff\xfeOK\r\nOK\r\n"],
            false,
            &["garbage NotUtf8 4 \\xff\\xfeOK", "line OK"],
        );
        check(
            &[b"O\x07K\r\nOK\n"],
            false,
            &["garbage ControlBytes 3 O\\x07K", "line OK"],
        );
        check(
            &[b"0123456789", b"0123456789", b"01\r\nOK\r\n"],
            false,
            &["garbage TooLong 22 01234567890123456", "line OK"],
        );
        // Valid UTF-8 split across chunks is one line.
        check(
            &["Ба".as_bytes(), &[0xd0], &[0xbb, b'\n']],
            false,
            &["line Бал"],
        );
    }
}
