"""AMQP users, vhosts and permissions from the config file, as RabbitMQ has them: password
hashes in RabbitMQ's format, per-vhost configure/write/read regular expressions, 403 and 530
refusals with RabbitMQ's texts."""

import os
import subprocess

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ProbableAccessDeniedError, ProbableAuthenticationError

from conftest import ROOT, Server

# Made with `wharf hash-password ops-secret` (RabbitMQ's salted SHA-256 form).
OPS_HASH = "MLI8xFE6XgC+lNTX1rrBp3efMFdF9mrFnCdBJGdtJjtnDfAd"

CONFIG = r'''
[[vhost]]
name = "staging"

[[user]]
name = "app"
password = "app-secret"

[[user]]
name = "ops"
password_hash = "%s"
tags = ["administrator"]

[[permission]]
user = "app"
vhost = "/"
configure = "^app\\."
write = "^(app\\..*|amq\\.default)$"
read = "^app\\."

[[permission]]
user = "ops"
vhost = "staging"
configure = ".*"
write = ".*"
read = ".*"
''' % OPS_HASH


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = tmp_path_factory.mktemp("users") / "wharf.toml"
    config.write_text(CONFIG)
    s = Server(config=config)
    yield s
    s.stop()


def connect(server, user, password, vhost="/"):
    params = pika.ConnectionParameters(
        "127.0.0.1", server.amqp_port, vhost, pika.PlainCredentials(user, password)
    )
    return pika.BlockingConnection(params)


def test_configured_users_replace_guest(server):
    with pytest.raises(ProbableAuthenticationError):
        connect(server, "guest", "guest")
    with pytest.raises(ProbableAuthenticationError):
        connect(server, "app", "wrong")


def test_permissions_allow_and_refuse_with_rabbitmq_texts(server):
    conn = connect(server, "app", "app-secret")
    ch = conn.channel()
    ch.queue_declare("app.jobs")
    ch.basic_publish("", "app.jobs", b"allowed")
    assert ch.basic_get("app.jobs", auto_ack=True)[2] == b"allowed"
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("billing")
    assert (e.value.reply_code, e.value.reply_text) == (
        403,
        "ACCESS_REFUSED - access to queue 'billing' in vhost '/' refused for user 'app'",
    )
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare("app.events", "fanout")
        ch.exchange_declare("billing.events", "fanout")
    assert e.value.reply_text == "ACCESS_REFUSED - access to exchange 'billing.events' in vhost '/' refused for user 'app'"
    conn.close()


def test_a_vhost_without_permissions_is_refused_and_vhosts_are_separate(server):
    with pytest.raises(ProbableAccessDeniedError) as e:
        connect(server, "app", "app-secret", vhost="staging")
    assert "access to vhost 'staging' refused for user 'app'" in str(e.value)
    ops = connect(server, "ops", "ops-secret", vhost="staging")
    ch = ops.channel()
    ch.queue_declare("app.jobs")  # a different queue from the one in '/'
    ch.basic_publish("", "app.jobs", b"staging")
    assert ch.queue_declare("app.jobs", passive=True).method.message_count == 1
    ops.close()
    app = connect(server, "app", "app-secret")
    assert app.channel().queue_declare("app.jobs", passive=True).method.message_count == 0
    app.close()


def test_bad_user_declarations_stop_the_start_with_one_line(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[[permission]]\nuser = "ghost"\nconfigure = ".*"\nwrite = ".*"\nread = ".*"\n')
    binary = os.environ.get("WHARF_BIN") or str(ROOT / "target" / "debug" / "wharf")
    out = subprocess.run(
        [binary, "serve", "--in-memory", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0
    assert "permission for unknown user 'ghost'" in out.stderr
