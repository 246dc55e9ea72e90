//! SIP messages (RFC 3261 §7): parsing a datagram (or a framed stream chunk)
//! into a [`Message`], serialising it back, and typed access to the headers
//! the user agent reads.
//!
//! It owns the wire format only: no sockets, no timers, no dialog state.
//! It must never panic on any input: garbage gets a [`ParseError`], and
//! anything above the [`Limits`] is refused before it is stored.
//!
//! **Invariant:** for every message `m` this module parses,
//! `parse(&serialize(m)) == m` (header names are stored in their full
//! canonical form, folded values are joined with one space, and
//! `Content-Length` is derived from the body, never kept as a header).

use std::fmt::Write as _;

/// The only protocol version spoken.
pub const SIP_VERSION: &str = "SIP/2.0";

/// Size limits applied while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message (head and body) accepted.
    pub max_message: usize,
    /// Most header lines (after unfolding) accepted.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 65_535,
            max_headers: 128,
        }
    }
}

/// Why bytes are not a SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The message is larger than [`Limits::max_message`].
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More header lines than [`Limits::max_headers`].
    #[error("more than {limit} header lines")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// No empty line ends the head.
    #[error("the message head is not terminated by an empty line")]
    Incomplete,
    /// The head is not UTF-8.
    #[error("the message head is not UTF-8")]
    NotUtf8,
    /// The first line is neither a request line nor a status line.
    #[error("bad start line: {0:?}")]
    StartLine(String),
    /// A header line has no name or colon.
    #[error("bad header line: {0:?}")]
    HeaderLine(String),
    /// A control character where none is allowed.
    #[error("control character in the message head")]
    ControlCharacter,
    /// `Content-Length` is not a number, or given twice with different values.
    #[error("bad Content-Length: {0:?}")]
    ContentLength(String),
    /// The body is shorter than `Content-Length` says.
    #[error("body of {got} bytes, Content-Length says {expected}")]
    Truncated {
        /// What `Content-Length` announced.
        expected: usize,
        /// What arrived.
        got: usize,
    },
}

/// One header line: its name (canonical full form for the headers this
/// module knows, as written otherwise) and its value (trimmed, unfolded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name.
    pub name: String,
    /// The value.
    pub value: String,
}

/// The header lines of a message, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method (`REGISTER`, `INVITE`, …), case-sensitive as RFC 3261 says.
    pub method: String,
    /// The Request-URI, as written.
    pub uri: String,
    /// The headers.
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, 100–699.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The headers.
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

/// Compact forms (RFC 3261 §7.3.3 and extensions) and the canonical
/// spelling of the headers this stack reads.
const CANONICAL: &[(&str, &str)] = &[
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("f", "From"),
    ("t", "To"),
    ("v", "Via"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("k", "Supported"),
    ("e", "Content-Encoding"),
    ("call-id", "Call-ID"),
    ("contact", "Contact"),
    ("from", "From"),
    ("to", "To"),
    ("via", "Via"),
    ("content-length", "Content-Length"),
    ("content-type", "Content-Type"),
    ("supported", "Supported"),
    ("content-encoding", "Content-Encoding"),
    ("cseq", "CSeq"),
    ("expires", "Expires"),
    ("min-expires", "Min-Expires"),
    ("max-forwards", "Max-Forwards"),
    ("www-authenticate", "WWW-Authenticate"),
    ("proxy-authenticate", "Proxy-Authenticate"),
    ("authorization", "Authorization"),
    ("proxy-authorization", "Proxy-Authorization"),
    ("user-agent", "User-Agent"),
    ("allow", "Allow"),
    ("retry-after", "Retry-After"),
];

/// The canonical name of `name` (compact forms expanded, known headers in
/// their usual spelling), or `name` itself.
pub fn canonical_name(name: &str) -> String {
    CANONICAL
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |(_, v)| (*v).to_owned())
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// Appends a header line (`name` is canonicalised).
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: canonical_name(name),
            value: value.into(),
        });
    }

    /// All header lines in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// How many header lines.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True without headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of the first `name` header (any spelling, compact or not).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// The values of every `name` header line, in order.
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical_name(name);
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }

    /// The comma-separated elements of every `name` header line (for
    /// headers whose values are lists: Via, Contact …), split outside quotes
    /// and angle brackets.
    pub fn list<'a>(&'a self, name: &str) -> Vec<&'a str> {
        self.get_all(name)
            .flat_map(split_list)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Removes every `name` header line.
    pub fn remove(&mut self, name: &str) {
        let name = canonical_name(name);
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(&name));
    }

    /// The top Via.
    pub fn via(&self) -> Option<Via> {
        self.list("Via").first().and_then(|v| Via::parse(v))
    }

    /// From.
    pub fn from(&self) -> Option<NameAddr> {
        self.get("From").and_then(NameAddr::parse)
    }

    /// To.
    pub fn to(&self) -> Option<NameAddr> {
        self.get("To").and_then(NameAddr::parse)
    }

    /// Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.get("Call-ID")
    }

    /// CSeq: sequence number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let value = self.get("CSeq")?;
        let mut parts = value.split_whitespace();
        let number = parts.next()?.parse().ok()?;
        let method = parts.next()?;
        Some((number, method))
    }

    /// Every Contact, each parsed (unparseable ones and `*` are skipped).
    pub fn contacts(&self) -> Vec<NameAddr> {
        self.list("Contact")
            .into_iter()
            .filter_map(NameAddr::parse)
            .collect()
    }

    /// A header holding a number of seconds (Expires, Min-Expires).
    pub fn seconds(&self, name: &str) -> Option<u32> {
        self.get(name)?.trim().parse().ok()
    }
}

