//! SMS PDUs and USSD strings at the `pdu` module's public boundary, checked
//! against known vectors (23.040 literature's "hellohello") and against PDUs
//! built here field by field.

use hubd::device::at_modem::pdu::address::NumberKind;
use hubd::device::at_modem::pdu::deliver::{self, DeliverOptions};
use hubd::device::at_modem::pdu::timestamp::Timestamp;
use hubd::device::at_modem::pdu::ussd::{self, UssdCharset};
use hubd::device::at_modem::pdu::{Alphabet, PduError, PduPart, SubmitOptions, submit};
use hubd::device::at_modem::replies;

const HELLOHELLO_SUBMIT: &str = "0011000B916407281553F80000AA0AE8329BFD4697D9EC37";
const HELLOHELLO_DELIVER: &str =
    "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37";

fn ts(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8, quarters: i8) -> Timestamp {
    Timestamp {
        year,
        month,
        day,
        hour,
        minute,
        second,
        utc_offset_quarters: quarters,
    }
}

#[test]
fn hellohello_submit_matches_the_classic_vector() {
    let parts =
        submit::encode("+46708251358", "hellohello", &SubmitOptions::default()).expect("encodes");
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].hex(), HELLOHELLO_SUBMIT);
    assert_eq!(parts[0].tpdu_len(), 23, "AT+CMGS=23, as in the literature");

    let decoded = submit::decode(HELLOHELLO_SUBMIT).expect("decodes");
    assert_eq!(decoded.smsc, None);
    assert_eq!(decoded.destination.text, "+46708251358");
    assert_eq!(decoded.destination.kind(), NumberKind::International);
    assert_eq!(decoded.validity, Some(0xAA));
    assert_eq!(decoded.dcs, 0x00);
    assert_eq!(decoded.text().as_deref(), Some("hellohello"));
    assert_eq!(
        PduPart::from_hex(23, HELLOHELLO_SUBMIT).map(|p| p.tpdu_len()),
        Ok(23)
    );
    assert!(PduPart::from_hex(22, HELLOHELLO_SUBMIT).is_err());
}

#[test]
fn hellohello_deliver_decodes_field_by_field() {
    let sms = deliver::decode(HELLOHELLO_DELIVER).expect("decodes");
    let smsc = sms.smsc.as_ref().expect("an SMSC prefix");
    assert_eq!(smsc.text, "+27381000015");
    assert_eq!(smsc.type_of_address, 0x91);
    assert_eq!(sms.sender.text, "27838890001");
    assert_eq!(sms.sender.type_of_address, 0xC8);
    assert_eq!(sms.protocol_id, 0);
    assert_eq!(sms.dcs, 0);
    assert_eq!(sms.timestamp, ts(1999, 3, 29, 15, 16, 59, 8));
    assert_eq!(sms.timestamp.to_string(), "1999-03-29T15:16:59+02:00");
    assert_eq!(sms.header, None);
    assert_eq!(sms.text().as_deref(), Some("hellohello"));
    // The emulator's encoder produces the same bytes (its sender is a
    // plain number, so only the type of address differs: 0x81, not 0xC8).
    let options = DeliverOptions {
        smsc: Some("+27381000015".to_owned()),
        timestamp: sms.timestamp,
        reference: 0,
    };
    let parts = deliver::encode("27838890001", "hellohello", &options).expect("encodes");
    assert_eq!(parts[0].hex(), HELLOHELLO_DELIVER.replace("0BC8", "0B81"));
    assert_eq!(parts[0].tpdu_len(), 28);
}

