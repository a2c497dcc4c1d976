"""AMQP 0-9-1 through pika, the most used Python RabbitMQ client: connections, queues and
exchanges, publishing and consuming, acks, QoS, confirms, transactions, dead-lettering, and the
errors RabbitMQ gives (reply codes and texts)."""

import socket
import struct
import time
import uuid

import pika
import pytest
from pika.exceptions import (
    ChannelClosedByBroker,
    NackError,
    ProbableAuthenticationError,
    UnroutableError,
)

from conftest import Server, wait_until


def uid(prefix="q"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def connect(server, **kwargs):
    params = pika.ConnectionParameters("127.0.0.1", server.amqp_port, **kwargs)
    return pika.BlockingConnection(params)


@pytest.fixture
def conn(server):
    c = connect(server)
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def ch(conn):
    return conn.channel()


def closed_with(exc_info):
    return exc_info.value.reply_code, exc_info.value.reply_text


def get_eventually(ch, queue, auto_ack=False, seconds=3):
    """basic.get until a message is there: dead-lettering and requeueing are asynchronous in
    RabbitMQ (the differential suite runs these scenarios against it too)."""
    deadline = time.monotonic() + seconds
    while True:
        got = ch.basic_get(queue, auto_ack=auto_ack)
        if got[0] is not None or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def drain(ch, queue, timeout=0.5):
    """Every message a consumer gets until the queue is quiet, acked."""
    got = []
    for method, props, body in ch.consume(queue, inactivity_timeout=timeout):
        if method is None:
            break
        got.append((props, body))
        ch.basic_ack(method.delivery_tag)
    ch.cancel()
    return got


def test_publish_and_get_round_trip_every_property(ch):
    q = uid()
    ch.queue_declare(q)
    props = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers={"s": "text", "n": 7, "big": 2**40, "b": True, "nested": {"k": [1, "two"]}},
        delivery_mode=2,
        priority=3,
        correlation_id="corr-1",
        reply_to="replies",
        expiration="60000",
        message_id="m-1",
        timestamp=1_700_000_000,
        type="order.created",
        user_id="guest",
        app_id="tests",
    )
    ch.basic_publish("", q, b'{"id": 1}', props)
    method, got, body = ch.basic_get(q)
    assert body == b'{"id": 1}'
    assert (method.exchange, method.routing_key, method.redelivered) == ("", q, False)
    for field in [
        "content_type",
        "content_encoding",
        "headers",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "timestamp",
        "type",
        "user_id",
        "app_id",
    ]:
        assert getattr(got, field) == getattr(props, field), field
    ch.basic_ack(method.delivery_tag)
    assert ch.basic_get(q) == (None, None, None)


def test_server_named_queue_declare_ok_counts_and_passive(ch):
    declared = ch.queue_declare("", exclusive=True)
    name = declared.method.queue
    assert name.startswith("amq.gen-")
    ch.confirm_delivery()  # counted once confirmed (RabbitMQ routes publishes asynchronously)
    for i in range(3):
        ch.basic_publish("", name, str(i).encode())
    ok = ch.queue_declare(name, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (3, 0)
    assert ch.queue_purge(name).method.message_count == 3


def test_large_message_spans_many_frames(ch):
    q = uid()
    ch.queue_declare(q)
    body = bytes(range(256)) * 4096  # 1 MiB, far above frame_max
    ch.basic_publish("", q, body)
    assert ch.basic_get(q, auto_ack=True)[2] == body


def test_prefetch_limits_unacked_deliveries(conn):
    ch = conn.channel()
    q = uid()
    ch.queue_declare(q)
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    ch.basic_qos(prefetch_count=2)
    delivered = []
    ch.basic_consume(q, lambda c, m, p, b: delivered.append(m))
    conn.process_data_events(time_limit=0.3)
    assert len(delivered) == 2
    ch.basic_ack(delivered[1].delivery_tag, multiple=True)
    conn.process_data_events(time_limit=0.3)
    assert len(delivered) == 4


def test_nack_requeue_redelivers_and_reject_dead_letters_with_x_death(ch):
    dlx, dlq, q = uid("dlx"), uid("dlq"), uid()
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"job")
    method, _, _ = ch.basic_get(q)
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, _, _ = get_eventually(ch, q)
    assert method.redelivered
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = get_eventually(ch, dlq, auto_ack=True)
    assert body == b"job"
    death = props.headers["x-death"][0]
    assert death["reason"] == "rejected"
    assert death["queue"] == q
    assert death["count"] == 1
    assert props.headers["x-first-death-reason"] == "rejected"


