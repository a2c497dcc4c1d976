"""kill -9 under SQS load, with boto3 as the client.

A durable server (`--data-dir`, fsync always) takes SendMessage calls from several threads while
another thread receives and deletes some of them. A MessageId counts as accepted only once its
SendMessage returned 200, a delete as done only once DeleteMessage(Batch) returned success; a
send or delete still in flight when the server dies may or may not have happened. After the
kill the server restarts on the same data directory and everything is received again:

- every accepted, not deleted message is there exactly once, with its body and attributes as
  sent and MD5s that match them (computed here; boto3 does not check MD5s);
- no message whose delete succeeded comes back;
- anything else present is a send that was in flight at the kill, at most once.

Each round uses its own queue, and every earlier round's queue is checked again after every later
crash (leases do not survive a restart, so their messages are visible again).
"""

import base64
import hashlib
import random
import threading
import time
import uuid

import boto3
import pytest
from botocore.config import Config

from conftest import REGION, CREDS, Server, md5_of_attributes

ROUNDS = 3
# Accepted sends per round before the kill; with the deletes and the checks a round stays
# within a few seconds on a loaded 2-core machine.
ACCEPTED_PER_ROUND = 2000
SENDERS = 4
ROUND_DEADLINE_S = 15

# Text the SQS body charset allows, some of it multi-byte in UTF-8.
ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789\t\n<>&\"'{}[]éü漢字\u2603\U0001F600\uE000\uFFFD"


def client(endpoint):
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=REGION,
        # One attempt: a retried send could be stored twice, and a retry hides the kill.
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=15),
        **CREDS,
    )


def make_message(rng, tag):
    """A body that starts with a unique tag, and 0–4 attributes of every type."""
    body = tag + "|" + "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 600)))
    attrs = {}
    for i in range(rng.randint(0, 4)):
        kind = rng.choice(["String", "Number", "Binary", "String.custom", "Number.int", "Binary.gz"])
        name = f"attr{i}.{kind.split('.')[0].lower()}"
        if kind.startswith("String"):
            value = {"StringValue": "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40)))}
        elif kind.startswith("Number"):
            n = rng.choice([rng.randint(-(10**12), 10**12), round(rng.uniform(-1e6, 1e6), 4)])
            value = {"StringValue": str(n)}
        else:
            value = {"BinaryValue": rng.randbytes(rng.randint(1, 64))}
        attrs[name] = {"DataType": kind, **value}
    return body, attrs


class Load:
    """Senders and one deleter against one queue, recording only what was acknowledged."""

    def __init__(self, endpoint, queue_url, seed):
        self.endpoint = endpoint
        self.queue_url = queue_url
        self.seed = seed
        self.lock = threading.Lock()
        self.attempted_sends = {}  # tag -> (body, attrs), before the call
        self.accepted = {}  # MessageId -> (body, attrs), after the 200
        self.delete_attempted = set()  # MessageId, before DeleteMessage(Batch)
        self.deleted = set()  # MessageId, after success
        self.killing = threading.Event()
        self.errors = []
        self.threads = []

    def start(self):
        for n in range(SENDERS):
            self.threads.append(threading.Thread(target=self.guard, args=(self.send_loop, n), daemon=True))
        self.threads.append(threading.Thread(target=self.guard, args=(self.delete_loop, SENDERS), daemon=True))
        for t in self.threads:
            t.start()

    def guard(self, loop, n):
        try:
            loop(n)
        except Exception as e:  # noqa: BLE001 - a failure before the kill is a test failure
            if not self.killing.is_set():
                self.errors.append(f"thread {n}: {type(e).__name__}: {e}")

    def send_loop(self, n):
        sqs = client(self.endpoint)
        rng = random.Random(f"{self.seed}-{n}")
        seq = 0
        while not self.killing.is_set():
            tag = f"{self.seed}:{n}:{seq}"
            seq += 1
            body, attrs = make_message(rng, tag)
            with self.lock:
                self.attempted_sends[tag] = (body, attrs)
            kwargs = {"QueueUrl": self.queue_url, "MessageBody": body}
            if attrs:
                kwargs["MessageAttributes"] = attrs
            sent = sqs.send_message(**kwargs)
            assert sent["MD5OfMessageBody"] == hashlib.md5(body.encode()).hexdigest(), tag
            if attrs:
                assert sent["MD5OfMessageAttributes"] == md5_of_attributes(attrs), tag
            with self.lock:
                self.accepted[sent["MessageId"]] = (body, attrs)

    def delete_loop(self, n):
        sqs = client(self.endpoint)
        rng = random.Random(f"{self.seed}-deleter")
        while not self.killing.is_set():
            # A long visibility timeout: what is not deleted stays in flight until the crash,
            # after which it must be visible again.
            got = sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600, WaitTimeSeconds=1
            ).get("Messages", [])
            chosen = [m for m in got if rng.random() < 0.5]
            if not chosen:
                continue
            with self.lock:
                self.delete_attempted.update(m["MessageId"] for m in chosen)
            if rng.random() < 0.5:
                for m in chosen:
                    sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
                    with self.lock:
                        self.deleted.add(m["MessageId"])
            else:
                entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chosen)]
                resp = sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
                assert not resp.get("Failed"), resp["Failed"]
                with self.lock:
                    self.deleted.update(chosen[int(e["Id"])]["MessageId"] for e in resp.get("Successful", []))

    def stop(self):
        self.killing.set()
        for t in self.threads:
            t.join(20)
            assert not t.is_alive(), "a load thread did not stop after the kill"