#[test]
fn ucs2_deliver_from_an_alphanumeric_sender_built_field_by_field() {
    let pdu = [
        "07",             // SMSC length: 7 octets
        "91",             // SMSC type: international
        "9721960099F0",   // +79126900990, swapped semi-octets
        "04",             // SMS-DELIVER, no more messages
        "0D",             // sender: 13 semi-octets of packed text
        "D0",             // alphanumeric
        "CDF2396C7CBB01", // "MegaFon" packed GSM 7-bit
        "00",             // TP-PID
        "08",             // TP-DCS: UCS-2
        "42106190417021", // 2024-01-16 09:14:07 +03:00
        "20",             // TP-UDL: 32 octets
        "0411",
        "0430",
        "043B",
        "0430",
        "043D",
        "0441", // Баланс
        "003A",
        "0020", // ": "
        "0031",
        "0030",
        "0030", // 100
        "0020", // " "
        "0440",
        "0443",
        "0431",
        "002E", // руб.
    ]
    .concat();
    let sms = deliver::decode(&pdu).expect("decodes");
    assert_eq!(
        sms.smsc.as_ref().map(|a| a.text.as_str()),
        Some("+79126900990")
    );
    assert_eq!(sms.sender.text, "MegaFon");
    assert_eq!(sms.sender.kind(), NumberKind::Alphanumeric);
    assert_eq!(sms.dcs, 0x08);
    assert_eq!(sms.timestamp.to_string(), "2024-01-16T09:14:07+03:00");
    assert_eq!(sms.timestamp.utc_offset_minutes(), 180);
    assert_eq!(sms.text().as_deref(), Some("Баланс: 100 руб."));

    // The emulator's encoder builds exactly this PDU.
    let options = DeliverOptions {
        smsc: Some("+79126900990".to_owned()),
        timestamp: ts(2024, 1, 16, 9, 14, 7, 12),
        reference: 0,
    };
    let parts = deliver::encode("MegaFon", "Баланс: 100 руб.", &options).expect("encodes");
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].hex(), pdu);
}

#[test]
fn ucs2_submit_with_an_emoji_field_by_field() {
    let parts =
        submit::encode("+79161234567", "Привет 😀", &SubmitOptions::default()).expect("encodes");
    let expect = [
        "00", // SIM's SMSC
        "11", // SMS-SUBMIT, relative validity
        "00", // TP-MR
        "0B",
        "91",
        "9761214365F7",             // +79161234567
        "00",                       // TP-PID
        "08",                       // TP-DCS: UCS-2
        "AA",                       // 4 days
        "12",                       // 18 octets
        "041F04400438043204350442", // Привет
        "0020",                     // " "
        "D83DDE00",                 // 😀 as a surrogate pair
    ]
    .concat();
    assert_eq!(parts[0].hex(), expect);
    assert_eq!(parts[0].tpdu_len(), expect.len() / 2 - 1);
    let decoded = submit::decode(&expect).expect("decodes");
    assert_eq!(decoded.text().as_deref(), Some("Привет 😀"));
}

#[test]
fn national_destination_and_status_report() {
    let options = SubmitOptions {
        validity: None,
        status_report: true,
        reference: 0,
    };
    let parts = submit::encode("89161234567", "a", &options).expect("encodes");
    // 0x21: SUBMIT, no validity, status report requested; TOA 0x81.
    assert_eq!(parts[0].hex(), "0021000B819861214365F700000161");
    let decoded = submit::decode(parts[0].hex()).expect("decodes");
    assert!(decoded.status_report);
    assert_eq!(decoded.validity, None);
    assert_eq!(decoded.destination.kind(), NumberKind::Unknown);
    assert_eq!(
        submit::encode("+7 916", "a", &options),
        Err(PduError::BadAddress(
            "\"+7 916\" is not an optional + and 1 to 20 digits".to_owned()
        ))
    );
}