def test_message_ttl_expires_into_the_dead_letter_queue(ch):
    dlq, q = uid("dlq"), uid()
    ch.queue_declare(dlq)
    ch.queue_declare(
        q,
        arguments={"x-message-ttl": 100, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq},
    )
    ch.basic_publish("", q, b"short-lived")
    ch.basic_publish("", q, b"shorter", pika.BasicProperties(expiration="50"))

    def expired():
        return ch.queue_declare(dlq, passive=True).method.message_count == 2

    assert wait_until(expired, timeout=5)
    assert ch.basic_get(q) == (None, None, None)
    _, props, _ = ch.basic_get(dlq, auto_ack=True)
    assert props.headers["x-death"][0]["reason"] == "expired"


def test_max_length_drops_the_oldest(ch):
    q = uid()
    ch.queue_declare(q, arguments={"x-max-length": 2})
    for body in [b"1", b"2", b"3"]:
        ch.basic_publish("", q, body)
    assert [b for _, b in drain(ch, q)] == [b"2", b"3"]


def test_priority_queue_delivers_highest_first(ch):
    q = uid()
    ch.queue_declare(q, arguments={"x-max-priority": 10})
    for p in [1, 9, 5]:
        ch.basic_publish("", q, str(p).encode(), pika.BasicProperties(priority=p))
    assert [b for _, b in drain(ch, q)] == [b"9", b"5", b"1"]


def test_exchange_types_route_as_rabbitmq_does(ch):
    direct, fanout, topic, headers = (uid(k) for k in ["direct", "fanout", "topic", "headers"])
    qs = {k: uid(k) for k in ["d", "f1", "f2", "t", "h"]}
    for q in qs.values():
        ch.queue_declare(q)
    ch.exchange_declare(direct, "direct")
    ch.exchange_declare(fanout, "fanout")
    ch.exchange_declare(topic, "topic")
    ch.exchange_declare(headers, "headers")
    ch.queue_bind(qs["d"], direct, "red")
    ch.queue_bind(qs["f1"], fanout)
    ch.queue_bind(qs["f2"], fanout)
    ch.queue_bind(qs["t"], topic, "orders.*.eu")
    ch.queue_bind(qs["h"], headers, arguments={"x-match": "all", "kind": "a", "v": 1})
    ch.basic_publish(direct, "red", b"d")
    ch.basic_publish(direct, "blue", b"nowhere")
    ch.basic_publish(fanout, "ignored", b"f")
    ch.basic_publish(topic, "orders.new.eu", b"t")
    ch.basic_publish(topic, "orders.new.us", b"nowhere")
    ch.basic_publish(headers, "", b"h", pika.BasicProperties(headers={"kind": "a", "v": 1}))
    ch.basic_publish(headers, "", b"nowhere", pika.BasicProperties(headers={"kind": "a"}))
    got = {k: [b for _, b in drain(ch, q, timeout=0.2)] for k, q in qs.items()}
    assert got == {"d": [b"d"], "f1": [b"f"], "f2": [b"f"], "t": [b"t"], "h": [b"h"]}