def receive_all(sqs, queue_url):
    """Every message in the queue, each leased for an hour so none is returned twice."""
    out = []
    empty = 0
    while empty < 2:
        got = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=3600,
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
        ).get("Messages", [])
        out.extend(got)
        empty = 0 if got else empty + 1
    return out


def check_round(sqs, load):
    """The recovered queue against what the load recorded; returns the message count."""
    messages = receive_all(sqs, load.queue_url)
    tags_accepted = {body.split("|", 1)[0] for body, _ in load.accepted.values()}
    seen_ids, seen_extra_tags = set(), set()
    for m in messages:
        mid = m["MessageId"]
        assert mid not in seen_ids, f"{mid} returned twice"
        seen_ids.add(mid)
        body = m["Body"]
        attrs = m.get("MessageAttributes", {})
        assert m["MD5OfBody"] == hashlib.md5(body.encode()).hexdigest(), mid
        if attrs:
            assert m["MD5OfMessageAttributes"] == md5_of_attributes(attrs), mid
        assert mid not in load.deleted, f"{mid} was deleted (DeleteMessage succeeded) and came back"
        if mid in load.accepted:
            assert (body, attrs) == load.accepted[mid], f"{mid} changed"
        else:
            # Not acknowledged: must be a send in flight at the kill, stored at most once.
            tag = body.split("|", 1)[0]
            assert tag in load.attempted_sends and tag not in tags_accepted, f"unknown message {mid}: {body[:60]!r}"
            assert tag not in seen_extra_tags, f"in-flight send {tag} stored twice"
            seen_extra_tags.add(tag)
            assert (body, attrs) == load.attempted_sends[tag], f"in-flight send {tag} changed"
    must_be_there = set(load.accepted) - load.delete_attempted
    missing = must_be_there - seen_ids
    assert not missing, f"{len(missing)} accepted messages lost, e.g. {sorted(missing)[:3]}"
    return len(messages)


def test_kill_9_under_sqs_load_loses_nothing_accepted(tmp_path):
    data_dir = tmp_path / "data"
    started = time.monotonic()
    server = Server(storage=["--data-dir", str(data_dir)])
    loads = []
    try:
        for round_no in range(ROUNDS):
            sqs = client(server.endpoint)
            queue_url = sqs.create_queue(QueueName=f"crash-{round_no}-{uuid.uuid4().hex[:6]}")["QueueUrl"]
            load = Load(server.endpoint, queue_url, seed=f"r{round_no}-{uuid.uuid4().hex[:6]}")
            loads.append(load)
            load.start()
            deadline = time.monotonic() + ROUND_DEADLINE_S
            while len(load.accepted) < ACCEPTED_PER_ROUND and time.monotonic() < deadline and not load.errors:
                time.sleep(0.02)
            assert not load.errors, load.errors
            assert len(load.accepted) >= ACCEPTED_PER_ROUND // 4, f"only {len(load.accepted)} sends in {ROUND_DEADLINE_S} s"
            # Mid-load: senders and the deleter all have calls in flight.
            load.killing.set()
            server.kill()
            load.stop()
            assert server.proc.returncode == -9
            assert load.deleted, "the deleter deleted nothing before the kill"

            server = Server(storage=["--data-dir", str(data_dir)])
            sqs = client(server.endpoint)
            for earlier in loads:
                count = check_round(sqs, earlier)
                assert count >= len(set(earlier.accepted) - earlier.delete_attempted)
            print(
                f"round {round_no}: {len(load.accepted)} accepted, {len(load.deleted)} deleted "
                f"({len(load.delete_attempted) - len(load.deleted)} in doubt), "
                f"{len(load.attempted_sends) - len(load.accepted)} sends in flight at the kill; "
                f"{time.monotonic() - started:.1f} s"
            )
    finally:
        server.stop()
