//! Parameter lists of AT information lines and URCs, such as
//! `1,0,0,0,0,"+79161234567",145,,"a,b"`.
//!
//! Owns splitting on commas outside double quotes and recognising a
//! `+NAME:` / `^NAME:` prefix. Never decides what a parameter means (that is
//! [`super::replies`] and [`super::urc`]) and never panics on any input.

/// One parameter of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    /// The text, without the surrounding quotes and (when unquoted) trimmed.
    pub text: &'a str,
    /// Whether the parameter was a quoted string.
    pub quoted: bool,
}

impl Param<'_> {
    /// An omitted parameter: nothing between two commas.
    pub fn is_omitted(&self) -> bool {
        !self.quoted && self.text.is_empty()
    }
}

/// Why a parameter list could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A quoted string was not closed before the end of the line.
    #[error("unterminated quoted string in {0:?}")]
    UnterminatedQuote(String),
    /// Something other than a comma followed a closing quote.
    #[error("unexpected text after a quoted string in {0:?}")]
    TextAfterQuote(String),
}

/// Splits `s` into parameters. An empty (or all-blank) `s` has no parameters;
/// `1,` has two, the second omitted.
pub fn split(s: &str) -> Result<Vec<Param<'_>>, FieldError> {
    let mut out = Vec::new();
    if s.trim().is_empty() {
        return Ok(out);
    }
    let mut rest = s;
    loop {
        let trimmed = rest.trim_start();
        if let Some(inner) = trimmed.strip_prefix('"') {
            let Some(close) = inner.find('"') else {
                return Err(FieldError::UnterminatedQuote(s.to_owned()));
            };
            out.push(Param {
                text: &inner[..close],
                quoted: true,
            });
            let after = inner[close + 1..].trim_start();
            if after.is_empty() {
                return Ok(out);
            }
            match after.strip_prefix(',') {
                Some(next) => rest = next,
                None => return Err(FieldError::TextAfterQuote(s.to_owned())),
            }
        } else {
            match trimmed.find(',') {
                Some(comma) => {
                    out.push(Param {
                        text: trimmed[..comma].trim_end(),
                        quoted: false,
                    });
                    rest = &trimmed[comma + 1..];
                }
                None => {
                    out.push(Param {
                        text: trimmed.trim_end(),
                        quoted: false,
                    });
                    return Ok(out);
                }
            }
        }
    }
}

/// The `+NAME` / `^NAME` prefix of a line such as `+CSQ: 20,99`, upper-cased,
/// if the line has one: a `+` or `^`, then letters and digits, then `:`.
pub fn prefix_of(line: &str) -> Option<String> {
    let first = line.chars().next()?;
    if first != '+' && first != '^' {
        return None;
    }
    let colon = line.find(':')?;
    let name = &line[1..colon];
    if name.is_empty() || name.len() > 16 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(line[..colon].to_ascii_uppercase())
}

/// The text after `prefix:` (ASCII case-insensitive, spaces after the colon
/// skipped), or `None` when `line` does not start with `prefix:`.
pub fn after_prefix<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let head = line.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = line.get(prefix.len()..)?.strip_prefix(':')?;
    Some(rest.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &str) {
        let got = match split(input) {
            Ok(params) => params
                .iter()
                .map(|p| {
                    if p.quoted {
                        format!("\"{}\"", p.text)
                    } else {
                        format!("[{}]", p.text)
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expect, "input {input:?}");
    }

    #[test]
    fn splits_parameter_lists() {
        check("", "");
        check("  ", "");
        check("20,99", "[20] [99]");
        check(" 20 , 99 ", "[20] [99]");
        check("1,", "[1] []");
        check(",,", "[] [] []");
        check(
            r#"1,0,0,0,0,"+7916",145"#,
            r#"[1] [0] [0] [0] [0] "+7916" [145]"#,
        );
        check(r#""a,b","""#, r#""a,b" """#);
        check(r#""abc"#, r#"error: unterminated quoted string in "\"abc""#);
        check(
            r#""abc"x,1"#,
            r#"error: unexpected text after a quoted string in "\"abc\"x,1""#,
        );
    }

    #[test]
    fn finds_prefixes() {
        assert_eq!(prefix_of("+CSQ: 20,99").as_deref(), Some("+CSQ"));
        assert_eq!(prefix_of("^rssi:17").as_deref(), Some("^RSSI"));
        assert_eq!(prefix_of("+: 1"), None);
        assert_eq!(prefix_of("+A B: 1"), None);
        assert_eq!(prefix_of("OK"), None);
        assert_eq!(prefix_of("+CSQ 20"), None);
        assert_eq!(after_prefix("+CSQ:20,99", "+CSQ"), Some("20,99"));
        assert_eq!(after_prefix("+csq:  20,99", "+CSQ"), Some("20,99"));
        assert_eq!(after_prefix("+CSQX: 1", "+CSQ"), None);
        assert_eq!(after_prefix("+CS", "+CSQ"), None);
        assert_eq!(after_prefix("+Ж: 1", "+C"), None);
    }
}