def test_exchange_to_exchange_binding_and_alternate_exchange(ch):
    source, dest, ae = uid("src"), uid("dst"), uid("ae")
    routed, unrouted = uid(), uid()
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(source, "direct", arguments={"alternate-exchange": ae})
    ch.exchange_declare(dest, "fanout")
    ch.exchange_bind(dest, source, "k")
    ch.queue_declare(routed)
    ch.queue_declare(unrouted)
    ch.queue_bind(routed, dest)
    ch.queue_bind(unrouted, ae)
    ch.basic_publish(source, "k", b"via-binding")
    ch.basic_publish(source, "other", b"via-alternate")
    assert ch.basic_get(routed, auto_ack=True)[2] == b"via-binding"
    assert ch.basic_get(unrouted, auto_ack=True)[2] == b"via-alternate"


def test_headers_exchange_any_and_the_with_x_variants(ch):
    ex = uid("headers")
    ch.exchange_declare(ex, "headers")
    modes = ["all", "any", "all-with-x", "any-with-x"]
    qs = {mode: uid(mode) for mode in modes}
    for mode, q in qs.items():
        ch.queue_declare(q)
        ch.queue_bind(q, ex, arguments={"x-match": mode, "kind": "a", "x-tag": "t"})

    def reached(headers):
        ch.basic_publish(ex, "", b"m", pika.BasicProperties(headers=headers))
        return {mode for mode, q in qs.items() if ch.basic_get(q, auto_ack=True)[0] is not None}

    # all and any leave the binding's x- keys out of the match; the -with-x variants use them.
    assert reached({"kind": "a"}) == {"all", "any", "any-with-x"}
    assert reached({"x-tag": "t"}) == {"any-with-x"}
    assert reached({"kind": "a", "x-tag": "t"}) == set(modes)
    assert reached({"kind": "b", "x-tag": "other"}) == set()


def test_consistent_hash_exchange_sends_each_routing_key_to_one_queue(ch):
    ex, a, b = uid("hash"), uid("a"), uid("b")
    ch.exchange_declare(ex, "x-consistent-hash")
    for q in (a, b):
        ch.queue_declare(q)
        ch.queue_bind(q, ex, routing_key="1")  # the binding key is the queue's weight
    keys = [f"order-{i}" for i in range(200)]
    for key in keys + keys[:50]:
        ch.basic_publish(ex, key, key.encode())
    got = {q: [body for _, body in drain(ch, q, timeout=0.3)] for q in (a, b)}
    assert len(got[a]) + len(got[b]) == 250
    # Both queues get a share, and a key's repeats follow it to the same queue.
    assert 30 < len(got[a]) < 220
    assert not set(got[a]) & set(got[b])


def test_auto_delete_exchange_goes_with_its_last_binding(conn):
    ch = conn.channel()
    ex, q1, q2 = uid("auto"), uid(), uid()
    ch.exchange_declare(ex, "fanout", auto_delete=True)
    for q in (q1, q2):
        ch.queue_declare(q)
        ch.queue_bind(q, ex)
    ch.queue_unbind(q1, ex)
    ch.exchange_declare(ex, "fanout", passive=True)
    ch.queue_delete(q2)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare(ex, "fanout", passive=True)
    assert closed_with(e) == (404, f"NOT_FOUND - no exchange '{ex}' in vhost '/'")


def test_internal_exchange_refuses_publishes_and_routes_what_is_bound_to_it(conn):
    ch = conn.channel()
    front, inner, q = uid("front"), uid("inner"), uid()
    ch.exchange_declare(inner, "fanout", internal=True)
    ch.exchange_declare(front, "direct")
    ch.exchange_bind(inner, front, "k")
    ch.queue_declare(q)
    ch.queue_bind(q, inner)
    ch.basic_publish(front, "k", b"through")
    assert get_eventually(ch, q, auto_ack=True)[2] == b"through"
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish(inner, "", b"straight in")
        ch.queue_declare(q, passive=True)  # a synchronous call: the channel close arrives
    assert closed_with(e) == (
        403,
        f"ACCESS_REFUSED - cannot publish to internal exchange '{inner}' in vhost '/'",
    )


