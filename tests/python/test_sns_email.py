"""Email subscriptions through an SMTP relay (a local aiosmtpd sink): the confirmation mail
with its link, confirming by following it, notifications as text (with the unsubscribe link)
and as JSON (signed), and Subscribe's refusal when no relay is configured (test_sns_topics)."""

import email
import json
import re
import threading
import time
import uuid

import pytest
import requests
from aiosmtpd.controller import Controller

from conftest import Server, free_ports, sns_client, verify_sns_signature


class Sink:
    def __init__(self):
        self.mails = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content)
        with self.lock:
            self.mails.append({"to": envelope.rcpt_tos, "from": envelope.mail_from, "subject": msg["Subject"],
                               "content_type": msg.get_content_type(),
                               "body": msg.get_payload(decode=True).decode()})
        return "250 OK"

    def wait(self, n, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.mails) >= n:
                    return list(self.mails)
            time.sleep(0.05)
        raise AssertionError(f"expected {n} mails, got {self.mails}")


@pytest.fixture(scope="module")
def smtp():
    sink = Sink()
    [port] = free_ports(1)
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    sink.relay = f"127.0.0.1:{port}"
    yield sink
    controller.stop()


@pytest.fixture(scope="module")
def mail_server(smtp):
    s = Server(env={"WHARF_SNS_SMTP_RELAY": smtp.relay, "WHARF_SNS_EMAIL_FROM": "sns@wharf.test"})
    yield s
    s.stop()


def test_email_confirmation_and_notifications(mail_server, smtp):
    sns = sns_client(mail_server)
    assert any("email via " + smtp.relay in line for line in mail_server.output)
    topic = sns.create_topic(Name=f"mail-{uuid.uuid4().hex[:8]}", Attributes={"DisplayName": "Shop"})["TopicArn"]
    assert sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="ann@example.com")["SubscriptionArn"] == "pending confirmation"
    [conf] = smtp.wait(1)
    assert conf["to"] == ["ann@example.com"] and conf["from"] == "sns@wharf.test"
    assert conf["subject"] == "AWS Notification - Subscription Confirmation"
    link = re.search(r"(http://\S+Action=ConfirmSubscription\S+)", conf["body"]).group(1)
    assert requests.get(link, timeout=10).status_code == 200
    [sub] = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert sub["SubscriptionArn"] != "PendingConfirmation"
    sns.publish(TopicArn=topic, Message="Your order shipped.", Subject="Order 42")
    note = smtp.wait(2)[1]
    assert note["subject"] == "Order 42" and note["content_type"] == "text/plain"
    assert note["body"].startswith("Your order shipped.")
    assert "Action=Unsubscribe" in note["body"]
    # Without a Subject the topic's DisplayName is the mail's subject.
    sns.publish(TopicArn=topic, Message="no subject")
    assert smtp.wait(3)[2]["subject"] == "Shop"


def test_email_json(mail_server, smtp):
    sns = sns_client(mail_server)
    before = len(smtp.mails)
    topic = sns.create_topic(Name=f"mailjson-{uuid.uuid4().hex[:8]}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="email-json", Endpoint="bot@example.com")
    conf = json.loads(smtp.wait(before + 1)[before]["body"])
    assert conf["Type"] == "SubscriptionConfirmation"
    verify_sns_signature(conf)
    requests.get(conf["SubscribeURL"], timeout=10)
    sns.publish(TopicArn=topic, Message="machine readable")
    note = smtp.wait(before + 2)[before + 1]
    assert note["content_type"] == "application/json"
    body = json.loads(note["body"])
    assert body["Type"] == "Notification" and body["Message"] == "machine readable"
    verify_sns_signature(body)
