//! The slot state machine, checked against its full table written out by hand:
//! every state × every event kind.

use std::collections::HashSet;

use vss_shared::{
    CallDirection, InvalidTransition, SlotAction, SlotEvent, SlotEventKind as E, SlotState as S,
    SlotStatus, Transition, slot_fsm::transition,
};

/// The reason carried by the sample `Failed` event.
const REASON: &str = "boom";

/// An expected action; `Alert` stands for `RaiseAlert { reason: REASON }`.
#[derive(Debug, Clone, Copy)]
enum A {
    Register,
    HangUp,
    WriteCdr,
    ReleaseDevice,
    Alert,
}

impl A {
    fn action(self) -> SlotAction {
        match self {
            A::Register => SlotAction::Register,
            A::HangUp => SlotAction::HangUp,
            A::WriteCdr => SlotAction::WriteCdr,
            A::ReleaseDevice => SlotAction::ReleaseDevice,
            A::Alert => SlotAction::RaiseAlert {
                reason: REASON.to_owned(),
            },
        }
    }
}

type Row = (S, E, Option<(S, &'static [A])>);

const FAULTED_IN_CALL: &[A] = &[A::HangUp, A::WriteCdr, A::ReleaseDevice, A::Alert];

#[rustfmt::skip]
const EXPECTED: [Row; 88] = [
    (S::Idle, E::DeviceBound,         Some((S::Assigned, &[]))),
    (S::Idle, E::RegistrationStarted, None),
    (S::Idle, E::Registered,          None),
    (S::Idle, E::RegistrationLost,    None),
    (S::Idle, E::CallStarted,         None),
    (S::Idle, E::CallAnswered,        None),
    (S::Idle, E::CallEnded,           None),
    (S::Idle, E::WrapUpDone,          None),
    (S::Idle, E::Released,            None),
    (S::Idle, E::Failed,              Some((S::Fault, &[A::Alert]))),
    (S::Idle, E::Recovered,           None),

    (S::Assigned, E::DeviceBound,         None),
    (S::Assigned, E::RegistrationStarted, Some((S::Registering, &[A::Register]))),
    (S::Assigned, E::Registered,          None),
    (S::Assigned, E::RegistrationLost,    None),
    (S::Assigned, E::CallStarted,         None),
    (S::Assigned, E::CallAnswered,        None),
    (S::Assigned, E::CallEnded,           None),
    (S::Assigned, E::WrapUpDone,          None),
    (S::Assigned, E::Released,            Some((S::Idle, &[A::ReleaseDevice]))),
    (S::Assigned, E::Failed,              Some((S::Fault, &[A::ReleaseDevice, A::Alert]))),
    (S::Assigned, E::Recovered,           None),

    (S::Registering, E::DeviceBound,         None),
    (S::Registering, E::RegistrationStarted, None),
    (S::Registering, E::Registered,          Some((S::Ready, &[]))),
    (S::Registering, E::RegistrationLost,    None),
    (S::Registering, E::CallStarted,         None),
    (S::Registering, E::CallAnswered,        None),
    (S::Registering, E::CallEnded,           None),
    (S::Registering, E::WrapUpDone,          None),
    (S::Registering, E::Released,            Some((S::Idle, &[A::ReleaseDevice]))),
    (S::Registering, E::Failed,              Some((S::Fault, &[A::ReleaseDevice, A::Alert]))),
    (S::Registering, E::Recovered,           None),

    (S::Ready, E::DeviceBound,         None),
    (S::Ready, E::RegistrationStarted, None),
    (S::Ready, E::Registered,          None),
    (S::Ready, E::RegistrationLost,    Some((S::Registering, &[A::Register]))),
    (S::Ready, E::CallStarted,         Some((S::Calling, &[]))),
    (S::Ready, E::CallAnswered,        None),
    (S::Ready, E::CallEnded,           None),
    (S::Ready, E::WrapUpDone,          None),
    (S::Ready, E::Released,            Some((S::Idle, &[A::ReleaseDevice]))),
    (S::Ready, E::Failed,              Some((S::Fault, &[A::ReleaseDevice, A::Alert]))),
    (S::Ready, E::Recovered,           None),

    (S::Calling, E::DeviceBound,         None),
    (S::Calling, E::RegistrationStarted, None),
    (S::Calling, E::Registered,          None),
    (S::Calling, E::RegistrationLost,    None),
    (S::Calling, E::CallStarted,         None),
    (S::Calling, E::CallAnswered,        Some((S::ActiveCall, &[]))),
    (S::Calling, E::CallEnded,           Some((S::PostCall, &[A::WriteCdr]))),
    (S::Calling, E::WrapUpDone,          None),
    (S::Calling, E::Released,            Some((S::Idle, &[A::HangUp, A::WriteCdr, A::ReleaseDevice]))),
    (S::Calling, E::Failed,              Some((S::Fault, FAULTED_IN_CALL))),
    (S::Calling, E::Recovered,           None),

    (S::ActiveCall, E::DeviceBound,         None),
    (S::ActiveCall, E::RegistrationStarted, None),
    (S::ActiveCall, E::Registered,          None),
    (S::ActiveCall, E::RegistrationLost,    None),
    (S::ActiveCall, E::CallStarted,         None),
    (S::ActiveCall, E::CallAnswered,        None),
    (S::ActiveCall, E::CallEnded,           Some((S::PostCall, &[A::WriteCdr]))),
    (S::ActiveCall, E::WrapUpDone,          None),
    (S::ActiveCall, E::Released,            Some((S::Idle, &[A::HangUp, A::WriteCdr, A::ReleaseDevice]))),
    (S::ActiveCall, E::Failed,              Some((S::Fault, FAULTED_IN_CALL))),
    (S::ActiveCall, E::Recovered,           None),

    (S::PostCall, E::DeviceBound,         None),
    (S::PostCall, E::RegistrationStarted, None),
    (S::PostCall, E::Registered,          None),
    (S::PostCall, E::RegistrationLost,    Some((S::Registering, &[A::Register]))),
    (S::PostCall, E::CallStarted,         None),
    (S::PostCall, E::CallAnswered,        None),
    (S::PostCall, E::CallEnded,           None),
    (S::PostCall, E::WrapUpDone,          Some((S::Ready, &[]))),
    (S::PostCall, E::Released,            Some((S::Idle, &[A::ReleaseDevice]))),
    (S::PostCall, E::Failed,              Some((S::Fault, &[A::ReleaseDevice, A::Alert]))),
    (S::PostCall, E::Recovered,           None),

    (S::Fault, E::DeviceBound,         None),
    (S::Fault, E::RegistrationStarted, None),
    (S::Fault, E::Registered,          None),
    (S::Fault, E::RegistrationLost,    None),
    (S::Fault, E::CallStarted,         None),
    (S::Fault, E::CallAnswered,        None),
    (S::Fault, E::CallEnded,           None),
    (S::Fault, E::WrapUpDone,          None),
    (S::Fault, E::Released,            None),
    (S::Fault, E::Failed,              Some((S::Fault, &[]))),
    (S::Fault, E::Recovered,           Some((S::Idle, &[]))),
];

/// Sample events of `kind`: both directions for `CallStarted`, reason
/// [`REASON`] for `Failed`.
fn samples(kind: E) -> Vec<SlotEvent> {
    match kind {
        E::DeviceBound => vec![SlotEvent::DeviceBound],
        E::RegistrationStarted => vec![SlotEvent::RegistrationStarted],
        E::Registered => vec![SlotEvent::Registered],
        E::RegistrationLost => vec![SlotEvent::RegistrationLost],
        E::CallStarted => vec![
            SlotEvent::CallStarted {
                direction: CallDirection::Outbound,
            },
            SlotEvent::CallStarted {
                direction: CallDirection::Inbound,
            },
        ],
        E::CallAnswered => vec![SlotEvent::CallAnswered],
        E::CallEnded => vec![SlotEvent::CallEnded],
        E::WrapUpDone => vec![SlotEvent::WrapUpDone],
        E::Released => vec![SlotEvent::Released],
        E::Failed => vec![SlotEvent::Failed {
            reason: REASON.to_owned(),
        }],
        E::Recovered => vec![SlotEvent::Recovered],
    }
}

#[test]
fn table_has_88_distinct_pairs() {
    let pairs: HashSet<(S, E)> = EXPECTED.iter().map(|(s, e, _)| (*s, *e)).collect();
    assert_eq!(pairs.len(), 88);
    let all: HashSet<(S, E)> = S::ALL
        .into_iter()
        .flat_map(|s| E::ALL.into_iter().map(move |e| (s, e)))
        .collect();
    assert_eq!(all, pairs, "ALL × ALL must be exactly the table's pairs");
}

#[test]
fn every_state_and_event_follows_the_table() {
    let mut checked = 0;
    for state in S::ALL {
        for kind in E::ALL {
            let (_, _, expected) = EXPECTED
                .iter()
                .find(|(s, e, _)| (*s, *e) == (state, kind))
                .unwrap_or_else(|| panic!("no row for {state} × {kind}"));
            let expected = match expected {
                Some((to, actions)) => Ok(Transition {
                    from: state,
                    to: *to,
                    actions: actions.iter().map(|a| a.action()).collect(),
                }),
                None => Err(InvalidTransition { state, event: kind }),
            };
            for event in samples(kind) {
                assert_eq!(event.kind(), kind);
                assert_eq!(transition(state, &event), expected, "{state} + {event:?}");
                checked += 1;
            }
        }
    }
    // 88 pairs, plus a second direction for CALL_STARTED in each of 8 states.
    assert_eq!(checked, 96);
}

#[test]
fn alert_carries_the_failure_reason() {
    let event = SlotEvent::Failed {
        reason: "modem vanished from USB".to_owned(),
    };
    let t = transition(S::ActiveCall, &event).unwrap();
    assert_eq!(
        t.actions.last(),
        Some(&SlotAction::RaiseAlert {
            reason: "modem vanished from USB".to_owned()
        })
    );
}

#[test]
fn happy_path() {
    let steps = [
        (SlotEvent::DeviceBound, S::Assigned),
        (SlotEvent::RegistrationStarted, S::Registering),
        (SlotEvent::Registered, S::Ready),
        (
            SlotEvent::CallStarted {
                direction: CallDirection::Outbound,
            },
            S::Calling,
        ),
        (SlotEvent::CallAnswered, S::ActiveCall),
        (SlotEvent::CallEnded, S::PostCall),
        (SlotEvent::WrapUpDone, S::Ready),
    ];
    let mut state = S::Idle;
    for (event, to) in steps {
        let t = transition(state, &event).unwrap();
        assert_eq!((t.from, t.to), (state, to), "{event:?}");
        state = t.to;
    }
    assert_eq!(state.status(), SlotStatus::Free);
}

#[test]
fn state_names() {
    let names = [
        (S::Idle, "IDLE"),
        (S::Assigned, "ASSIGNED"),
        (S::Registering, "REGISTERING"),
        (S::Ready, "READY"),
        (S::Calling, "CALLING"),
        (S::ActiveCall, "ACTIVE_CALL"),
        (S::PostCall, "POSTCALL"),
        (S::Fault, "FAULT"),
    ];
    assert_eq!(names.map(|(s, _)| s), S::ALL);
    for (state, name) in names {
        assert_eq!(state.as_str(), name);
        assert_eq!(state.to_string(), name);
        assert_eq!(name.parse::<S>(), Ok(state));
        let json = format!("\"{name}\"");
        assert_eq!(serde_json::to_string(&state).unwrap(), json);
        assert_eq!(serde_json::from_str::<S>(&json).unwrap(), state);
    }
    for bad in ["", "idle", "ActiveCall", "POST_CALL", "ACTIVE CALL"] {
        assert!(bad.parse::<S>().is_err(), "accepted {bad:?}");
    }
    assert_eq!(
        "POST_CALL".parse::<S>().unwrap_err().to_string(),
        "unknown slot state \"POST_CALL\"; expected one of IDLE, ASSIGNED, REGISTERING, \
         READY, CALLING, ACTIVE_CALL, POSTCALL, FAULT"
    );
}

#[test]
fn status_of_every_state() {
    let statuses = [
        (S::Idle, SlotStatus::Offline),
        (S::Assigned, SlotStatus::Offline),
        (S::Registering, SlotStatus::Offline),
        (S::Ready, SlotStatus::Free),
        (S::Calling, SlotStatus::Busy),
        (S::ActiveCall, SlotStatus::Busy),
        (S::PostCall, SlotStatus::Busy),
        (S::Fault, SlotStatus::Fault),
    ];
    assert_eq!(statuses.map(|(s, _)| s), S::ALL);
    for (state, status) in statuses {
        assert_eq!(state.status(), status, "{state}");
        assert_eq!(state.in_call(), matches!(state, S::Calling | S::ActiveCall));
    }
    for (status, name) in [
        (SlotStatus::Free, "free"),
        (SlotStatus::Busy, "busy"),
        (SlotStatus::Offline, "offline"),
        (SlotStatus::Fault, "fault"),
    ] {
        assert_eq!(status.as_str(), name);
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            format!("\"{name}\"")
        );
    }
}

#[test]
fn invalid_transition_message() {
    let err = transition(S::Ready, &SlotEvent::DeviceBound).unwrap_err();
    assert_eq!(
        err,
        InvalidTransition {
            state: S::Ready,
            event: E::DeviceBound
        }
    );
    assert_eq!(
        err.to_string(),
        "event device_bound is not valid in state READY"
    );
}

#[test]
fn event_kind_names_match_serde() {
    for kind in E::ALL {
        let json = format!("\"{}\"", kind.as_str());
        assert_eq!(serde_json::to_string(&kind).unwrap(), json);
        assert_eq!(kind.to_string(), kind.as_str());
    }
    assert_eq!(E::WrapUpDone.as_str(), "wrap_up_done");
}

#[test]
fn events_and_actions_serialize_with_a_kind_tag() {
    let event = SlotEvent::CallStarted {
        direction: CallDirection::Inbound,
    };
    let json = serde_json::to_string(&event).unwrap();
    assert_eq!(json, r#"{"kind":"call_started","direction":"inbound"}"#);
    assert_eq!(serde_json::from_str::<SlotEvent>(&json).unwrap(), event);
    assert_eq!(
        serde_json::to_string(&SlotEvent::WrapUpDone).unwrap(),
        r#"{"kind":"wrap_up_done"}"#
    );
    let alert = SlotAction::RaiseAlert {
        reason: REASON.to_owned(),
    };
    let json = serde_json::to_string(&alert).unwrap();
    assert_eq!(json, r#"{"kind":"raise_alert","reason":"boom"}"#);
    assert_eq!(serde_json::from_str::<SlotAction>(&json).unwrap(), alert);
    assert_eq!(
        serde_json::to_string(&SlotAction::WriteCdr).unwrap(),
        r#"{"kind":"write_cdr"}"#
    );
}
