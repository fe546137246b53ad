//! Producing with back-pressure: wait while the producer's bounded queue
//! (librdkafka's `queue.buffering.max.messages`) is full instead of failing.

use std::time::Duration;

use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};

/// How long a sender waits before retrying a full queue.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);

/// `send`, waiting while the producer's bounded queue is full. For blocking
/// threads (the worker's publisher thread, a rollup stage's loop): it sleeps
/// the calling thread. Async code calls [`send_waiting_async`].
///
/// # Errors
/// Any producer error other than a full queue.
pub fn send_waiting<K, P>(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, K, P>,
) -> Result<(), RdKafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(QUEUE_FULL_WAIT);
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// [`send_waiting`] for async callers: waits on the tokio timer, so a full
/// queue never blocks a runtime worker thread.
///
/// # Errors
/// Any producer error other than a full queue.
pub async fn send_waiting_async<K, P>(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, K, P>,
) -> Result<(), RdKafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(QUEUE_FULL_WAIT).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
