"""AMQP with the rest of wharf: the same queues through SQS (boto3) and AMQP (pika), and
durability across kill -9 for confirmed persistent messages and durable definitions."""

import threading
import uuid

import pika
import pytest

from conftest import Server, sqs_client


def uid(prefix="q"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def connect(server):
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", server.amqp_port))


def test_sqs_send_is_consumed_over_amqp(server, sqs):
    name = uid()
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sqs.send_message(
        QueueUrl=url,
        MessageBody="from sqs",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "order"}},
    )
    conn = connect(server)
    ch = conn.channel()
    # The SQS queue is durable, so a durable declare matches it.
    ch.queue_declare(name, durable=True)
    got = []
    for method, props, body in ch.consume(name, inactivity_timeout=2):
        got.append((body, props.headers))
        ch.basic_ack(method.delivery_tag)
        break
    conn.close()
    assert got == [(b"from sqs", {"kind": "order"})]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_amqp_publish_reaches_sqs_receive(server, sqs):
    name = uid()
    conn = connect(server)
    ch = conn.channel()
    ch.queue_declare(name, durable=True)
    ch.exchange_declare("cross-direct", "direct")
    ch.queue_bind(name, "cross-direct", "k")
    ch.confirm_delivery()
    ch.basic_publish("cross-direct", "k", b"from amqp", pika.BasicProperties(delivery_mode=2))
    conn.close()
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2).get("Messages", [])
    assert [m["Body"] for m in messages] == ["from amqp"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=messages[0]["ReceiptHandle"])
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []


def test_confirmed_persistent_messages_and_durable_definitions_survive_kill_9(tmp_path):
    data = str(tmp_path / "data")
    server = Server(storage=["--data-dir", data])
    durable_q, transient_q = uid("durable"), uid("transient")
    sent = []
    try:
        conn = connect(server)
        ch = conn.channel()
        ch.exchange_declare("orders", "topic", durable=True)
        ch.queue_declare(durable_q, durable=True)
        ch.queue_bind(durable_q, "orders", "order.#")
        ch.queue_declare(transient_q, durable=False)
        ch.confirm_delivery()
        # Publishers on two connections at once, each message confirmed before it counts.
        def publish(tag):
            c = connect(server)
            pch = c.channel()
            pch.confirm_delivery()
            for i in range(150):
                body = f"{tag}-{i}".encode()
                pch.basic_publish("orders", f"order.{tag}", body, pika.BasicProperties(delivery_mode=2))
                sent.append(body)
            c.close()

        threads = [threading.Thread(target=publish, args=(t,)) for t in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ch.basic_publish("", transient_q, b"transient", pika.BasicProperties(delivery_mode=1))
        # Settled before the crash: must not come back.
        method, _, body = ch.basic_get(durable_q)
        ch.basic_ack(method.delivery_tag)
        ch.queue_declare(durable_q, passive=True)  # a round trip: the ack has been processed
        acked = body
    finally:
        server.kill()

    server = Server(storage=["--data-dir", data])
    try:
        conn = connect(server)
        ch = conn.channel()
        assert ch.queue_declare(durable_q, passive=True).method.message_count == len(sent) - 1
        ch.exchange_declare("orders", passive=True)
        # The non-durable queue is gone with its message, as in RabbitMQ.
        assert ch.queue_declare(transient_q, durable=False).method.message_count == 0
        got = []
        for method, props, body in ch.consume(durable_q, inactivity_timeout=1):
            if method is None:
                break
            assert props.delivery_mode == 2
            got.append(body)
            ch.basic_ack(method.delivery_tag)
        ch.cancel()
        assert sorted(got) == sorted(b for b in sent if b != acked)
        # Per-publisher order survives too.
        for tag in (b"a", b"b"):
            mine = [b for b in got if b.startswith(tag)]
            assert mine == sorted(mine, key=lambda b: int(b.split(b"-")[1]))
        # The binding survived: the exchange still routes to the queue.
        ch.basic_publish("orders", "order.after", b"after")
        assert ch.basic_get(durable_q, auto_ack=True)[2] == b"after"
        conn.close()
    finally:
        server.stop()


def test_shutdown_closes_amqp_connections_with_connection_forced(tmp_path):
    server = Server(storage=["--data-dir", str(tmp_path / "data")])
    conn = connect(server)
    ch = conn.channel()
    ch.queue_declare("kept", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "kept", b"durable", pika.BasicProperties(delivery_mode=2))
    server.proc.terminate()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        conn.process_data_events(time_limit=10)
    assert e.value.reply_code == 320
    assert e.value.reply_text == "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
    assert server.proc.wait(10) == 0
    server = Server(storage=["--data-dir", str(tmp_path / "data")])
    try:
        c = connect(server)
        assert c.channel().basic_get("kept", auto_ack=True)[2] == b"durable"
        c.close()
    finally:
        server.stop()


def test_sqs_attribute_names_longer_than_a_short_string_still_reach_amqp(server, sqs):
    name = uid()
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    long_name = "a" * 256  # SQS allows 256 characters; an AMQP table key holds 255 bytes
    sqs.send_message(
        QueueUrl=url, MessageBody="long", MessageAttributes={long_name: {"DataType": "String", "StringValue": "v"}}
    )
    conn = connect(server)
    method, props, body = conn.channel().basic_get(name, auto_ack=True)
    conn.close()
    assert body == b"long"
    assert props.headers == {"a" * 255: "v"}
