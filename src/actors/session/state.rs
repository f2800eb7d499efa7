//! The life of a session as a pure state machine; the actor applies it and does the I/O.

/// The states are the domain's; the transitions between them are this module's.
pub use crate::domain::session::SessionState as State;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The actor started and is bringing up its room.
    Start,
    /// The room is up: the session is live and billed.
    RoomReady,
    /// Something asked it to end (API, timers, balance, room closed, shutdown).
    Stop,
    /// Everything it held has been released.
    Released,
    /// It cannot go on (room creation failed, children past their restart bound).
    Fail,
}

#[derive(Debug, PartialEq, Eq)]
pub struct InvalidTransition {
    pub from: State,
    pub event: Event,
}

impl State {
    pub fn next(self, event: Event) -> Result<State, InvalidTransition> {
        use {Event as E, State as S};
        match (self, event) {
            (S::Queued, E::Start) => Ok(S::Starting),
            (S::Starting, E::RoomReady) => Ok(S::Live),
            (S::Queued | S::Starting | S::Live, E::Stop) => Ok(S::Stopping),
            (S::Stopping, E::Released) => Ok(S::Stopped),
            (S::Queued | S::Starting | S::Live | S::Stopping, E::Fail) => Ok(S::Failed),
            (from, event) => Err(InvalidTransition { from, event }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Event as E, State as S};

    #[test]
    fn happy_path() {
        let s = S::Queued.next(E::Start).unwrap();
        assert_eq!(s, S::Starting);
        let s = s.next(E::RoomReady).unwrap();
        assert_eq!(s, S::Live);
        let s = s.next(E::Stop).unwrap();
        assert_eq!(s, S::Stopping);
        assert_eq!(s.next(E::Released).unwrap(), S::Stopped);
    }

    #[test]
    fn every_non_terminal_state_can_stop_or_fail() {
        for s in [S::Queued, S::Starting, S::Live] {
            assert_eq!(s.next(E::Stop).unwrap(), S::Stopping);
        }
        for s in [S::Queued, S::Starting, S::Live, S::Stopping] {
            assert_eq!(s.next(E::Fail).unwrap(), S::Failed);
        }
    }

    #[test]
    fn terminal_states_accept_nothing() {
        for s in [S::Stopped, S::Failed] {
            assert!(s.is_terminal());
            for e in [E::Start, E::RoomReady, E::Stop, E::Released, E::Fail] {
                assert!(s.next(e).is_err(), "{s:?} {e:?}");
            }
        }
    }

    #[test]
    fn out_of_order_events_are_refused() {
        assert!(S::Queued.next(E::RoomReady).is_err());
        assert!(S::Live.next(E::Start).is_err());
        assert!(S::Live.next(E::Released).is_err());
        assert!(S::Stopping.next(E::Stop).is_err());
        assert_eq!(S::Live.to_string(), "live");
    }
}
