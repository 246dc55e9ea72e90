//! Arbitrary bytes through the SIP parser and everything that reads a
//! parsed message: never panics, and what parses serialises back to bytes
//! that parse to the same message (the invariant of `hubd::sip::message`).
//! The same bytes go through the stream framer and the digest challenge
//! parser too.

#![no_main]

use hubd::sip::auth::{Challenge, ChallengeKind};
use hubd::sip::message::{self, Limits, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let _ = message::frame(data, &limits);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Challenge::parse(ChallengeKind::Www, text);
        let _ = message::split_list(text);
    }
    let Ok(parsed) = message::parse_with(data, &limits) else {
        return;
    };
    // Serialising may lengthen a message (compact names expanded,
    // Content-Length added): the second parse has no size limit.
    let unlimited = Limits {
        max_message: usize::MAX,
        ..limits
    };
    let bytes = parsed.to_bytes();
    let again = message::parse_with(&bytes, &unlimited)
        .unwrap_or_else(|e| panic!("serialised message does not parse: {e}: {bytes:?}"));
    assert_eq!(parsed, again, "round trip changed the message");
    assert_eq!(message::frame(&bytes, &unlimited), Ok(Some(bytes.len())));

    let headers = parsed.headers();
    let _ = headers.via();
    let _ = headers.from();
    let _ = headers.to();
    let _ = headers.cseq();
    let _ = headers.contacts();
    let _ = headers.seconds("Expires");
    for value in headers.get_all("WWW-Authenticate") {
        let _ = Challenge::parse(ChallengeKind::Www, value);
    }
    if let Message::Request(request) = &parsed {
        let _ = message::uri_user(&request.uri);
        let _ = message::Response::to_request(request, 200, "OK", "t").to_bytes();
    }
});