def test_publisher_confirms_ack_and_nack_on_overflow(ch):
    q = uid()
    ch.queue_declare(q, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"fits", pika.BasicProperties(delivery_mode=2))
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"refused", pika.BasicProperties(delivery_mode=2))
    with pytest.raises(UnroutableError):
        ch.basic_publish("", uid("missing"), b"x", mandatory=True)
    assert ch.queue_declare(q, passive=True).method.message_count == 1


def test_mandatory_unroutable_message_is_returned(conn):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, method, props, body: returned.append((method, body)))
    ch.basic_publish("", uid("nobody"), b"lost?", mandatory=True)
    conn.process_data_events(time_limit=0.3)
    assert len(returned) == 1
    method, body = returned[0]
    assert (method.reply_code, method.reply_text, body) == (312, "NO_ROUTE", b"lost?")


def test_transactions_commit_and_rollback(ch):
    q = uid()
    ch.queue_declare(q)
    ch.tx_select()
    ch.basic_publish("", q, b"rolled-back")
    ch.tx_rollback()
    ch.basic_publish("", q, b"committed")
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.tx_commit()
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    method, _, _ = ch.basic_get(q)
    ch.basic_ack(method.delivery_tag)
    ch.tx_rollback()
    # The ack was rolled back: the message is still unacked, and comes back on recover.
    ch.basic_recover(requeue=True)
    method, _, body = ch.basic_get(q)
    assert (body, method.redelivered) == (b"committed", True)
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()


def test_deleting_a_queue_cancels_its_consumers(server, conn):
    ch = conn.channel()
    q = uid()
    ch.queue_declare(q)
    cancelled = []
    ch.basic_consume(q, lambda *a: None)
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    other = connect(server)
    other.channel().queue_delete(q)
    other.close()
    conn.process_data_events(time_limit=0.5)
    assert len(cancelled) == 1


def test_exclusive_consumer_and_exclusive_queue_are_enforced(server, ch):
    q = uid()
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    other = connect(server)
    with pytest.raises(ChannelClosedByBroker) as e:
        other.channel().basic_consume(q, lambda *a: None)
    assert e.value.reply_code == 403
    assert "in exclusive use" in e.value.reply_text

    private = ch.queue_declare("", exclusive=True).method.queue
    with pytest.raises(ChannelClosedByBroker) as e:
        other.channel().queue_declare(private, passive=True)
    assert e.value.reply_code == 405
    assert e.value.reply_text.startswith("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue")
    other.close()


def test_exclusive_queue_goes_with_its_connection(server):
    first = connect(server)
    name = first.channel().queue_declare("", exclusive=True).method.queue
    first.close()
    c = connect(server)
    with pytest.raises(ChannelClosedByBroker) as e:
        c.channel().queue_declare(name, passive=True)
    assert e.value.reply_code == 404
    c.close()


