//! How the publisher's transactional calls fail and are made again: librdkafka's error
//! classes, and a watchdog for a call that can wait without end.

use std::sync::{Arc, mpsc};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
use tracing::error;

use super::publisher::DeliveryCounter;
use crate::types::TopicPartition;

/// Timeout of one transactional call; a timed-out call is made again.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How a failed Kafka call is handled, by librdkafka's error classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Call the same operation again (a timeout, a coordinator moving).
    Retry,
    /// Abort the transaction and replay the batch.
    Abort,
    /// The producer is unusable: build a new one and replay.
    Fatal,
}

/// The class of a failed call.
pub fn class_of(e: &KafkaError) -> Class {
    use rdkafka::types::RDKafkaErrorCode as C;
    match e {
        KafkaError::Transaction(t) if t.is_fatal() => Class::Fatal,
        KafkaError::Transaction(t) if t.txn_requires_abort() => Class::Abort,
        KafkaError::Transaction(t) if t.is_retriable() => Class::Retry,
        other => match other.rdkafka_error_code() {
            Some(C::Fatal | C::ProducerFenced | C::InvalidProducerEpoch) => Class::Fatal,
            _ => Class::Abort,
        },
    }
}

/// Offsets a transaction carried, and those in force without it.
pub type OffsetsBeforeAndAfter = (
    Vec<(TopicPartition, i64, String)>,
    Vec<(TopicPartition, i64, String)>,
);

/// Why a batch is not durable (yet).
#[derive(Debug)]
pub enum TxnError {
    /// Aborted (or to be resent): replay the batch.
    Abort(KafkaError),
    /// The producer is unusable.
    Fatal(KafkaError),
    /// The producer became unusable while committing: the transaction may have
    /// committed. Its offsets (and those before it) tell, once a new producer settled it.
    Unsettled(KafkaError, Box<OffsetsBeforeAndAfter>),
    /// The publisher was told to exit at once.
    Abandoned,
}

pub fn txn_error(e: KafkaError) -> TxnError {
    match class_of(&e) {
        Class::Fatal => TxnError::Fatal(e),
        Class::Retry | Class::Abort => TxnError::Abort(e),
    }
}

/// Calls `init_transactions` until it succeeds, fails other than by timing out (a
/// coordinator that is loading or moving times out and is asked again: the same call
/// resumes where it was), or `retrying` returns false for a timed-out call.
pub fn init_transactions(
    producer: &BaseProducer<DeliveryCounter>,
    mut retrying: impl FnMut(&KafkaError) -> bool,
) -> Result<(), KafkaError> {
    loop {
        match producer.init_transactions(CALL_TIMEOUT) {
            Ok(()) => return Ok(()),
            Err(e) if class_of(&e) == Class::Retry && retrying(&e) => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Longest a transactional call that may block without end is waited for: three times
/// the timeout it is given.
const WATCHDOG: Duration = Duration::from_secs(15);

/// Makes `call` on a helper thread and waits at most [`WATCHDOG`] for it.
///
/// librdkafka 2.12's `send_offsets_to_transaction` waits for its internal request without
/// a deadline, and was seen to wait for minutes when a broker stopped at the wrong moment
/// (the fault suite's rolling restart). Its transaction has committed nothing then, so
/// giving the producer up is safe: the call answers as a fatal error, the publisher builds
/// a new producer and replays the batch, and the coordinator aborts the abandoned
/// transaction when it times out. The stuck thread keeps the old producer alive until the
/// call returns.
pub fn watched(
    producer: &Arc<BaseProducer<DeliveryCounter>>,
    what: &'static str,
    call: impl FnOnce(&BaseProducer<DeliveryCounter>) -> Result<(), KafkaError> + Send + 'static,
) -> Result<(), KafkaError> {
    let p = producer.clone();
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("tw-txn-call".into())
        .spawn(move || {
            let _ = tx.send(call(&p));
        });
    if let Err(e) = spawned {
        error!(error = %e, call = what, "cannot start a thread for a transactional call");
        return Err(KafkaError::MessageProduction(
            rdkafka::types::RDKafkaErrorCode::Fatal,
        ));
    }
    rx.recv_timeout(WATCHDOG).unwrap_or_else(|_| {
        error!(call = what, waited = ?WATCHDOG, "a transactional call did not return; replacing the producer");
        Err(KafkaError::MessageProduction(
            rdkafka::types::RDKafkaErrorCode::Fatal,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode as C;

    #[test]
    fn produce_errors_are_classed_fatal_only_when_the_producer_is_gone() {
        assert_eq!(
            class_of(&KafkaError::MessageProduction(C::Fatal)),
            Class::Fatal
        );
        assert_eq!(
            class_of(&KafkaError::MessageProduction(C::ProducerFenced)),
            Class::Fatal
        );
        assert_eq!(
            class_of(&KafkaError::MessageProduction(C::MessageTimedOut)),
            Class::Abort
        );
        assert_eq!(class_of(&KafkaError::Canceled), Class::Abort);
    }
}
