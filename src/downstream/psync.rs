//! The PSYNC decision of `masterTryPartialResynchronization()` (PROTOCOL §4.2), made against the
//! store's identity and range instead of an in-memory backlog.

use crate::store::{Identity, View};

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
pub fn decide(state: &View, request: Option<(&str, i64)>) -> Decision {
    let Some(ident) = &state.ident else {
        return Decision::NoMasterLink;
    };
    let Some((replid, offset)) = request else {
        return Decision::Full("legacy SYNC".into());
    };
    if replid == "?" {
        return Decision::Full("full resync requested by replica".into());
    }
    if !same_history(ident, replid, offset) {
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

fn same_history(ident: &Identity, replid: &str, offset: i64) -> bool {
    replid.eq_ignore_ascii_case(&ident.replid)
        || (replid.eq_ignore_ascii_case(&ident.replid2) && offset <= ident.second_replid_offset)
}

/// A replica of this history that is ahead of the store: after a crash cut the relay's tail,
/// the relay refetches those bytes from the master within moments, and the replica can then
/// continue instead of full-syncing.
pub fn ahead_of_store(state: &View, request: Option<(&str, i64)>) -> bool {
    match (&state.ident, request) {
        (Some(ident), Some((replid, offset))) => {
            same_history(ident, replid, offset) && offset > state.next as i64
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NULL_REPLID;

    fn state() -> View {
        View {
            ident: Some(Identity {
                replid: "b".repeat(40),
                replid2: "a".repeat(40),
                second_replid_offset: 500,
                snapshot: "x.rdb".into(),
                snapshot_offset: 99,
                snapshot_size: 10,
            }),
            first: 100,
            next: 1000,
            ..View::default()
        }
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
    fn replicas_ahead_of_the_store_are_recognised() {
        let s = state();
        assert!(ahead_of_store(&s, Some((&"b".repeat(40), 1001))));
        assert!(!ahead_of_store(&s, Some((&"b".repeat(40), 1000))));
        assert!(!ahead_of_store(&s, Some(("?", -1))));
        assert!(!ahead_of_store(&s, Some((&"c".repeat(40), 2000))));
    }

    #[test]
    fn no_snapshot_means_try_later() {
        assert_eq!(
            decide(&View::default(), Some(("?", -1))),
            Decision::NoMasterLink
        );
    }
}
