"""The pika scenarios of test_amqp_pika.py run against Debian's rabbitmq-server, when it is
installed: a private node with its own ports and directories, started once for this module.
What RabbitMQ does differently is listed below with the reason; each is a strict xfail, so a
difference that goes away (or a new one) fails the suite. Without rabbitmq-server the module
is skipped."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import test_amqp_pika as scenarios
from conftest import free_ports
from test_amqp_pika import ch, conn  # noqa: F401  (fixtures the scenarios use)

# The server script itself, not Debian's /usr/sbin wrapper: the wrapper switches to the rabbitmq
# user in a new session, out of the process group the fixture stops, and the node outlived the
# suite. The pid file below stops the node whichever script started it.
_DIRECT = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQ = _DIRECT if os.path.exists(_DIRECT) else shutil.which("rabbitmq-server")

# Scenario (or scenario[case]) → why RabbitMQ differs. wharf's behaviour is the deliberate one.
DIFFERENCES = {
    "test_channel_errors_close_the_channel_with_rabbitmq_codes[unknown-queue-argument]": (
        "RabbitMQ accepts and ignores unknown queue arguments; wharf refuses them with 406 so a "
        "typo cannot pass silently"
    ),
    "test_unacked_delivery_past_the_queue_consumer_timeout_closes_the_channel": (
        "the x-consumer-timeout queue argument arrived in RabbitMQ 3.12; Debian's is 3.10"
    ),
    "test_wrong_protocol_header_is_answered_with_ours": (
        "RabbitMQ 3.10 resets the connection instead of answering with its protocol header"
    ),
    "test_garbage_after_the_header_is_a_frame_error": (
        "RabbitMQ 3.10 drops the connection on an unknown frame type without a connection.close"
    ),
}

# wharf-only scenarios: they configure the server or read its metrics.
WHARF_ONLY = {
    "test_silent_client_is_disconnected_after_the_handshake_timeout",
    "test_server_consumer_timeout_setting_and_acked_deliveries_are_fine",
    "test_connections_are_counted_in_metrics",
}

for _name in dir(scenarios):
    if _name.startswith("test_") and _name not in WHARF_ONLY:
        globals()[_name] = getattr(scenarios, _name)


class Peer:
    """What the scenarios need of a server: the AMQP port."""

    def __init__(self, port):
        self.amqp_port = port


@pytest.fixture(scope="module")
def server():
    if not RABBITMQ:
        pytest.skip("rabbitmq-server is not installed (Debian package rabbitmq-server)")
    home = tempfile.mkdtemp(prefix="wharf-rabbit-")
    # The Debian script runs the node as the rabbitmq user; it must be able to write here.
    os.chmod(home, 0o777)
    for sub in ("mnesia", "log"):
        os.makedirs(os.path.join(home, sub), mode=0o777)
        os.chmod(os.path.join(home, sub), 0o777)
    with open(os.path.join(home, "enabled_plugins"), "w") as f:
        # The consistent-hash exchange is a plugin RabbitMQ ships (disabled by default).
        f.write("[rabbitmq_consistent_hash_exchange].\n")
    os.chmod(os.path.join(home, "enabled_plugins"), 0o666)
    port, dist = free_ports(2)
    env = dict(
        os.environ,
        HOME=home,
        RABBITMQ_NODE_PORT=str(port),
        RABBITMQ_DIST_PORT=str(dist),
        RABBITMQ_NODENAME=f"wharfpika{os.getpid()}@localhost",
        RABBITMQ_MNESIA_BASE=os.path.join(home, "mnesia"),
        RABBITMQ_LOG_BASE=os.path.join(home, "log"),
        RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(home, "enabled_plugins"),
        RABBITMQ_PID_FILE=os.path.join(home, "pid"),
    )
    proc = subprocess.Popen(
        [RABBITMQ],
        env=env,
        cwd=home,  # an Erlang crash dump lands here, not in the working tree
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_node(proc, home)
                pytest.skip("rabbitmq-server is installed but its node did not start here")
            time.sleep(0.2)
    yield Peer(port)
    stop_node(proc, home)


def stop_node(proc, home):
    """Stop the script's process group and the node named in its pid file, then remove home."""
    node = None
    try:
        with open(os.path.join(home, "pid")) as f:
            node = int(f.read().strip())
    except (OSError, ValueError):
        pass
    for pgid_or_pid, kill in ((proc.pid, os.killpg), (node, os.kill)):
        if pgid_or_pid:
            try:
                kill(pgid_or_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    if node:
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{node}"):
            if time.monotonic() > deadline:
                os.kill(node, signal.SIGKILL)
                break
            time.sleep(0.1)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def known_difference(request):
    reason = DIFFERENCES.get(request.node.name)
    if reason:
        request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))
