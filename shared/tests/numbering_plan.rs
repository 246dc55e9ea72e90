//! The internal SIP numbering plan: parsing, classes, assignment, allocation
//! and serde.

use vss_shared::{NumberClass, NumberError, NumberingPlan, SipNumber, SlotKind};

const SERVICE: NumberClass = NumberClass::Service;
const AUTO: NumberClass = NumberClass::Slot(SlotKind::Auto);
const MF: NumberClass = NumberClass::Slot(SlotKind::Mf);
const LS: NumberClass = NumberClass::Slot(SlotKind::Ls);

fn num(s: &str) -> SipNumber {
    SipNumber::parse(s).unwrap()
}

/// Parses `input` and checks the outcome: its class, or the exact error.
fn check(input: &str, expect: Result<NumberClass, NumberError>) {
    let got = SipNumber::parse(input).map(|n| n.class());
    assert_eq!(got, expect, "parsing {input:?}");
    assert_eq!(input.parse::<SipNumber>().map(|n| n.class()), expect);
    if let Ok(n) = SipNumber::parse(input) {
        assert_eq!(n.to_string(), input, "Display of {input:?}");
        assert_eq!(n.get().to_string(), input);
    }
}

fn not_four_digits(input: &str) -> Result<NumberClass, NumberError> {
    Err(NumberError::NotFourDigits {
        input: input.to_owned(),
    })
}

#[test]
fn parse_rejects_malformed_text() {
    for input in [
        "",
        "600",
        "60011",
        "6a01",
        "+6001",
        " 6001",
        "6001 ",
        "６００１",
    ] {
        check(input, not_four_digits(input));
    }
}

#[test]
fn parse_rejects_numbers_outside_the_plan() {
    for number in [600, 2001, 3001, 4999, 5001, 9001, 9999] {
        check(
            &format!("{number:04}"),
            Err(NumberError::OutOfPlan { number }),
        );
    }
}

#[test]
fn parse_rejects_group_numbers() {
    for number in [1000, 6000, 7000, 8000] {
        check(&number.to_string(), Err(NumberError::Reserved { number }));
    }
}

#[test]
fn parse_classifies_valid_numbers() {
    check("1001", Ok(SERVICE));
    check("1999", Ok(SERVICE));
    check("6001", Ok(AUTO));
    check("6999", Ok(AUTO));
    check("7001", Ok(MF));
    check("7999", Ok(MF));
    check("8001", Ok(LS));
    check("8999", Ok(LS));
}

#[test]
fn new_validates_like_parse() {
    assert_eq!(SipNumber::new(6001), Ok(num("6001")));
    assert_eq!(
        SipNumber::new(6000),
        Err(NumberError::Reserved { number: 6000 })
    );
    assert_eq!(SipNumber::new(0), Err(NumberError::OutOfPlan { number: 0 }));
    assert_eq!(
        SipNumber::new(10001),
        Err(NumberError::OutOfPlan { number: 10001 })
    );
}

#[test]
fn classes_and_ranges() {
    assert_eq!(SERVICE.range(), 1001..=1999);
    assert_eq!(AUTO.range(), 6001..=6999);
    assert_eq!(MF.range(), 7001..=7999);
    assert_eq!(LS.range(), 8001..=8999);
    for kind in SlotKind::ALL {
        assert_eq!(NumberClass::of(kind), NumberClass::Slot(kind));
    }
    assert_eq!(NumberClass::ALL, [SERVICE, AUTO, MF, LS]);
}

#[test]
fn parse_error_messages() {
    let cases = [
        ("60a1", "SIP number \"60a1\" must be exactly four digits"),
        ("", "SIP number \"\" must be exactly four digits"),
        (
            "2001",
            "SIP number 2001 is outside the numbering plan \
             (services use 1xxx, AUTO slots 6xxx, MF slots 7xxx, LS slots 8xxx)",
        ),
        (
            "0600",
            "SIP number 0600 is outside the numbering plan \
             (services use 1xxx, AUTO slots 6xxx, MF slots 7xxx, LS slots 8xxx)",
        ),
        (
            "7000",
            "SIP number 7000 is reserved for its range's group/hunt number",
        ),
    ];
    for (input, message) in cases {
        assert_eq!(SipNumber::parse(input).unwrap_err().to_string(), message);
    }
}

#[test]
fn assign_and_look_up() {
    let mut plan = NumberingPlan::new();
    assert!(plan.is_empty());
    plan.assign(num("1001"), SERVICE, "IVR").unwrap();
    plan.assign(num("6003"), AUTO, "slot 3").unwrap();
    assert_eq!(plan.len(), 2);
    assert_eq!(plan.owner(num("1001")), Some("IVR"));
    assert_eq!(plan.owner(num("6003")), Some("slot 3"));
    assert_eq!(plan.owner(num("6004")), None);
}

