"""RabbitMQ parity: scenarios written from RabbitMQ's side, run against wharf and against a
private RabbitMQ node, asserting what a user observes (replies, counts, properties, headers,
error codes and texts). The expected values are RabbitMQ's: the RabbitMQ half proves the
expectation, the wharf half proves wharf matches it. (test_amqp_differential.py is the other
direction: wharf's own pika scenarios re-run against RabbitMQ.)

RabbitMQ is Debian's rabbitmq-server, started once per session as a plain process with its own
ports and directories (`rabbitmq` fixture); when it is not installed or does not start, its half
is skipped with the reason. Scenarios wharf does not pass yet are marked xfail(strict=True) for
wharf only, with the reason, in WHARF_XFAIL below.

Both brokers get the same users: guest/guest (all permissions on /) and `limited`, whose
permissions allow only names starting with `lim-`, with the same RabbitMQ password hash.
"""

import base64
import datetime
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pika
import pika.exceptions
import pytest

from conftest import ROOT, Server, free_ports

LIMITED_USER = "limited"
LIMITED_PASSWORD = "lim-pw"
# A vhost only `limited` may open (with three empty expressions: nothing allowed inside).
OTHER_VHOST = "diff-vhost"
# What each broker answers to a failed login (RabbitMQ 3.10 hides the reason from the client).
LOGIN_REFUSED = (
    "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
    "For details see the broker logfile."
)

# Scenario name -> why wharf does not pass it yet. Each becomes xfail(strict=True) on the
# wharf half only: when wharf starts passing, the suite fails until the entry is removed.
WHARF_XFAIL = {}


def rabbitmq_hash(password, salt=None):
    """RabbitMQ's rabbit_password_hashing_sha256, written independently of wharf's."""
    salt = salt if salt is not None else os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


LIMITED_HASH = rabbitmq_hash(LIMITED_PASSWORD)


# ---------------------------------------------------------------------------------------------
# Brokers


