//! Producing with back-pressure: wait while the producer's bounded queue
//! (librdkafka's `queue.buffering.max.messages`) is full instead of failing.

use std::time::Duration;

use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};

/// How long a sender waits before retrying a full queue.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);

/// `send`, waiting while the producer's bounded queue is full. For blocking
/// threads only (the worker's publisher thread, a rollup stage's loop,
/// `tickfetch import`'s publishing thread): it sleeps the calling thread.
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
