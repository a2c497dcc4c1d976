"""SIGTERM while clients are busy: requests in flight finish, long polls are answered (empty)
instead of holding the restart hostage for 20 s, the process exits 0, and what was sent before
the signal is still there after a restart."""

import threading
import time

import boto3
from botocore.config import Config

from conftest import CREDS, REGION, Server


def client(server):
    return boto3.client(
        "sqs",
        endpoint_url=server.endpoint,
        region_name=REGION,
        config=Config(retries={"max_attempts": 1}, read_timeout=40),
        **CREDS,
    )


def test_sigterm_answers_long_polls_and_exits_cleanly(tmp_path):
    server = Server(storage=["--data-dir", str(tmp_path)])
    try:
        sqs = client(server)
        empty = sqs.create_queue(QueueName="idle")["QueueUrl"]
        kept = sqs.create_queue(QueueName="kept")["QueueUrl"]
        sqs.send_message(QueueUrl=kept, MessageBody="still here after the restart")

        answers = []

        def long_poll():
            answers.append(sqs.receive_message(QueueUrl=empty, WaitTimeSeconds=20))

        poller = threading.Thread(target=long_poll)
        poller.start()
        time.sleep(0.5)  # the poll is waiting inside the server

        started = time.monotonic()
        server.proc.terminate()
        code = server.proc.wait(15)
        elapsed = time.monotonic() - started
        poller.join(5)

        assert code == 0, "".join(server.output)
        assert elapsed < 5, f"shutdown took {elapsed:.1f} s with a long poll open"
        assert len(answers) == 1, "the long poll got no answer"
        assert answers[0].get("Messages", []) == []
    finally:
        server.stop()

    again = Server(storage=["--data-dir", str(tmp_path)])
    try:
        sqs = client(again)
        url = sqs.get_queue_url(QueueName="kept")["QueueUrl"]
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
        assert [m["Body"] for m in got] == ["still here after the restart"]
    finally:
        again.stop()