/// Splits a header value at commas outside quotes and `<…>`.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out
}

/// Splits `;name=value` parameters; returns what precedes the first `;`
/// and the parameters (names lower-cased, quotes kept off values).
fn split_params(s: &str) -> (&str, Vec<(String, Option<String>)>) {
    let mut parts = s.split(';');
    let head = parts.next().unwrap_or_default().trim();
    let params = parts
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (
                k.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"').to_owned()),
            ),
            None => (p.trim().to_ascii_lowercase(), None),
        })
        .collect();
    (head, params)
}

fn param<'a>(params: &'a [(String, Option<String>)], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_deref())
}

/// A Via header value: `SIP/2.0/UDP host:port;branch=…;received=…;rport=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP` …
    pub transport: String,
    /// The sent-by host.
    pub host: String,
    /// The sent-by port.
    pub port: Option<u16>,
    /// The parameters, names lower-cased.
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    /// Parses one Via element.
    pub fn parse(value: &str) -> Option<Via> {
        let (head, params) = split_params(value);
        let mut words = head.split_whitespace();
        let protocol = words.next()?;
        let sent_by = words.next()?;
        let transport = protocol.rsplit('/').next()?.to_owned();
        let (host, port) = split_host_port(sent_by)?;
        Some(Via {
            transport,
            host,
            port,
            params,
        })
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        param(&self.params, "branch").flatten()
    }

    /// The received parameter (the address the server saw).
    pub fn received(&self) -> Option<&str> {
        param(&self.params, "received").flatten()
    }

    /// The rport parameter: absent, present without value, or the port seen.
    pub fn rport(&self) -> Option<Option<u16>> {
        param(&self.params, "rport").map(|v| v.and_then(|p| p.parse().ok()))
    }
}

fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None => None,
        };
        return Some((host.to_owned(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), Some(port.parse().ok()?))),
        None => Some((s.to_owned(), None)),
    }
}

/// A name-addr (`"Name" <sip:user@host>;tag=…`) or addr-spec with parameters:
/// From, To, Contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, if any.
    pub display: Option<String>,
    /// The URI.
    pub uri: String,
    /// Header parameters (after the URI), names lower-cased.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    /// Parses one element.
    pub fn parse(value: &str) -> Option<NameAddr> {
        let value = value.trim();
        if value.is_empty() || value == "*" {
            return None;
        }
        if let Some(open) = value.find('<') {
            let close = value[open..].find('>')? + open;
            let display = value[..open].trim().trim_matches('"').trim();
            let (_, params) = split_params(&value[close + 1..]);
            return Some(NameAddr {
                display: (!display.is_empty()).then(|| display.to_owned()),
                uri: value[open + 1..close].trim().to_owned(),
                params,
            });
        }
        // addr-spec: parameters after the URI belong to the header.
        let (uri, params) = split_params(value);
        Some(NameAddr {
            display: None,
            uri: uri.to_owned(),
            params,
        })
    }

    /// The tag parameter.
    pub fn tag(&self) -> Option<&str> {
        param(&self.params, "tag").flatten()
    }

    /// The expires parameter (Contact).
    pub fn expires(&self) -> Option<u32> {
        param(&self.params, "expires")
            .flatten()
            .and_then(|v| v.parse().ok())
    }

    /// The user part of the URI (`sip:6001@host` → `6001`).
    pub fn user(&self) -> Option<&str> {
        uri_user(&self.uri)
    }
}