def non_loopback_address():
    """This machine's address on its default route (no packet is sent), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("203.0.113.1", 9))
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


class Broker:
    def __init__(self, name, port, external=None):
        self.name = name
        self.port = port
        # (host, port) where the broker also listens on a non-loopback address, if it does.
        self.external = external

    def params(self, user="guest", password="guest", vhost="/", host="127.0.0.1", port=None):
        return pika.ConnectionParameters(
            host=host,
            port=port or self.port,
            virtual_host=vhost,
            credentials=pika.PlainCredentials(user, password),
            connection_attempts=1,
            socket_timeout=5,
            blocked_connection_timeout=10,
        )

    def connect(self, **kw):
        return pika.BlockingConnection(self.params(**kw))


def _wait_port(port, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


@pytest.fixture(scope="session")
def rabbitmq():
    """A private RabbitMQ node: own node name, ports, directories, no plugins; the same users
    as wharf's (loaded from a definitions file)."""
    if not os.path.exists(RABBITMQ_SERVER):
        pytest.skip("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    base = Path(tempfile.mkdtemp(prefix="wharf-rabbitmq-"))
    port, dist_port = free_ports(2)
    (base / "enabled_plugins").write_text("[].\n")
    definitions = {
        "users": [
            {"name": "guest", "password_hash": rabbitmq_hash("guest"), "tags": "administrator",
             "hashing_algorithm": "rabbit_password_hashing_sha256"},
            {"name": LIMITED_USER, "password_hash": LIMITED_HASH, "tags": "",
             "hashing_algorithm": "rabbit_password_hashing_sha256"},
        ],
        "vhosts": [{"name": "/"}, {"name": OTHER_VHOST}],
        "permissions": [
            {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
            {"user": LIMITED_USER, "vhost": "/", "configure": "^lim-", "write": "^lim-", "read": "^lim-"},
            {"user": LIMITED_USER, "vhost": OTHER_VHOST, "configure": "", "write": "", "read": ""},
        ],
    }
    (base / "definitions.json").write_text(json.dumps(definitions))
    external = non_loopback_address()
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.1 = 127.0.0.1:{port}\n"
        + (f"listeners.tcp.2 = {external}:{port}\n" if external else "")
        + f"load_definitions = {base / 'definitions.json'}\n"
    )
    env = dict(
        os.environ,
        HOME=str(base),
        RABBITMQ_NODE_PORT=str(port),
        RABBITMQ_DIST_PORT=str(dist_port),
        RABBITMQ_NODENAME=f"wharfdiff{os.getpid()}@localhost",
        RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
        RABBITMQ_LOG_BASE=str(base / "log"),
        RABBITMQ_CONFIG_FILE=str(base / "rabbitmq"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
        RABBITMQ_PID_FILE=str(base / "pid"),
    )
    log = open(base / "server.out", "w")
    proc = subprocess.Popen(
        [RABBITMQ_SERVER],
        env=env,
        cwd=base,  # an Erlang crash dump lands here, not in the working tree
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        if not _wait_port(port, proc, 90):
            tail = (base / "server.out").read_text()[-800:]
            pytest.skip(f"the private rabbitmq-server node did not start: {tail}")
        yield Broker("rabbitmq", port, (external, port) if external else None)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _wharf_has_amqp():
    binary = os.environ.get("WHARF_BIN") or str(ROOT / "target" / "debug" / "wharf")
    out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True).stdout
    return "--amqp" in out


@pytest.fixture(scope="session")
def wharf_amqp(tmp_path_factory):
    if not _wharf_has_amqp():
        pytest.skip("this wharf build has no AMQP listener (no --amqp flag)")
    config = tmp_path_factory.mktemp("wharf-amqp") / "wharf.toml"
    config.write_text(
        f"""
[[user]]
name = "guest"
password = "guest"
tags = ["administrator"]

[[user]]
name = "{LIMITED_USER}"
password_hash = "{LIMITED_HASH}"

[[permission]]
user = "guest"
configure = ".*"
write = ".*"
read = ".*"

[[permission]]
user = "{LIMITED_USER}"
configure = "^lim-"
write = "^lim-"
read = "^lim-"

[[vhost]]
name = "{OTHER_VHOST}"

[[permission]]
user = "{LIMITED_USER}"
vhost = "{OTHER_VHOST}"
configure = ""
write = ""
read = ""
"""
    )
    (port,) = free_ports(1)
    server = Server(config=config, env={"WHARF_AMQP": f"127.0.0.1:{port}"})
    # wharf listens on one AMQP address: a second server on the non-loopback one, same config.
    external = non_loopback_address()
    outside = Server(config=config, env={"WHARF_AMQP": f"{external}:{port}"}) if external else None
    try:
        if not _wait_port(port, server.proc, 10):
            raise RuntimeError("wharf started but does not listen for AMQP:\n" + "".join(server.output))
        yield Broker("wharf", port, (external, port) if external else None)
    finally:
        server.stop()
        if outside:
            outside.stop()


@pytest.fixture(params=["wharf", "rabbitmq"])
def broker(request):
    if request.param == "wharf":
        reason = WHARF_XFAIL.get(request.node.originalname)
        if reason:
            request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))
        return request.getfixturevalue("wharf_amqp")
    return request.getfixturevalue("rabbitmq")


@pytest.fixture
def conn(broker):
    c = broker.connect()
    yield c
    if c.is_open:
        c.close()


