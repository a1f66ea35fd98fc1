"""A standard Kafka client (kafka-python) for busbar's interop tests.

Usage: kafka_peer.py BOOTSTRAP MODE TOPIC [N]
  consume: reads N records of TOPIC from its beginning, one `@@ {...}` line each
  produce: after a `go` line on stdin, writes N keyed records with headers, then `@@ "SENT"`
  partitions: prints how many partitions TOPIC has
  serve:   answers requests on TOPIC: the value prefixed with `echo:`, to the topic in
           the `busbar-reply-to` header, with the request's `busbar-correlation-id`
"""

import json
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def say(value):
    print("@@ " + json.dumps(value), flush=True)


def text(b):
    return None if b is None else b.decode("utf-8")


def reader(bootstrap, topic):
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    partitions = consumer.partitions_for_topic(topic) or set()
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    consumer.seek_to_beginning(*assigned)
    return consumer


def main():
    bootstrap, mode, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "consume":
        count = int(sys.argv[4])
        consumer = reader(bootstrap, topic)
        say("READY")
        for record in consumer:
            say(
                {
                    "key": text(record.key),
                    "value": text(record.value),
                    "headers": [[k, text(v)] for k, v in record.headers],
                    "partition": record.partition,
                }
            )
            count -= 1
            if count == 0:
                break
    elif mode == "produce":
        count = int(sys.argv[4])
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        say("READY")
        sys.stdin.readline()
        for i in range(count):
            producer.send(
                topic,
                key=f"k{i}".encode(),
                value=json.dumps({"n": i}).encode(),
                headers=[("trace", f"t{i}".encode()), ("content-type", b"application/json")],
            )
        producer.flush()
        say("SENT")
    elif mode == "partitions":
        consumer = KafkaConsumer(bootstrap_servers=bootstrap)
        say("READY")
        say(len(consumer.partitions_for_topic(topic) or ()))
    elif mode == "serve":
        consumer = reader(bootstrap, topic)
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        say("READY")
        for record in consumer:
            headers = dict(record.headers)
            reply_to = headers.get("busbar-reply-to")
            if reply_to is None:
                continue
            producer.send(
                reply_to.decode(),
                value=b"echo:" + record.value,
                headers=[("busbar-correlation-id", headers.get("busbar-correlation-id", b""))],
            )
            producer.flush()
            say("ANSWERED")
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
