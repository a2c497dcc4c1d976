"""The aws CLI's sns commands against wharf, with the sqs commands reading what SNS delivered."""

import json
import uuid

import pytest

from conftest import make_aws_cli


@pytest.fixture(scope="module")
def aws_sns(server):
    return make_aws_cli(server.endpoint, service="sns")


@pytest.fixture(scope="module")
def aws_sqs(server):
    return make_aws_cli(server.endpoint)


def ok(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if r.stdout.strip() else {}


def test_cli_topic_subscribe_publish(aws_sns, aws_sqs):
    name = f"cli-{uuid.uuid4().hex[:10]}"
    topic = ok(aws_sns("create-topic", "--name", name, "--tags", "Key=team,Value=cli"))["TopicArn"]
    assert topic in [t["TopicArn"] for t in ok(aws_sns("list-topics"))["Topics"]]
    ok(aws_sns("set-topic-attributes", "--topic-arn", topic, "--attribute-name", "DisplayName",
               "--attribute-value", "From the CLI"))
    attrs = ok(aws_sns("get-topic-attributes", "--topic-arn", topic))["Attributes"]
    assert attrs["DisplayName"] == "From the CLI"
    url = ok(aws_sqs("create-queue", "--queue-name", name))["QueueUrl"]
    qarn = ok(aws_sqs("get-queue-attributes", "--queue-url", url, "--attribute-names", "QueueArn"))["Attributes"]["QueueArn"]
    sub = ok(aws_sns("subscribe", "--topic-arn", topic, "--protocol", "sqs", "--notification-endpoint", qarn,
                     "--attributes", json.dumps({"RawMessageDelivery": "true", "FilterPolicy": '{"kind": ["keep"]}'})))["SubscriptionArn"]
    ok(aws_sns("publish", "--topic-arn", topic, "--message", "dropped by the filter"))
    mid = ok(aws_sns("publish", "--topic-arn", topic, "--message", "from the cli",
                     "--message-attributes", '{"kind":{"DataType":"String","StringValue":"keep"}}'))["MessageId"]
    assert mid
    msgs = ok(aws_sqs("receive-message", "--queue-url", url, "--message-attribute-names", "All",
                      "--wait-time-seconds", "2", "--max-number-of-messages", "10"))["Messages"]
    assert [m["Body"] for m in msgs] == ["from the cli"]
    assert msgs[0]["MessageAttributes"]["kind"]["StringValue"] == "keep"
    batch = ok(aws_sns("publish-batch", "--topic-arn", topic, "--publish-batch-request-entries",
                       json.dumps([{"Id": "a", "Message": "b1", "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "keep"}}}])))
    assert batch["Successful"][0]["Id"] == "a"
    subs = ok(aws_sns("list-subscriptions-by-topic", "--topic-arn", topic))["Subscriptions"]
    assert [s["SubscriptionArn"] for s in subs] == [sub]
    assert ok(aws_sns("list-tags-for-resource", "--resource-arn", topic))["Tags"] == [{"Key": "team", "Value": "cli"}]
    ok(aws_sns("unsubscribe", "--subscription-arn", sub))
    ok(aws_sns("delete-topic", "--topic-arn", topic))
    assert topic not in [t["TopicArn"] for t in ok(aws_sns("list-topics"))["Topics"]]


def test_cli_errors(aws_sns):
    r = aws_sns("get-topic-attributes", "--topic-arn", "arn:aws:sns:us-east-1:000000000000:nope")
    assert r.returncode != 0 and "NotFound" in r.stderr and "Topic does not exist" in r.stderr
    r = aws_sns("list-platform-applications")
    assert r.returncode != 0 and "mobile push" in r.stderr