/// The user part of a SIP URI, if it has one.
pub fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let (user, _) = rest.split_once('@')?;
    let user = user.split(';').next().unwrap_or_default();
    let user = user.split(':').next().unwrap_or_default();
    (!user.is_empty()).then_some(user)
}

/// Parses a whole message (a UDP datagram) with the default [`Limits`].
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    parse_with(bytes, &Limits::default())
}

/// Where the head ends: (index of the first body byte).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            match bytes.get(i + 1) {
                Some(b'\n') => return Some(i + 2),
                Some(b'\r') if bytes.get(i + 2) == Some(&b'\n') => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// Parses a whole message under `limits`. Over UDP a missing
/// `Content-Length` means "the rest of the datagram"; extra bytes after the
/// announced length are dropped (RFC 3261 §18.3).
pub fn parse_with(bytes: &[u8], limits: &Limits) -> Result<Message, ParseError> {
    if bytes.len() > limits.max_message {
        return Err(ParseError::TooLarge {
            size: bytes.len(),
            limit: limits.max_message,
        });
    }
    // Leading empty lines are keep-alives (RFC 3261 §7.5).
    let start = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let end = head_end(bytes).ok_or(ParseError::Incomplete)?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| ParseError::NotUtf8)?;
    if head
        .chars()
        .any(|c| (c.is_control() && !matches!(c, '\r' | '\n' | '\t')) || c == '\u{7f}')
    {
        return Err(ParseError::ControlCharacter);
    }
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    if first.contains('\r') {
        return Err(ParseError::ControlCharacter);
    }

    let mut headers = Headers::new();
    let mut content_length: Option<usize> = None;
    let mut folded: Option<(String, String)> = None;
    let mut finish =
        |pending: Option<(String, String)>, headers: &mut Headers| -> Result<(), ParseError> {
            let Some((name, value)) = pending else {
                return Ok(());
            };
            let value = value.trim_matches([' ', '\t']).to_owned();
            if name == "Content-Length" {
                let n: usize = value
                    .parse()
                    .map_err(|_| ParseError::ContentLength(value.clone()))?;
                if content_length.is_some_and(|old| old != n) {
                    return Err(ParseError::ContentLength(value));
                }
                content_length = Some(n);
                return Ok(());
            }
            if headers.len() >= limits.max_headers {
                return Err(ParseError::TooManyHeaders {
                    limit: limits.max_headers,
                });
            }
            headers.0.push(Header { name, value });
            Ok(())
        };
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.contains('\r') {
            return Err(ParseError::ControlCharacter);
        }
        if line.starts_with([' ', '\t']) {
            match folded.as_mut() {
                Some((_, value)) => {
                    let more = line.trim_matches([' ', '\t']);
                    if !more.is_empty() {
                        let kept = value.trim_end_matches([' ', '\t']).len();
                        value.truncate(kept);
                        value.push(' ');
                        value.push_str(more);
                    }
                    continue;
                }
                None => return Err(ParseError::HeaderLine(line.to_owned())),
            }
        }
        finish(folded.take(), &mut headers)?;
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ParseError::HeaderLine(line.to_owned()))?;
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(ParseError::HeaderLine(line.to_owned()));
        }
        folded = Some((canonical_name(name), value.to_owned()));
    }
    finish(folded.take(), &mut headers)?;

    let rest = &bytes[end..];
    let body = match content_length {
        Some(n) if n > rest.len() => {
            return Err(ParseError::Truncated {
                expected: n,
                got: rest.len(),
            });
        }
        Some(n) => rest[..n].to_vec(),
        None => rest.to_vec(),
    };
    parse_start_line(first, headers, body)
}