@pytest.mark.parametrize(
    "action, code, text",
    [
        (lambda ch: ch.queue_declare("missing-" + uid(), passive=True), 404, "NOT_FOUND - no queue 'missing-"),
        (lambda ch: ch.exchange_declare("missing-" + uid(), passive=True), 404, "NOT_FOUND - no exchange"),
        (lambda ch: ch.basic_publish("missing-" + uid(), "k", b"x"), 404, "NOT_FOUND - no exchange"),
        (lambda ch: ch.queue_declare("amq.mine"), 403, "ACCESS_REFUSED - queue name 'amq.mine' contains reserved prefix"),
        (lambda ch: ch.queue_bind("q", ""), 403, "ACCESS_REFUSED - operation not permitted on the default exchange"),
        (lambda ch: ch.queue_declare(uid(), arguments={"x-unknown": 1}), 406, "PRECONDITION_FAILED - unsupported arg 'x-unknown'"),
        (lambda ch: ch.queue_declare(uid(), arguments={"x-max-length": -1}), 406, "PRECONDITION_FAILED - invalid arg 'x-max-length'"),
        (lambda ch: ch.queue_declare(uid(), arguments={"x-queue-type": "quorum"}), 406, "invalid property 'non-durable'"),
        (lambda ch: ch.basic_ack(99), 406, "PRECONDITION_FAILED - unknown delivery tag 99"),
    ],
    ids=[
        "missing-queue",
        "missing-exchange",
        "publish-to-missing-exchange",
        "reserved-queue-name",
        "bind-to-default-exchange",
        "unknown-queue-argument",
        "negative-queue-argument",
        "non-durable-quorum",
        "unknown-delivery-tag",
    ],
)
def test_channel_errors_close_the_channel_with_rabbitmq_codes(conn, action, code, text):
    ch = conn.channel()
    ch.queue_declare("q")
    with pytest.raises(ChannelClosedByBroker) as e:
        action(ch)
        # Some errors (publish, ack) are asynchronous: a round trip brings them back.
        ch.queue_declare("q", passive=True)
    assert e.value.reply_code == code
    assert e.value.reply_text.startswith(text) or text in e.value.reply_text, e.value.reply_text
    assert conn.is_open
    # The connection goes on: a new channel works.
    conn.channel().queue_declare("q", passive=True)


def test_redeclare_with_different_arguments_is_406(ch, conn):
    q = uid()
    ch.queue_declare(q, durable=True, arguments={"x-max-length": 10})
    ch.queue_declare(q, durable=True, arguments={"x-max-length": 10})
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(q, durable=True, arguments={"x-max-length": 20})
    assert closed_with(e) == (
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': "
        "received '20' but current is '10'",
    )
    with pytest.raises(ChannelClosedByBroker) as e:
        conn.channel().queue_declare(q, durable=False, arguments={"x-max-length": 10})
    assert "inequivalent arg 'durable'" in e.value.reply_text
    with pytest.raises(ChannelClosedByBroker) as e:
        conn.channel().queue_declare(q, durable=True)
    assert e.value.reply_text.endswith(
        "inequivalent arg 'x-max-length' for queue '%s' in vhost '/': "
        "received none but current is the value '10' of type 'signedint'" % q
    )
    with pytest.raises(ChannelClosedByBroker) as e:
        conn.channel().queue_declare(q, durable=True, arguments={"x-max-length": 10, "x-message-ttl": 5})
    assert e.value.reply_text.endswith(
        "inequivalent arg 'x-message-ttl' for queue '%s' in vhost '/': "
        "received the value '5' of type 'signedint' but current is none" % q
    )


def test_quorum_queue_delivery_limit_and_delivery_count(ch):
    dlq, q = uid("dlq"), uid()
    ch.queue_declare(dlq)
    ch.queue_declare(
        q,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": 2,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq,
        },
    )
    ch.basic_publish("", q, b"poison")
    counts = []
    for _ in range(3):
        method, props, _ = get_eventually(ch, q)
        counts.append(props.headers["x-delivery-count"])
        ch.basic_nack(method.delivery_tag, requeue=True)
    assert counts == [0, 1, 2]
    _, props, body = get_eventually(ch, dlq, auto_ack=True)
    assert ch.basic_get(q) == (None, None, None)
    assert body == b"poison"
    assert props.headers["x-death"][0]["reason"] == "delivery_limit"


def test_bad_password_is_refused(server):
    with pytest.raises(ProbableAuthenticationError):
        connect(server, credentials=pika.PlainCredentials("guest", "wrong"))


def test_heartbeats_keep_an_idle_connection_open(server):
    c = connect(server, heartbeat=1)
    ch = c.channel()
    c.sleep(3.5)  # pika drops a connection whose peer misses two heartbeats
    assert c.is_open
    ch.queue_declare(uid())
    c.close()


def raw(server):
    s = socket.create_connection(("127.0.0.1", server.amqp_port), timeout=5)
    return s


def read_all(s, limit=1 << 16):
    data = b""
    try:
        while len(data) < limit:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    return data


