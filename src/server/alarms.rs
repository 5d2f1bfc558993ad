//! etcd's alarms and space quota: a write that would take the stored
//! records past `--quota-backend-bytes` raises the NOSPACE alarm, and while
//! it is raised every member refuses writes that add data ("etcdserver:
//! mvcc: database space exceeded") until an operator disarms it, as etcd 3.4.
//!
//! - The alarm list is replicated state: it changes only when an Alarm
//!   command is applied, and travels with the key-value state (snapshots
//!   included), so every member refuses the same writes at the same point.
//! - The quota is each member's own setting, so it is checked where a write
//!   enters (as etcd's quota interceptor does), never at apply: members with
//!   different settings still apply the same log alike. A refused write was
//!   never proposed.
//! - Disarming lifts the refusal even if the data is still over the quota;
//!   the next write that would pass it raises the alarm again (as etcd).

use crate::kv::KvStore;
use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmType, DeleteRangeResponse, ResponseOp, response_op};
use crate::proto::raftkvpb::{Command, command};

/// Whether `command` fits under the quota `limit` on `kv`'s data.
pub fn fits(limit: Option<u64>, kv: &KvStore, command: &Command) -> bool {
    let cost = crate::kv::write_cost(command);
    match limit {
        Some(limit) if cost > 0 => kv.data_bytes() + cost <= limit,
        _ => true,
    }
}

/// The command raising NOSPACE for `member`.
pub fn raise_nospace(member: u64) -> Command {
    let req =
        AlarmRequest { action: AlarmAction::Activate as i32, member_id: member, alarm: AlarmType::Nospace as i32 };
    Command::new(command::Request::Alarm(req))
}

/// Applies an ACTIVATE or DEACTIVATE to `alarms`: the new list, and the
/// answer etcd gives (the alarm raised, or the alarm lowered if it was up).
pub fn apply(alarms: &[AlarmMember], req: &AlarmRequest) -> (Vec<AlarmMember>, Vec<AlarmMember>) {
    let member = AlarmMember { member_id: req.member_id, alarm: req.alarm };
    let mut next = alarms.to_vec();
    match AlarmAction::try_from(req.action) {
        Ok(AlarmAction::Activate) => {
            if !next.contains(&member) {
                next.push(member);
            }
            (next, vec![member])
        }
        Ok(AlarmAction::Deactivate) => {
            let before = next.len();
            next.retain(|a| *a != member);
            let lowered = if next.len() < before { vec![member] } else { Vec::new() };
            (next, lowered)
        }
        // GET is a read, and never reaches the log.
        _ => (next, Vec::new()),
    }
}

/// The alarms a GET for `alarm` answers (NONE: every alarm).
pub fn list(alarms: &[AlarmMember], alarm: i32) -> Vec<AlarmMember> {
    alarms.iter().filter(|a| alarm == AlarmType::None as i32 || a.alarm == alarm).copied().collect()
}

/// How an applied Alarm command's answer travels back to the request as a
/// `ResponseOp`: the alarms it changed, counted in a DeleteRange response's
/// `deleted` (0 or 1). Only [`changed`] reads it.
pub fn answer(changed: &[AlarmMember]) -> ResponseOp {
    let deleted = changed.len() as i64;
    ResponseOp {
        response: Some(response_op::Response::ResponseDeleteRange(DeleteRangeResponse {
            deleted,
            ..Default::default()
        })),
    }
}

/// Whether an applied Alarm command changed the list (see [`answer`]).
pub fn changed(op: &ResponseOp) -> bool {
    matches!(&op.response, Some(response_op::Response::ResponseDeleteRange(r)) if r.deleted > 0)
}

/// An alarm as etcd's Status lists it in `errors` (the text form of its
/// `AlarmMember`, trailing space included), so `etcdctl endpoint status`
/// shows what it shows for etcd.
pub fn describe(alarm: &AlarmMember) -> String {
    format!("{alarm} ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(action: AlarmAction, member_id: u64) -> AlarmRequest {
        AlarmRequest { action: action as i32, member_id, alarm: AlarmType::Nospace as i32 }
    }

    #[test]
    fn raising_twice_keeps_one_alarm_and_lowering_answers_only_what_was_up() {
        let (one, raised) = apply(&[], &req(AlarmAction::Activate, 7));
        let (again, raised_again) = apply(&one, &req(AlarmAction::Activate, 7));
        assert_eq!(again, one);
        assert_eq!(raised, raised_again);
        let (other, _) = apply(&again, &req(AlarmAction::Activate, 9));
        assert_eq!(other.len(), 2);
        let (left, lowered) = apply(&other, &req(AlarmAction::Deactivate, 7));
        assert_eq!(left, vec![AlarmMember { member_id: 9, alarm: AlarmType::Nospace as i32 }]);
        assert!(changed(&answer(&lowered)));
        let (same, none) = apply(&left, &req(AlarmAction::Deactivate, 7));
        assert_eq!(same, left);
        assert!(!changed(&answer(&none)));
    }

    #[test]
    fn status_lists_an_alarm_as_etcd_does() {
        let a = AlarmMember { member_id: 10276657743932975437, alarm: AlarmType::Nospace as i32 };
        assert_eq!(describe(&a), "memberID:10276657743932975437 alarm:NOSPACE ");
    }

    #[test]
    fn only_writes_that_add_data_count_against_the_quota() {
        use crate::proto::etcdserverpb::{DeleteRangeRequest, PutRequest};
        let kv = KvStore::new();
        let put =
            crate::kv::put_command(PutRequest { key: "k".into(), value: vec![0; 100].into(), ..Default::default() });
        assert!(fits(Some(357), &kv, &put));
        assert!(!fits(Some(356), &kv, &put));
        assert!(fits(None, &kv, &put));
        let delete = crate::kv::delete_command(DeleteRangeRequest { key: "k".into(), ..Default::default() });
        assert!(fits(Some(0), &kv, &delete));
    }
}
