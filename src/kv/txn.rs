//! Transactions: compares, then the success or the failure branch, applied
//! as one command at one revision.

use std::cmp::Ordering;

use super::range::KeyRange;
use super::{KvError, MAX_TXN_OPS, Write};
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::{
    Compare, RangeRequest, RangeResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse, request_op, response_op,
};
use crate::proto::mvccpb::KeyValue;

impl Write {
    pub(super) fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, KvError> {
        check_txn(req)?;
        let mut succeeded = true;
        for cmp in &req.compare {
            if !self.compare(cmp)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(r)) => response_op::Response::ResponseRange(self.range(r)?),
                Some(request_op::Request::RequestPut(r)) => response_op::Response::ResponsePut(self.put(r)?),
                Some(request_op::Request::RequestDeleteRange(r)) => {
                    response_op::Response::ResponseDeleteRange(self.delete_range(r)?)
                }
                Some(request_op::Request::RequestTxn(r)) => response_op::Response::ResponseTxn(self.txn(r)?),
                None => return Err(KvError::EmptyCommand),
            };
            responses.push(ResponseOp { response: Some(response) });
        }
        Ok(TxnResponse { header: None, succeeded, responses })
    }

    /// A read inside a transaction: at the current revision it sees the
    /// transaction's earlier writes.
    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        let current = if self.changed { self.revision } else { self.revision - 1 };
        super::read(&self.map, &self.history, current, req)
    }

    /// etcd's comparison: every key in the range must satisfy it; against no
    /// key at all, a value comparison fails and the others compare zeroes.
    fn compare(&self, cmp: &Compare) -> Result<bool, KvError> {
        let range = KeyRange::new(&cmp.key, &cmp.range_end)?;
        let mut matched = false;
        for (_, kv) in range.scan(&self.map) {
            matched = true;
            if !compare_kv(cmp, kv) {
                return Ok(false);
            }
        }
        if matched {
            return Ok(true);
        }
        if cmp.target == CompareTarget::Value as i32 {
            return Ok(false);
        }
        Ok(compare_kv(cmp, &KeyValue::default()))
    }
}

fn compare_kv(cmp: &Compare, kv: &KeyValue) -> bool {
    let ordering = match &cmp.target_union {
        Some(TargetUnion::Version(v)) => kv.version.cmp(v),
        Some(TargetUnion::CreateRevision(v)) => kv.create_revision.cmp(v),
        Some(TargetUnion::ModRevision(v)) => kv.mod_revision.cmp(v),
        Some(TargetUnion::Value(v)) => kv.value.as_ref().cmp(v.as_ref()),
        Some(TargetUnion::Lease(v)) => kv.lease.cmp(v),
        // No operand: compare against the target's zero value.
        None => match CompareTarget::try_from(cmp.target).unwrap_or(CompareTarget::Version) {
            CompareTarget::Version => kv.version.cmp(&0),
            CompareTarget::Create => kv.create_revision.cmp(&0),
            CompareTarget::Mod => kv.mod_revision.cmp(&0),
            CompareTarget::Value => kv.value.as_ref().cmp(&[][..]),
            CompareTarget::Lease => kv.lease.cmp(&0),
        },
    };
    match CompareResult::try_from(cmp.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::NotEqual => ordering != Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
    }
}

/// Refuses, before anything is applied, a transaction etcd refuses: too many
/// operations, or a branch that writes one key twice.
fn check_txn(req: &TxnRequest) -> Result<(), KvError> {
    if req.compare.len() > MAX_TXN_OPS || req.success.len() > MAX_TXN_OPS || req.failure.len() > MAX_TXN_OPS {
        return Err(KvError::TooManyOps);
    }
    for branch in [&req.success, &req.failure] {
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        collect_writes(branch, &mut puts, &mut deletes)?;
        puts.sort();
        if puts.windows(2).any(|w| w[0] == w[1]) {
            return Err(KvError::DuplicateKey);
        }
        if puts.iter().any(|k| deletes.iter().any(|d: &KeyRange| d.contains(k))) {
            return Err(KvError::DuplicateKey);
        }
    }
    Ok(())
}

fn collect_writes(ops: &[RequestOp], puts: &mut Vec<bytes::Bytes>, deletes: &mut Vec<KeyRange>) -> Result<(), KvError> {
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestPut(r)) => puts.push(r.key.clone()),
            Some(request_op::Request::RequestDeleteRange(r)) => deletes.push(KeyRange::new(&r.key, &r.range_end)?),
            Some(request_op::Request::RequestTxn(t)) => {
                check_txn(t)?;
                // Only one inner branch runs: a key both write counts once.
                let mut inner_puts = Vec::new();
                collect_writes(&t.success, &mut inner_puts, deletes)?;
                collect_writes(&t.failure, &mut inner_puts, deletes)?;
                inner_puts.sort();
                inner_puts.dedup();
                puts.extend(inner_puts);
            }
            Some(request_op::Request::RequestRange(_)) | None => {}
        }
    }
    Ok(())
}