#[test]
fn long_texts_are_concatenated_and_reassemble() {
    let options = DeliverOptions {
        smsc: None,
        timestamp: ts(2024, 1, 16, 9, 14, 7, 12),
        reference: 0x42,
    };
    let cases = [
        ("a".repeat(300), Alphabet::Gsm7, 2),
        (
            format!("{}€", "x".repeat(152)) + &"y".repeat(10),
            Alphabet::Gsm7,
            2,
        ),
        ("Баланс: 100 руб. ".repeat(10), Alphabet::Ucs2, 3),
        (format!("{}😀 конец", "Ж".repeat(66)), Alphabet::Ucs2, 2),
    ];
    for (text, alphabet, count) in cases {
        let parts = deliver::encode("+79161234567", &text, &options).expect("encodes");
        assert_eq!(parts.len(), count, "{text}");
        let mut decoded: Vec<_> = parts
            .iter()
            .map(|p| deliver::decode(p.hex()).expect("each part decodes"))
            .collect();
        for (i, sms) in decoded.iter().enumerate() {
            let concat = sms.concat().expect("a concatenation header");
            assert_eq!(
                (concat.reference, concat.total, usize::from(concat.sequence)),
                (0x42, count as u8, i + 1)
            );
            assert!(sms.payload.text().is_some());
            assert_eq!(
                matches!(sms.payload, hubd::device::at_modem::pdu::Payload::Ucs2(_)),
                alphabet == Alphabet::Ucs2
            );
        }
        decoded.reverse();
        let refs: Vec<_> = decoded.iter().collect();
        let joined = deliver::reassemble(&refs).expect("reassembles").text();
        assert_eq!(joined.as_deref(), Some(text.as_str()));
        // Missing or duplicated parts are refused.
        assert!(deliver::reassemble(&refs[1..]).is_err());
        let mut twice = refs.clone();
        twice[0] = refs[1];
        assert_eq!(
            deliver::reassemble(&twice),
            Err(PduError::Reassembly("a sequence number appears twice"))
        );

        // The submit side splits the same way.
        let submits =
            submit::encode("+79161234567", &text, &SubmitOptions::default()).expect("encodes");
        let texts: String = submits
            .iter()
            .map(|p| {
                submit::decode(p.hex())
                    .expect("decodes")
                    .text()
                    .expect("text")
            })
            .collect();
        assert_eq!(texts, text);
        assert!(
            submits.iter().all(|p| p.hex().starts_with("0051")),
            "UDHI set on every part"
        );
    }
}

/// Malformed SMS-DELIVER input gives typed errors.
#[test]
fn malformed_deliver_pdus_are_typed_errors() {
    let good_head = "00040B819861214365F7"; // no SMSC, DELIVER, sender 89161234567
    let check = |pdu: &str, expect: PduError| {
        assert_eq!(deliver::decode(pdu).map(|s| s.text()), Err(expect), "{pdu}");
    };
    check("", PduError::Truncated("SMSC address"));
    check("0", PduError::OddHexLength(1));
    check("0X", PduError::NotHex(1));
    check("00", PduError::Truncated("first octet"));
    check(
        "0C91",
        PduError::BadAddress("SMSC address: 12 octets".to_owned()),
    );
    check(
        HELLOHELLO_SUBMIT,
        PduError::WrongType {
            expected: "SMS-DELIVER",
            mti: 1,
        },
    );
    check("00040B8198612143", PduError::Truncated("TP-OA"));
    check(&format!("{good_head}0000"), PduError::Truncated("TP-SCTS"));
    check(
        &format!("{good_head}00004A106190417021"),
        PduError::BadTimestamp("year octet 0x4A is not decimal".to_owned()),
    );
    check(
        &format!("{good_head}000042106190417021"),
        PduError::Truncated("TP-UDL"),
    );
    check(
        &format!("{good_head}0000421061904170210AE832"),
        PduError::Truncated("TP-UD"),
    );
    check(
        &format!("{good_head}0020421061904170210161"),
        PduError::Compressed(0x20),
    );
    check(
        &format!("{good_head}000842106190417021030411AB"),
        PduError::OddUcs2(3),
    );
    check(
        "00440B819861214365F70008421061904170210405000304",
        PduError::BadUdh("header longer than the user data"),
    );
    check(
        "00440B819861214365F700084210619041702104030004FF",
        PduError::BadUdh("element runs past the header"),
    );
}

#[test]
fn ussd_end_to_end() {
    assert_eq!(ussd::encode_request("*100#").as_deref(), Ok("AA180C3602"));
    // A Huawei answer in UCS-2 (DCS 72), as a +CUSD line.
    let line = "+CUSD: 0,\"04110430043B0430043D0441003A00200031003000300020044004430431002E\",72";
    let reply = replies::parse_cusd(line).expect("parses");
    let text = ussd::decode_reply(
        reply.text.as_deref().unwrap_or(""),
        reply.dcs,
        UssdCharset::PackedPerDcs,
    );
    assert_eq!(text.as_deref(), Ok("Баланс: 100 руб."));
    // A packed GSM 7-bit answer (DCS 15).
    let packed = ussd::encode_request("Balance: 100.00 RUB").expect("encodes");
    let line = format!("+CUSD: 0,\"{packed}\",15");
    let reply = replies::parse_cusd(&line).expect("parses");
    let text = ussd::decode_reply(
        reply.text.as_deref().unwrap_or(""),
        reply.dcs,
        UssdCharset::Auto,
    );
    assert_eq!(text.as_deref(), Ok("Balance: 100.00 RUB"));
}