def test_wrong_protocol_header_is_answered_with_ours(server):
    s = raw(server)
    s.sendall(b"AMQP\x01\x01\x00\x0a")
    assert read_all(s) == b"AMQP\x00\x00\x09\x01"
    s.close()


def test_garbage_after_the_header_is_a_frame_error(server):
    s = raw(server)
    s.sendall(b"AMQP\x00\x00\x09\x01")
    time.sleep(0.1)
    # connection.start arrives; answer with a frame of an unknown type.
    s.sendall(struct.pack(">BHI", 42, 0, 1) + b"x\xce")
    data = read_all(s)
    assert b"FRAME_ERROR" in data
    s.close()


def test_silent_client_is_disconnected_after_the_handshake_timeout():
    server = Server(env={"WHARF_AMQP_HANDSHAKE_TIMEOUT_MS": "300"})
    try:
        s = raw(server)
        started = time.monotonic()
        assert read_all(s) == b""  # closed, nothing said: no header was ever sent
        assert time.monotonic() - started < 4
        s.close()
    finally:
        server.stop()


def test_connections_are_counted_in_metrics(server):
    c = connect(server)

    def amqp_connections():
        import requests

        text = requests.get(f"http://{server.admin}/metrics", timeout=5).text
        line = next(l for l in text.splitlines() if l.startswith('wharf_connections{protocol="amqp"}'))
        return float(line.split()[-1])

    assert wait_until(lambda: amqp_connections() >= 1, timeout=5)
    c.close()


def closed_within(ch, queue, seconds):
    """Round trips until the broker closes the channel; its ChannelClosedByBroker."""
    deadline = time.monotonic() + seconds
    with pytest.raises(ChannelClosedByBroker) as e:
        while time.monotonic() < deadline:
            time.sleep(0.1)  # not BlockingConnection.sleep: the close must surface in a call
            ch.queue_declare(queue, passive=True)
    return e.value


def test_unacked_delivery_past_the_queue_consumer_timeout_closes_the_channel(conn):
    ch = conn.channel()
    q = uid()
    ch.queue_declare(q, arguments={"x-consumer-timeout": 300})
    ch.basic_publish("", q, b"held")
    ch.basic_consume(q, lambda *a: None)  # never acks
    closed = closed_within(ch, q, 5)
    assert closed.reply_code == 406
    assert closed.reply_text.startswith(
        "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 300 ms"
    )
    # The message went back to the queue for someone else.
    assert conn.channel().basic_get(q, auto_ack=True)[2] == b"held"


def test_server_consumer_timeout_setting_and_acked_deliveries_are_fine():
    server = Server(env={"WHARF_AMQP_CONSUMER_TIMEOUT_MS": "400"})
    try:
        c = connect(server)
        ch = c.channel()
        q = uid()
        ch.queue_declare(q)
        ch.basic_publish("", q, b"acked in time")
        method, _, _ = ch.basic_get(q)
        ch.basic_ack(method.delivery_tag)
        time.sleep(1.5)
        ch.queue_declare(q, passive=True)  # nothing unacked: no timeout
        ch.basic_publish("", q, b"not acked")
        ch.basic_get(q)
        closed = closed_within(ch, q, 5)
        assert closed.reply_code == 406
        assert "Timeout value used: 400 ms" in closed.reply_text
        c.close()
    finally:
        server.stop()


def test_the_default_and_amq_exchanges_exist_and_are_reserved(ch, conn):
    for name, kind in [
        ("amq.direct", "direct"),
        ("amq.fanout", "fanout"),
        ("amq.topic", "topic"),
        ("amq.headers", "headers"),
        ("amq.match", "headers"),
    ]:
        ch.exchange_declare(name, kind, passive=True)
    q = uid()
    ch.queue_declare(q)
    ch.queue_bind(q, "amq.topic", "a.*")
    ch.basic_publish("amq.topic", "a.b", b"via amq.topic")
    assert ch.basic_get(q, auto_ack=True)[2] == b"via amq.topic"
    with pytest.raises(ChannelClosedByBroker) as e:
        conn.channel().exchange_declare("amq.custom", "direct")
    assert e.value.reply_code == 403


