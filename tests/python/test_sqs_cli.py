"""The aws CLI, as people use it from shells and scripts."""

import json
import uuid


def test_cli_round_trip(aws_cli):
    name = f"cli-{uuid.uuid4().hex[:10]}"
    r = aws_cli("create-queue", "--queue-name", name, "--attributes", "VisibilityTimeout=5")
    assert r.returncode == 0, r.stderr
    url = json.loads(r.stdout)["QueueUrl"]

    r = aws_cli("send-message", "--queue-url", url, "--message-body", "from the cli",
                "--message-attributes", '{"kind":{"DataType":"String","StringValue":"test"}}')
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout)
    assert sent["MD5OfMessageBody"]

    r = aws_cli("receive-message", "--queue-url", url, "--message-attribute-names", "All",
                "--attribute-names", "All", "--wait-time-seconds", "1")
    assert r.returncode == 0, r.stderr
    msg = json.loads(r.stdout)["Messages"][0]
    assert msg["Body"] == "from the cli"
    assert msg["MessageAttributes"]["kind"]["StringValue"] == "test"

    r = aws_cli("delete-message", "--queue-url", url, "--receipt-handle", msg["ReceiptHandle"])
    assert r.returncode == 0, r.stderr

    r = aws_cli("get-queue-attributes", "--queue-url", url, "--attribute-names", "VisibilityTimeout")
    assert json.loads(r.stdout)["Attributes"] == {"VisibilityTimeout": "5"}

    r = aws_cli("list-queues", "--queue-name-prefix", name)
    assert json.loads(r.stdout)["QueueUrls"] == [url]

    r = aws_cli("delete-queue", "--queue-url", url)
    assert r.returncode == 0, r.stderr


def test_cli_reports_aws_error_codes(aws_cli):
    r = aws_cli("get-queue-url", "--queue-name", f"missing-{uuid.uuid4().hex[:8]}")
    assert r.returncode != 0
    assert "AWS.SimpleQueueService.NonExistentQueue" in r.stderr