fn parse_start_line(line: &str, headers: Headers, body: Vec<u8>) -> Result<Message, ParseError> {
    let bad = || ParseError::StartLine(line.to_owned());
    if let Some(rest) = line
        .strip_prefix(SIP_VERSION)
        .and_then(|r| r.strip_prefix(' '))
    {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let status: u16 = code.parse().map_err(|_| bad())?;
        if !(100..=699).contains(&status) {
            return Err(bad());
        }
        return Ok(Message::Response(Response {
            status,
            reason: reason.to_owned(),
            headers,
            body,
        }));
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !is_token(method) || uri.is_empty() || version != SIP_VERSION {
        return Err(bad());
    }
    Ok(Message::Request(Request {
        method: method.to_owned(),
        uri: uri.to_owned(),
        headers,
        body,
    }))
}

/// Over a byte stream (TCP): the length of the first complete message in
/// `buffer`, `None` while more bytes are needed. Streams need
/// `Content-Length` (absent means an empty body, RFC 3261 §18.3).
pub fn frame(buffer: &[u8], limits: &Limits) -> Result<Option<usize>, ParseError> {
    let start = buffer
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buffer.len());
    let Some(end) = head_end(&buffer[start..]) else {
        return if buffer.len() > limits.max_message {
            Err(ParseError::TooLarge {
                size: buffer.len(),
                limit: limits.max_message,
            })
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buffer[start..start + end]).map_err(|_| ParseError::NotUtf8)?;
    let mut length = 0usize;
    for line in head.split('\n').skip(1) {
        if let Some((name, value)) = line.split_once(':')
            && canonical_name(name.trim()) == "Content-Length"
        {
            let value = value.trim();
            length = value
                .parse()
                .map_err(|_| ParseError::ContentLength(value.to_owned()))?;
        }
    }
    let total = start.saturating_add(end).saturating_add(length);
    if total > limits.max_message {
        return Err(ParseError::TooLarge {
            size: total,
            limit: limits.max_message,
        });
    }
    Ok((buffer.len() >= total).then_some(total))
}

fn write_headers(out: &mut String, headers: &Headers, body: &[u8]) {
    for h in headers.iter() {
        let _ = write!(out, "{}: {}\r\n", h.name, h.value);
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: &str, uri: &str) -> Request {
        Request {
            method: method.to_owned(),
            uri: uri.to_owned(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} {SIP_VERSION}\r\n", self.method, self.uri);
        write_headers(&mut out, &self.headers, &self.body);
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

impl Response {
    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{SIP_VERSION} {} {}\r\n", self.status, self.reason);
        write_headers(&mut out, &self.headers, &self.body);
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// A response to `request` (RFC 3261 §8.2.6): its Vias, From, To (with
    /// `to_tag` added when it has none), Call-ID and CSeq.
    pub fn to_request(request: &Request, status: u16, reason: &str, to_tag: &str) -> Response {
        let mut headers = Headers::new();
        for via in request.headers.get_all("Via") {
            headers.push("Via", via);
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(value) = request.headers.get(name) {
                let value = if name == "To" && !value.contains(";tag=") && status > 100 {
                    format!("{value};tag={to_tag}")
                } else {
                    value.to_owned()
                };
                headers.push(name, value);
            }
        }
        Response {
            status,
            reason: reason.to_owned(),
            headers,
            body: Vec::new(),
        }
    }
}

impl Message {
    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 401 and a 200 as Kamailio 5.6.3 sent them, with
    /// `deploy/kamailio/kamailio.cfg` and `-A WITH_QOP`.
    const KAMAILIO_401: &str = "SIP/2.0 401 Unauthorized\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport=5070;received=127.0.0.1\r\n\
From: <sip:6001@127.0.0.1>;tag=1928301774\r\n\
To: <sip:6001@127.0.0.1>;tag=b27e1a1d33761e85846fc98f5f3a7e58.ee9c\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 1 REGISTER\r\n\
WWW-Authenticate: Digest realm=\"127.0.0.1\", nonce=\"awWlaGsFpDx0KhKdHHMU2rCT0vrSdPxa\", qop=\"auth\"\r\n\
Server: kamailio (5.6.3 (x86_64/linux))\r\n\
Content-Length: 0\r\n\r\n";

    const KAMAILIO_200: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:56688;branch=z9hG4bK2x;rport=56688;received=127.0.0.1\r\n\
From: <sip:6001@127.0.0.1>;tag=abc\r\n\
To: <sip:6001@127.0.0.1>;tag=bbeb98a33002e0aa5a51288885975990.24b58577\r\n\
Call-ID: cap1\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:6001@127.0.0.1:56688>;expires=60\r\n\
Server: kamailio (5.6.3 (x86_64/linux))\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn parses_a_kamailio_registration_answer() {
        let Ok(Message::Response(r)) = parse(KAMAILIO_200.as_bytes()) else {
            panic!("not a response");
        };
        assert_eq!(r.status, 200);
        let contacts = r.headers.contacts();
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts[0].uri, "sip:6001@127.0.0.1:56688");
        assert_eq!(contacts[0].expires(), Some(60));
        assert_eq!(
            r.headers.get("server"),
            Some("kamailio (5.6.3 (x86_64/linux))")
        );
        assert_eq!(parse(&r.to_bytes()), Ok(Message::Response(r)));
    }

    #[test]
    fn parses_a_kamailio_challenge() {
        let Ok(Message::Response(r)) = parse(KAMAILIO_401.as_bytes()) else {
            panic!("not a response");
        };
        assert_eq!((r.status, r.reason.as_str()), (401, "Unauthorized"));
        let via = r.headers.via().expect("via");
        assert_eq!(via.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(via.received(), Some("127.0.0.1"));
        assert_eq!(via.rport(), Some(Some(5070)));
        assert_eq!((via.host.as_str(), via.port), ("127.0.0.1", Some(5070)));
        assert_eq!(r.headers.cseq(), Some((1, "REGISTER")));
        assert_eq!(r.headers.call_id(), Some("a84b4c76e66710"));
        let to = r.headers.to().expect("to");
        assert_eq!(to.tag(), Some("b27e1a1d33761e85846fc98f5f3a7e58.ee9c"));
        assert_eq!(to.user(), Some("6001"));
        assert!(r.headers.get("www-authenticate").is_some());
        assert!(r.body.is_empty());
    }

    #[test]
    fn compact_forms_folding_lists_and_bodies() {
        let text = "INVITE sip:6001@hub SIP/2.0\r\n\
v: SIP/2.0/UDP a:1;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2\r\n\
V: SIP/2.0/UDP c:3;branch=z9hG4bK3\r\n\
i: abc\r\n\
f: \"Alice, A\" <sip:a@x>;tag=1\r\n\
t: sip:6001@hub\r\n\
m: <sip:a@1.2.3.4:5>;expires=60, <sip:b@x>\r\n\
Subject: a long\r\n  \t folded   value\r\n\
l: 4\r\n\r\nbodyEXTRA";
        let Ok(Message::Request(r)) = parse(text.as_bytes()) else {
            panic!("not a request");
        };
        assert_eq!(r.headers.list("via").len(), 3);
        assert_eq!(r.headers.via().and_then(|v| v.port), Some(1));
        assert_eq!(r.headers.call_id(), Some("abc"));
        assert_eq!(
            r.headers.from().and_then(|f| f.display),
            Some("Alice, A".to_owned())
        );
        assert_eq!(
            r.headers.to().map(|t| t.uri),
            Some("sip:6001@hub".to_owned())
        );
        let contacts = r.headers.contacts();
        assert_eq!(contacts.len(), 2);
        assert_eq!(contacts[0].expires(), Some(60));
        assert_eq!(r.headers.get("subject"), Some("a long folded   value"));
        assert_eq!(r.body, b"body");
    }

    #[test]
    fn round_trips() {
        for text in [
            KAMAILIO_401,
            "OPTIONS sip:x SIP/2.0\nVia: SIP/2.0/UDP h\nX:\n\nhello",
            "\r\n\r\nSIP/2.0 200 \r\nCSeq: 2 REGISTER\r\n\r\n",
        ] {
            let first = parse(text.as_bytes()).expect("parses");
            let again = parse(&first.to_bytes()).expect("parses again");
            assert_eq!(first, again, "{text:?}");
        }
    }

    #[test]
    fn refuses_garbage_with_typed_errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"", ParseError::Incomplete),
            (b"SIP/2.0 200 OK\r\n", ParseError::Incomplete),
            (
                b"SIP/2.0 20 OK\r\n\r\n",
                ParseError::StartLine("SIP/2.0 20 OK".into()),
            ),
            (
                b"SIP/2.0 700 OK\r\n\r\n",
                ParseError::StartLine("SIP/2.0 700 OK".into()),
            ),
            (
                b"REGISTER sip:x SIP/3.0\r\n\r\n",
                ParseError::StartLine("REGISTER sip:x SIP/3.0".into()),
            ),
            (
                b"SIP/2.0 200 OK\r\nNoColon\r\n\r\n",
                ParseError::HeaderLine("NoColon".into()),
            ),
            (
                b"SIP/2.0 200 OK\r\n folded first\r\n\r\n",
                ParseError::HeaderLine(" folded first".into()),
            ),
            (
                b"SIP/2.0 200 OK\r\nContent-Length: x\r\n\r\n",
                ParseError::ContentLength("x".into()),
            ),
            (
                b"SIP/2.0 200 OK\r\nl: 9\r\n\r\nabc",
                ParseError::Truncated {
                    expected: 9,
                    got: 3,
                },
            ),
            (b"SIP/2.0 200 \xff\r\n\r\n", ParseError::NotUtf8),
            (b"SIP/2.0 200 O\x00K\r\n\r\n", ParseError::ControlCharacter),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input).as_ref(), Err(expected), "{input:?}");
        }
        let many = format!("SIP/2.0 200 OK\r\n{}\r\n", "X: y\r\n".repeat(200));
        assert_eq!(
            parse(many.as_bytes()),
            Err(ParseError::TooManyHeaders { limit: 128 })
        );
        let big = vec![b'a'; 70_000];
        assert!(matches!(parse(&big), Err(ParseError::TooLarge { .. })));
    }

    #[test]
    fn frames_a_stream_by_content_length() {
        let limits = Limits::default();
        let one = b"SIP/2.0 200 OK\r\nl: 3\r\n\r\nabc";
        let mut stream = one.to_vec();
        stream.extend_from_slice(b"SIP/2.0 1");
        assert_eq!(frame(&stream, &limits), Ok(Some(one.len())));
        assert_eq!(frame(&one[..10], &limits), Ok(None));
        assert_eq!(frame(&one[..one.len() - 1], &limits), Ok(None));
    }

    #[test]
    fn answers_copy_the_transaction_headers() {
        let Ok(Message::Request(r)) = parse(
            b"OPTIONS sip:6001@h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:k@h>;tag=9\r\nTo: <sip:6001@h>\r\nCall-ID: c\r\nCSeq: 5 OPTIONS\r\n\r\n",
        ) else {
            panic!("request");
        };
        let answer = Response::to_request(&r, 200, "OK", "t1");
        assert_eq!(
            answer.headers.to().and_then(|t| t.tag().map(str::to_owned)),
            Some("t1".into())
        );
        assert_eq!(answer.headers.cseq(), Some((5, "OPTIONS")));
        assert_eq!(
            answer
                .headers
                .via()
                .and_then(|v| v.branch().map(str::to_owned)),
            Some("z9hG4bK1".into())
        );
    }

    /// A small deterministic mutation run of the fuzz target's invariant
    /// (the real one is `hubd/fuzz/fuzz_targets/sip_message.rs`).
    #[test]
    fn mutated_messages_never_panic_and_round_trip() {
        let seeds: [&[u8]; 3] = [
            KAMAILIO_401.as_bytes(),
            b"REGISTER sip:pbx SIP/2.0\r\nv: SIP/2.0/UDP h:5;branch=z9hG4bK1;rport\r\nf: <sip:6001@pbx>;tag=1\r\nt: <sip:6001@pbx>\r\ni: c\r\nCSeq: 1 REGISTER\r\nm: <sip:6001@h:5>;expires=60\r\nl: 0\r\n\r\n",
            b"INVITE sip:6001@h SIP/2.0\nSubject: a\n b\nContent-Type: application/sdp\nContent-Length: 5\n\nv=0\r\n",
        ];
        let alphabet = b"\r\n:;,<>\" \tvlmSIP/2.0 19aZ=@\x00\xff";
        let unlimited = Limits {
            max_message: usize::MAX,
            ..Limits::default()
        };
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut parsed = 0;
        for round in 0..6_000 {
            let mut bytes = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % (bytes.len() + 1);
                let byte = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => bytes[at] = byte,
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            let _ = frame(&bytes, &Limits::default());
            if let Ok(message) = parse(&bytes) {
                parsed += 1;
                let again = parse_with(&message.to_bytes(), &unlimited);
                assert_eq!(
                    again.as_ref(),
                    Ok(&message),
                    "{:?}",
                    String::from_utf8_lossy(&bytes)
                );
                let _ = (message.headers().via(), message.headers().contacts());
            }
        }
        assert!(
            parsed > 1_000,
            "the mutations keep many messages valid ({parsed})"
        );
    }
}