#[test]
fn assign_rejects_a_taken_number() {
    let mut plan = NumberingPlan::new();
    plan.assign(num("6001"), AUTO, "slot 3").unwrap();
    let err = plan.assign(num("6001"), AUTO, "slot 4").unwrap_err();
    assert_eq!(
        err,
        NumberError::Collision {
            number: num("6001"),
            owner: "slot 3".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "SIP number 6001 is already taken by slot 3"
    );
    assert_eq!(plan.owner(num("6001")), Some("slot 3"));
    assert_eq!(plan.len(), 1);
}

#[test]
fn assign_rejects_every_wrong_range() {
    let samples = [
        (SERVICE, "1001"),
        (AUTO, "6001"),
        (MF, "7001"),
        (LS, "8001"),
    ];
    for (actual, number) in samples {
        for expected in NumberClass::ALL {
            let mut plan = NumberingPlan::new();
            let got = plan.assign(num(number), expected, "owner");
            if expected == actual {
                assert_eq!(got, Ok(()));
            } else {
                assert_eq!(
                    got,
                    Err(NumberError::WrongRange {
                        number: num(number),
                        expected,
                        actual
                    }),
                    "{number} assigned as {expected}"
                );
                assert!(plan.is_empty());
            }
        }
    }
}

#[test]
fn wrong_range_messages() {
    let mut plan = NumberingPlan::new();
    let cases = [
        (
            "7005",
            AUTO,
            "SIP number 7005 is an MF number, but this is an AUTO slot (AUTO slots use 6001–6999)",
        ),
        (
            "6001",
            SERVICE,
            "SIP number 6001 is an AUTO number, but this is a service (services use 1001–1999)",
        ),
        (
            "1001",
            LS,
            "SIP number 1001 is a service number, but this is an LS slot (LS slots use 8001–8999)",
        ),
    ];
    for (number, class, message) in cases {
        let err = plan.assign(num(number), class, "x").unwrap_err();
        assert_eq!(err.to_string(), message);
    }
}

#[test]
fn allocate_takes_the_lowest_free_number() {
    let mut plan = NumberingPlan::new();
    assert_eq!(plan.allocate(MF, "slot 1"), Ok(num("7001")));
    assert_eq!(plan.allocate(MF, "slot 2"), Ok(num("7002")));
    plan.assign(num("7004"), MF, "slot 4").unwrap();
    assert_eq!(plan.allocate(MF, "slot 3"), Ok(num("7003")));
    assert_eq!(plan.allocate(MF, "slot 5"), Ok(num("7005")));
    // Other classes are independent.
    assert_eq!(plan.allocate(AUTO, "slot 6"), Ok(num("6001")));
    assert_eq!(plan.allocate(SERVICE, "IVR"), Ok(num("1001")));
}

#[test]
fn allocate_fills_gaps_after_release() {
    let mut plan = NumberingPlan::new();
    for owner in ["a", "b", "c", "d"] {
        plan.allocate(LS, owner).unwrap();
    }
    assert!(plan.release(num("8002")));
    assert!(plan.release(num("8001")));
    assert!(!plan.release(num("8001")), "already free");
    assert_eq!(plan.allocate(LS, "e"), Ok(num("8001")));
    assert_eq!(plan.allocate(LS, "f"), Ok(num("8002")));
    assert_eq!(plan.allocate(LS, "g"), Ok(num("8005")));
    assert_eq!(plan.owner(num("8001")), Some("e"));
}

#[test]
fn allocate_exhausts_a_full_range() {
    let mut plan = NumberingPlan::new();
    for n in 1..=999 {
        let number = plan.allocate(AUTO, format!("slot {n}")).unwrap();
        assert_eq!(number.get(), 6000 + n);
    }
    let err = plan.allocate(AUTO, "slot 1000").unwrap_err();
    assert_eq!(err, NumberError::Exhausted { class: AUTO });
    assert_eq!(
        err.to_string(),
        "no free SIP number left for AUTO slots (6001–6999 are all taken)"
    );
    assert_eq!(plan.len(), 999);
    // The neighbouring range is untouched.
    assert_eq!(plan.allocate(MF, "slot 1000"), Ok(num("7001")));
    // A release makes room again.
    assert!(plan.release(num("6500")));
    assert_eq!(plan.allocate(AUTO, "slot 1001"), Ok(num("6500")));
}

#[test]
fn iter_is_in_number_order() {
    let mut plan = NumberingPlan::new();
    plan.assign(num("8001"), LS, "slot 9").unwrap();
    plan.assign(num("1001"), SERVICE, "IVR").unwrap();
    plan.assign(num("6002"), AUTO, "slot 2").unwrap();
    let all: Vec<_> = plan.iter().collect();
    assert_eq!(
        all,
        [
            (num("1001"), "IVR"),
            (num("6002"), "slot 2"),
            (num("8001"), "slot 9")
        ]
    );
}

#[test]
fn serde_is_a_validated_string() {
    let n = num("6001");
    assert_eq!(serde_json::to_string(&n).unwrap(), "\"6001\"");
    assert_eq!(serde_json::from_str::<SipNumber>("\"6001\"").unwrap(), n);
    let list: Vec<SipNumber> = serde_json::from_str(r#"["1001","7999"]"#).unwrap();
    assert_eq!(list, [num("1001"), num("7999")]);
    for bad in [
        r#""6000""#,
        r#""2001""#,
        r#""600""#,
        r#""+6001""#,
        r#""""#,
        "6001",
        "null",
    ] {
        assert!(
            serde_json::from_str::<SipNumber>(bad).is_err(),
            "accepted {bad}"
        );
    }
    let err = serde_json::from_str::<SipNumber>(r#""6000""#).unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
}