def name(prefix="diff"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def channel_error(conn, action):
    """Run action(channel) on a fresh channel; return the (code, text) the broker closed it
    with."""
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        action(ch)
        # An asynchronous error (e.g. after basic.publish) shows on the next synchronous call.
        ch.queue_declare(queue="", exclusive=True)
    return info.value.reply_code, info.value.reply_text


def get_all(ch, queue, limit=100):
    out = []
    for _ in range(limit):
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            break
        out.append((props, body))
    return out


def poll_get(ch, queue, timeout=5.0):
    """basic.get until a message arrives (time-based behaviour: TTL, dead-lettering)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, props, body
        time.sleep(0.02)
    return None, None, None


# ---------------------------------------------------------------------------------------------
# Scenarios


def test_declare_publish_get_round_trip(conn):
    ch = conn.channel()
    ok = ch.queue_declare(queue="", exclusive=True)
    q = ok.method.queue
    assert q.startswith("amq.gen-")
    assert (ok.method.message_count, ok.method.consumer_count) == (0, 0)
    props = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers={"k": "v", "n": 7, "nested": {"a": [1, "two"]}},
        delivery_mode=2,
        priority=3,
        correlation_id="corr-1",
        reply_to="reply-q",
        expiration="60000",
        message_id="m-1",
        timestamp=1700000000,
        type="t",
        user_id="guest",
        app_id="differential",
    )
    ch.confirm_delivery()  # so the count below sees every publish
    for i in range(3):
        ch.basic_publish("", q, f"body-{i}".encode(), props)
    assert ch.queue_declare(queue=q, passive=True).method.message_count == 3
    method, got, body = ch.basic_get(q)
    assert body == b"body-0"
    assert (method.redelivered, method.exchange, method.routing_key, method.message_count) == (False, "", q, 2)
    for field in ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
                  "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
                  "user_id", "app_id"):
        assert getattr(got, field) == getattr(props, field), field
    ch.basic_ack(method.delivery_tag)
    assert [b for _, b in get_all(ch, q)] == [b"body-1", b"body-2"]
    assert ch.basic_get(q) == (None, None, None)


def test_consume_in_order_with_consumer_tag(conn):
    ch = conn.channel()
    q = ch.queue_declare(queue=name(), exclusive=True).method.queue
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    seen = []
    for method, _props, body in ch.consume(q, auto_ack=False, inactivity_timeout=2):
        if method is None:
            break
        seen.append((method.redelivered, body))
        ch.basic_ack(method.delivery_tag)
        if len(seen) == 5:
            break
    ch.cancel()
    assert seen == [(False, str(i).encode()) for i in range(5)]


def test_missing_queue_is_404(conn):
    q = name("missing")
    code, text = channel_error(conn, lambda ch: ch.queue_declare(queue=q, passive=True))
    assert (code, text) == (404, f"NOT_FOUND - no queue '{q}' in vhost '/'")
    code, text = channel_error(conn, lambda ch: ch.basic_get(q))
    assert (code, text) == (404, f"NOT_FOUND - no queue '{q}' in vhost '/'")
    x = name("missing-x")
    code, text = channel_error(conn, lambda ch: ch.basic_publish(x, "rk", b"m"))
    assert (code, text) == (404, f"NOT_FOUND - no exchange '{x}' in vhost '/'")


def test_inequivalent_arguments_are_406(conn):
    q = name()
    conn.channel().queue_declare(queue=q, durable=False, auto_delete=True)
    code, text = channel_error(conn, lambda ch: ch.queue_declare(queue=q, durable=True, auto_delete=True))
    assert code == 406
    assert text == (
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': "
        "received 'true' but current is 'false'"
    )
    code, text = channel_error(
        conn, lambda ch: ch.queue_declare(queue=q, auto_delete=True, arguments={"x-max-length": 5})
    )
    assert code == 406
    assert text == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': "
        "received the value '5' of type 'signedint' but current is none"
    )


def test_exclusive_queue_is_locked_405(broker, conn):
    q = name()
    conn.channel().queue_declare(queue=q, exclusive=True)
    other = broker.connect()
    try:
        code, text = channel_error(other, lambda ch: ch.queue_declare(queue=q))
        assert code == 405
        assert text == (
            f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. "
            "It could be originally declared on another connection or the exclusive property value "
            "does not match that of the original declaration."
        )
        code, _ = channel_error(other, lambda ch: ch.basic_get(q))
        assert code == 405
    finally:
        other.close()


def test_permissions_refuse_with_403(broker, conn):
    limited = broker.connect(user=LIMITED_USER, password=LIMITED_PASSWORD)
    try:
        q = name("other")
        code, text = channel_error(limited, lambda ch: ch.queue_declare(queue=q))
        assert (code, text) == (
            403, f"ACCESS_REFUSED - access to queue '{q}' in vhost '/' refused for user '{LIMITED_USER}'"
        )
        # Allowed names work; the default exchange is checked as amq.default.
        mine = name("lim")
        limited.channel().queue_declare(queue=mine, auto_delete=True)
        code, text = channel_error(limited, lambda ch: ch.basic_publish("", mine, b"m"))
        assert (code, text) == (
            403,
            "ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user "
            f"'{LIMITED_USER}'",
        )
        # Reading someone else's queue.
        theirs = conn.channel().queue_declare(queue=name("guest-only")).method.queue
        code, text = channel_error(limited, lambda ch: ch.basic_get(theirs))
        assert (code, text) == (
            403, f"ACCESS_REFUSED - access to queue '{theirs}' in vhost '/' refused for user '{LIMITED_USER}'"
        )
        conn.channel().queue_delete(theirs)
    finally:
        if limited.is_open:
            limited.close()


@pytest.mark.parametrize("user,password", [("guest", "wrong"), ("nobody", "guest")])
def test_bad_login_is_refused(broker, user, password):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        broker.connect(user=user, password=password)
    assert LOGIN_REFUSED in str(info.value)


def test_guest_may_connect_only_from_loopback(broker):
    if broker.external is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    host, port = broker.external
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        broker.connect(host=host, port=port)
    assert LOGIN_REFUSED in str(info.value)
    # Other users may.
    broker.connect(user=LIMITED_USER, password=LIMITED_PASSWORD, host=host, port=port).close()


def test_vhost_access(broker):
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        broker.connect(vhost=OTHER_VHOST)
    assert f"NOT_ALLOWED - access to vhost '{OTHER_VHOST}' refused for user 'guest'" in str(info.value)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        broker.connect(vhost="no-such-vhost")
    assert "NOT_ALLOWED - vhost no-such-vhost not found" in str(info.value)
    # Empty expressions open the vhost but allow nothing in it.
    limited = broker.connect(user=LIMITED_USER, password=LIMITED_PASSWORD, vhost=OTHER_VHOST)
    try:
        code, text = channel_error(limited, lambda ch: ch.queue_declare(queue="lim-q"))
        assert (code, text) == (
            403,
            f"ACCESS_REFUSED - access to queue 'lim-q' in vhost '{OTHER_VHOST}' refused for user "
            f"'{LIMITED_USER}'",
        )
    finally:
        if limited.is_open:
            limited.close()


def test_mandatory_publish_is_returned(conn):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda _ch, method, props, body: returned.append((method, body)))
    ch.basic_publish("", name("nowhere"), b"lost", mandatory=True)
    ch.basic_publish("amq.direct", "no-binding", b"lost-too", mandatory=True)
    deadline = time.monotonic() + 5
    while len(returned) < 2 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert [(m.reply_code, m.reply_text, m.exchange, b) for m, b in returned] == [
        (312, "NO_ROUTE", "", b"lost"),
        (312, "NO_ROUTE", "amq.direct", b"lost-too"),
    ]
    # With confirms, pika reports it as unroutable.
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("", name("nowhere"), b"lost", mandatory=True)


def test_reject_nack_and_requeue(conn):
    ch = conn.channel()
    q = ch.queue_declare(queue=name(), exclusive=True).method.queue
    for body in (b"a", b"b", b"c"):
        ch.basic_publish("", q, body)
    m, _, body = ch.basic_get(q)
    assert (body, m.redelivered) == (b"a", False)
    ch.basic_reject(m.delivery_tag, requeue=True)
    m, _, body = ch.basic_get(q)
    assert (body, m.redelivered) == (b"a", True), "a requeued message goes back to its place"
    m2, _, body2 = ch.basic_get(q)
    assert body2 == b"b"
    # nack both at once (multiple), without requeue: both gone.
    ch.basic_nack(m2.delivery_tag, multiple=True, requeue=False)
    m3, _, body3 = ch.basic_get(q)
    assert (body3, m3.redelivered) == (b"c", False)
    ch.basic_nack(m3.delivery_tag, requeue=True)
    # (Not a message_count check: a requeue is asynchronous and RabbitMQ's count lags it.)
    m, _, body = poll_get(ch, q)
    assert (body, m.redelivered) == (b"c", True)
    assert ch.basic_get(q) == (None, None, None)
    code, text = channel_error(conn, lambda c: c.basic_ack(12345))
    assert (code, text) == (406, "PRECONDITION_FAILED - unknown delivery tag 12345")


def _x_death_without_time(headers):
    """x-death entries with their `time` checked (an AMQP timestamp of about now) and removed."""
    deaths = [dict(d) for d in headers["x-death"]]
    for d in deaths:
        when = d.pop("time")
        assert isinstance(when, datetime.datetime), repr(when)
        assert abs(when.replace(tzinfo=datetime.timezone.utc).timestamp() - time.time()) < 120
    return deaths


def test_dead_letter_on_reject_sets_x_death(conn):
    ch = conn.channel()
    dlq = ch.queue_declare(queue=name("dlq"), exclusive=True).method.queue
    src = name("src")
    ch.queue_declare(queue=src, exclusive=True, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", src, b"poison", pika.BasicProperties(headers={"own": "kept"}))
    m, _, _ = ch.basic_get(src)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, props, body = poll_get(ch, dlq)
    assert body == b"poison"
    assert (m.exchange, m.routing_key) == ("", dlq)
    headers = dict(props.headers)
    assert headers["own"] == "kept"
    assert headers["x-first-death-reason"] == "rejected"
    assert headers["x-first-death-queue"] == src
    assert headers["x-first-death-exchange"] == ""
    assert _x_death_without_time(headers) == [
        {"count": 1, "reason": "rejected", "queue": src, "exchange": "", "routing-keys": [src]}
    ]


def test_message_ttl_expires_and_dead_letters(conn):
    ch = conn.channel()
    dlq = ch.queue_declare(queue=name("dlq"), exclusive=True).method.queue
    src = name("ttl")
    ch.queue_declare(queue=src, exclusive=True, arguments={
        "x-message-ttl": 30, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", src, b"short-lived")
    m, props, body = poll_get(ch, dlq)
    assert body == b"short-lived"
    assert props.headers["x-first-death-reason"] == "expired"
    assert _x_death_without_time(props.headers) == [
        {"count": 1, "reason": "expired", "queue": src, "exchange": "", "routing-keys": [src]}
    ]
    assert ch.queue_declare(queue=src, passive=True).method.message_count == 0


def test_per_message_expiration(conn):
    ch = conn.channel()
    q = ch.queue_declare(queue=name(), exclusive=True).method.queue
    ch.basic_publish("", q, b"gone", pika.BasicProperties(expiration="20"))
    ch.basic_publish("", q, b"stays", pika.BasicProperties(expiration="60000"))
    time.sleep(0.1)
    got = get_all(ch, q)
    assert [b for _, b in got] == [b"stays"]
    assert got[0][0].expiration == "60000"


def test_max_length_drop_head(conn):
    ch = conn.channel()
    q = ch.queue_declare(queue=name(), exclusive=True, arguments={"x-max-length": 2}).method.queue
    for body in (b"1", b"2", b"3"):
        ch.basic_publish("", q, body)
    assert [b for _, b in get_all(ch, q)] == [b"2", b"3"]


def test_max_length_reject_publish_nacks(conn):
    ch = conn.channel()
    q = ch.queue_declare(queue=name(), exclusive=True, arguments={
        "x-max-length": 2, "x-overflow": "reject-publish"}).method.queue
    ch.confirm_delivery()
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"3")
    assert [b for _, b in get_all(ch, q)] == [b"1", b"2"]


def test_max_length_drop_head_dead_letters_maxlen(conn):
    ch = conn.channel()
    dlq = ch.queue_declare(queue=name("dlq"), exclusive=True).method.queue
    q = ch.queue_declare(queue=name(), exclusive=True, arguments={
        "x-max-length": 1, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}).method.queue
    ch.basic_publish("", q, b"old")
    ch.basic_publish("", q, b"new")
    m, props, body = poll_get(ch, dlq)
    assert body == b"old"
    assert props.headers["x-first-death-reason"] == "maxlen"
    assert [b for _, b in get_all(ch, q)] == [b"new"]


def test_priorities(conn):
    ch = conn.channel()
    q = ch.queue_declare(queue=name(), exclusive=True, arguments={"x-max-priority": 10}).method.queue
    for body, priority in ((b"p1", 1), (b"p5a", 5), (b"p9", 9), (b"p5b", 5), (b"p0", 0)):
        ch.basic_publish("", q, body, pika.BasicProperties(priority=priority))
    # Above the maximum counts as the maximum (10), so it comes first; equal priorities keep
    # publish order; no priority property is priority 0.
    ch.basic_publish("", q, b"p200", pika.BasicProperties(priority=200))
    ch.basic_publish("", q, b"none")
    assert [b for _, b in get_all(ch, q)] == [b"p200", b"p9", b"p5a", b"p5b", b"p1", b"p0", b"none"]


def test_purge_and_delete_report_counts(conn):
    ch = conn.channel()
    q = ch.queue_declare(queue=name()).method.queue
    ch.confirm_delivery()
    for _ in range(4):
        ch.basic_publish("", q, b"x")
    assert ch.queue_purge(q).method.message_count == 4
    ch.basic_publish("", q, b"y")
    code, text = channel_error(conn, lambda c: c.queue_delete(q, if_empty=True))
    assert (code, text) == (406, f"PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty")
    assert ch.queue_delete(q).method.message_count == 1


def test_topic_fanout_headers_and_exchange_to_exchange_routing(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    topic, fanout, headers = name("topic"), name("fanout"), name("headers")
    ch.exchange_declare(topic, "topic", auto_delete=True)
    ch.exchange_declare(fanout, "fanout", auto_delete=True)
    ch.exchange_declare(headers, "headers", auto_delete=True)
    queues = {}
    for key in ("a.*", "a.#", "#", "*.b"):
        q = ch.queue_declare(queue="", exclusive=True).method.queue
        ch.queue_bind(q, topic, key)
        queues[key] = q
    ch.exchange_bind(destination=topic, source=fanout)
    for rk in ("a.b", "a.b.c", "x.b", "a"):
        ch.basic_publish(topic, rk, rk.encode())
    ch.basic_publish(fanout, "a.z", b"via-fanout")
    got = {key: [b for _, b in get_all(ch, q)] for key, q in queues.items()}
    assert got == {
        "a.*": [b"a.b", b"via-fanout"],
        "a.#": [b"a.b", b"a.b.c", b"a", b"via-fanout"],
        "#": [b"a.b", b"a.b.c", b"x.b", b"a", b"via-fanout"],
        "*.b": [b"a.b", b"x.b"],
    }
    all_q = ch.queue_declare(queue="", exclusive=True).method.queue
    any_q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(all_q, headers, arguments={"x-match": "all", "k": "v", "n": 1})
    ch.queue_bind(any_q, headers, arguments={"x-match": "any", "k": "v", "n": 1})
    for label, h in (("both", {"k": "v", "n": 1}), ("one", {"k": "v"}), ("none", {"k": "w"})):
        ch.basic_publish(headers, "", label.encode(), pika.BasicProperties(headers=h))
    assert [b for _, b in get_all(ch, all_q)] == [b"both"]
    assert [b for _, b in get_all(ch, any_q)] == [b"both", b"one"]


def test_bind_to_missing_exchange_is_404(conn):
    q = conn.channel().queue_declare(queue="", exclusive=True).method.queue
    x = name("nox")
    code, text = channel_error(conn, lambda ch: ch.queue_bind(q, x, "rk"))
    assert (code, text) == (404, f"NOT_FOUND - no exchange '{x}' in vhost '/'")


def test_exclusive_consumer_refuses_others_403(conn):
    ch = conn.channel()
    q = ch.queue_declare(queue=name()).method.queue
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    code, text = channel_error(conn, lambda c: c.basic_consume(q, lambda *a: None))
    assert (code, text) == (403, f"ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use")
    conn.channel().queue_delete(q)


def test_prefetch_limits_unacked_deliveries(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    ch.basic_qos(prefetch_count=2)
    delivered = []
    ch.basic_consume(q, lambda c, m, p, b: delivered.append((m.delivery_tag, b)))
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert [b for _, b in delivered] == [b"0", b"1"], "no more than the prefetch count unacked"
    ch.basic_ack(delivered[1][0], multiple=True)
    deadline = time.monotonic() + 5
    while len(delivered) < 4 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert [b for _, b in delivered] == [b"0", b"1", b"2", b"3"]


def test_deleting_a_queue_cancels_its_consumers(broker, conn):
    ch = conn.channel()
    q = ch.queue_declare(queue=name()).method.queue
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(q, lambda *a: None)
    other = broker.connect()
    try:
        assert other.channel().queue_delete(q).method.message_count == 0
    finally:
        other.close()
    deadline = time.monotonic() + 5
    while not cancelled and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert cancelled == [tag]


def test_reject_publish_dlx_nacks_and_dead_letters(conn):
    ch = conn.channel()
    dlq = ch.queue_declare(queue=name("dlq"), exclusive=True).method.queue
    q = ch.queue_declare(queue=name(), exclusive=True, arguments={
        "x-max-length": 1, "x-overflow": "reject-publish-dlx",
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}).method.queue
    ch.confirm_delivery()
    ch.basic_publish("", q, b"kept")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"refused")
    m, props, body = poll_get(ch, dlq)
    assert body == b"refused"
    assert props.headers["x-first-death-reason"] == "maxlen"
    assert [b for _, b in get_all(ch, q)] == [b"kept"]
