//! The publisher's part of healing (see [`heal`]): after a broker fault, once idle, each
//! lane commits the group's offsets in force, ending what the fault left open.

use metrics::counter;
use rdkafka::consumer::Consumer;
use rdkafka::producer::Producer;
use std::time::Instant;
use tracing::{debug, info};

use super::{LANES, Publisher, Signal, Stall, TopicPartition, TxnError, heal, txn_error};
use crate::names::metrics as m;

impl<T: Send + 'static> Publisher<T> {
    /// Heals when due (see [`heal`]): after a failed call, once idle for a while.
    pub(super) fn maybe_heal(&mut self, signal: &Signal, stall: &Stall) {
        let now = Instant::now();
        if stall.take_fault() {
            self.healer.due.fault(now);
        }
        if !self.healer.due.is_due(now, self.healer.last_unit) {
            return;
        }
        match self.heal(signal, stall) {
            Ok(0) => self.healer.due.healed(),
            Ok(partitions) => {
                info!(
                    partitions,
                    "the group's offsets committed again by each transactional producer, ending what a broker fault may have left open of their transactions"
                );
                self.healer.due.healed();
            }
            Err(e) => {
                debug!(error = %e, retry_in = ?heal::RETRY_AFTER, "could not end what a broker fault may have left open; trying again later");
                self.healer.due.failed(Instant::now());
            }
        }
        // The heal's own failed calls are no new fault.
        stall.take_fault();
    }

    /// Each lane commits a transaction holding only the group's offsets of the assigned
    /// partitions, at the values in force; the number of partitions, 0 when none.
    fn heal(&mut self, signal: &Signal, stall: &Stall) -> Result<usize, String> {
        let assigned: Vec<TopicPartition> = self
            .consumer
            .assignment()
            .map_err(|e| e.to_string())?
            .elements()
            .iter()
            .map(|e| TopicPartition::new(e.topic(), e.partition()))
            .collect();
        if assigned.is_empty() {
            return Ok(0);
        }
        let group = (self.healer.group_offsets)(&assigned)?;
        let offsets = heal::offsets(&assigned, &self.healer.committed.borrow(), &group);
        if offsets.is_empty() {
            return Ok(0);
        }
        let lanes = if self.spare.is_some() { LANES } else { 1 };
        for _ in 0..lanes {
            let metadata = self
                .consumer
                .group_metadata()
                .ok_or("no group metadata (not in the group)")?;
            let result = self.in_transaction(signal, stall, || {
                self.lane.producer.begin_transaction().map_err(txn_error)?;
                self.send_offsets(&offsets, metadata, signal, stall)?;
                self.commit(signal, stall)
            });
            match result {
                Ok(()) => {}
                Err(TxnError::Fatal(e) | TxnError::Unsettled(e, _)) => {
                    // Only offsets in force: committed or not, nothing is lost.
                    self.rebuild(signal, stall);
                    return Err(e.to_string());
                }
                Err(TxnError::Abort(e)) => return Err(e.to_string()),
                Err(TxnError::Abandoned) => return Err("abandoned".into()),
            }
            if let Some(spare) = &mut self.spare {
                std::mem::swap(&mut self.lane, spare);
            }
        }
        counter!(m::TRANSACTIONS, m::L_RESULT => "healed").increment(lanes as u64);
        stall.durable();
        let n = offsets.len();
        self.healer.committed(offsets);
        Ok(n)
    }
}
