//! The PSYNC decision of `masterTryPartialResynchronization()` (PROTOCOL §4.2), made against the
//! store's identity and range instead of an in-memory backlog.

use crate::store::State;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `+CONTINUE`: stream from the requested offset.
    Continue,
    /// `+FULLRESYNC`: the snapshot, then the log after it. The reason is logged.
    Full(String),
    /// No snapshot in service: the replica must try again later.
    NoMasterLink,
}

/// `request` is `(replid, offset)` from PSYNC, or `None` for the legacy SYNC.
pub fn decide(state: &State, request: Option<(&str, i64)>) -> Decision {
    let Some(ident) = &state.ident else {
        return Decision::NoMasterLink;
    };
    let Some((replid, offset)) = request else {
        return Decision::Full("legacy SYNC".into());
    };
    if replid == "?" {
        return Decision::Full("full resync requested by replica".into());
    }
    let same_history = replid.eq_ignore_ascii_case(&ident.replid)
        || (replid.eq_ignore_ascii_case(&ident.replid2) && offset <= ident.second_replid_offset);
    if !same_history {
        return Decision::Full(format!(
            "Replication ID mismatch (replica asked for '{replid}', my replication IDs are '{}' and '{}')",
            ident.replid, ident.replid2
        ));
    }
    if offset < state.first as i64 || offset > state.next as i64 {
        return Decision::Full(format!(
            "lack of backlog (replica request was: {offset}, backlog is {}..{})",
            state.first, state.next
        ));
    }
    Decision::Continue
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Identity, NULL_REPLID};

    fn state() -> State {
        let mut s = State::default();
        s.ident = Some(Identity {
            replid: "b".repeat(40),
            replid2: "a".repeat(40),
            second_replid_offset: 500,
            snapshot: "x.rdb".into(),
            snapshot_offset: 99,
            snapshot_size: 10,
        });
        (s.first, s.next) = (100, 1000);
        s
    }

    #[test]
    fn continues_within_the_range_of_either_id() {
        let s = state();
        assert_eq!(decide(&s, Some((&"b".repeat(40), 100))), Decision::Continue);
        assert_eq!(
            decide(&s, Some((&"B".repeat(40), 1000))),
            Decision::Continue
        );
        assert_eq!(decide(&s, Some((&"a".repeat(40), 500))), Decision::Continue);
    }

    #[test]
    fn full_sync_outside_range_or_history() {
        let s = state();
        assert!(matches!(
            decide(&s, Some((&"b".repeat(40), 99))),
            Decision::Full(_)
        ));
        assert!(matches!(
            decide(&s, Some((&"b".repeat(40), 1001))),
            Decision::Full(_)
        ));
        assert!(matches!(
            decide(&s, Some((&"a".repeat(40), 501))),
            Decision::Full(_)
        ));
        assert!(matches!(
            decide(&s, Some((NULL_REPLID, 100))),
            Decision::Full(_)
        ));
        assert!(matches!(decide(&s, Some(("?", -1))), Decision::Full(_)));
        assert!(matches!(decide(&s, None), Decision::Full(_)));
    }

    #[test]
    fn no_snapshot_means_try_later() {
        assert_eq!(
            decide(&State::default(), Some(("?", -1))),
            Decision::NoMasterLink
        );
    }
}