def test_single_active_consumer_gets_everything_until_it_goes(server, ch):
    q = uid()
    ch.queue_declare(q, arguments={"x-single-active-consumer": True})
    first, second = connect(server), connect(server)
    got = {"first": [], "second": []}
    c1, c2 = first.channel(), second.channel()
    c1.basic_consume(q, lambda c, m, p, b: got["first"].append(b), auto_ack=True)
    c2.basic_consume(q, lambda c, m, p, b: got["second"].append(b), auto_ack=True)
    for i in range(4):
        ch.basic_publish("", q, str(i).encode())

    def pump(connection, key, want):
        deadline = time.monotonic() + 3
        while len(got[key]) < want and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.05)

    pump(first, "first", 4)
    second.process_data_events(time_limit=0.2)
    assert (got["first"], got["second"]) == ([b"0", b"1", b"2", b"3"], [])
    first.close()
    ch.basic_publish("", q, b"4")
    pump(second, "second", 1)
    assert got["second"] == [b"4"]
    second.close()


def test_global_qos_shares_one_window_across_the_channels_consumers(conn):
    ch = conn.channel()
    q1, q2 = uid(), uid()
    for q in (q1, q2):
        ch.queue_declare(q)
        for i in range(3):
            ch.basic_publish("", q, str(i).encode())
    ch.basic_qos(prefetch_count=2, global_qos=True)
    delivered = []
    ch.basic_consume(q1, lambda c, m, p, b: delivered.append(m))
    ch.basic_consume(q2, lambda c, m, p, b: delivered.append(m))
    conn.process_data_events(time_limit=0.3)
    assert len(delivered) == 2


def test_reject_publish_dlx_dead_letters_what_it_refuses(ch):
    dlq, q = uid("dlq"), uid()
    ch.queue_declare(dlq)
    ch.queue_declare(
        q,
        arguments={
            "x-max-length": 1,
            "x-overflow": "reject-publish-dlx",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq,
        },
    )
    ch.confirm_delivery()
    ch.basic_publish("", q, b"kept")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"over")
    _, props, body = get_eventually(ch, dlq, auto_ack=True)
    assert body == b"over"
    assert props.headers["x-death"][0]["reason"] == "maxlen"


def test_publishers_are_blocked_above_the_queued_bytes_watermark_and_unblocked_below():
    server = Server(env={"WHARF_QUEUED_BYTES_HIGH_WATERMARK": "100000"})
    try:
        publisher = connect(server)
        events = []
        publisher.add_on_connection_blocked_callback(lambda c, frame: events.append("blocked"))
        publisher.add_on_connection_unblocked_callback(lambda c, frame: events.append("unblocked"))
        ch = publisher.channel()
        q = uid()
        ch.queue_declare(q)
        for _ in range(20):
            ch.basic_publish("", q, b"x" * 10_000)  # 200 kB queued, twice the watermark
        deadline = time.monotonic() + 5
        while "blocked" not in events and time.monotonic() < deadline:
            publisher.process_data_events(time_limit=0.05)
        assert events == ["blocked"]
        # While blocked, what the publisher sends is not read: it is not routed yet.
        ch.basic_publish("", q, b"sent while blocked")
        consumer = connect(server)
        cch = consumer.channel()
        drained = 0
        while cch.basic_get(q, auto_ack=True)[0] is not None:
            drained += 1
        assert drained == 20
        deadline = time.monotonic() + 5
        while "unblocked" not in events and time.monotonic() < deadline:
            publisher.process_data_events(time_limit=0.05)
        assert events == ["blocked", "unblocked"]
        assert get_eventually(cch, q, auto_ack=True)[2] == b"sent while blocked"
        consumer.close()
        publisher.close()
    finally:
        server.stop()
