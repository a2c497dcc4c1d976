"""Every filter-policy operator through boto3, matched and not matched: one topic, one raw-delivery
SQS subscription per policy, five messages published once; each queue must hold exactly the
messages its policy selects. Policies on MessageAttributes (the default scope) and on the
MessageBody (FilterPolicyScope), as AWS documents them."""

import json
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import sns_client, sqs_client

STRING = "String"
NUMBER = "Number"
ARRAY = "String.Array"

# name -> (message attributes, JSON body fields)
MESSAGES = {
    "A": ({"k": (STRING, "a"), "n": (NUMBER, "5"), "ip": (STRING, "10.0.0.7"), "tags": (ARRAY, '["x", "y"]')},
          {"order": {"kind": "big"}, "items": ["a", "b"], "price": 10}),
    "B": ({"k": (STRING, "abc.png"), "n": (NUMBER, "150")},
          {"order": {"kind": "small"}, "items": ["c"], "price": 200}),
    "C": ({"k": (STRING, "RED"), "ip": (STRING, "10.0.1.7")},
          {"order": {"kind": "bigger"}}),
    "D": ({}, {"other": 1}),
    "E": ({"k": (STRING, "b"), "n": (NUMBER, "-3"), "tags": (ARRAY, '["z"]')},
          {"order": {"kind": "big"}, "price": -1}),
}

# (case, scope, policy, the messages it selects)
CASES = [
    ("exact-string", "MessageAttributes", {"k": ["a"]}, "A"),
    ("exact-number", "MessageAttributes", {"n": [5]}, "A"),
    ("prefix", "MessageAttributes", {"k": [{"prefix": "ab"}]}, "B"),
    ("suffix", "MessageAttributes", {"k": [{"suffix": ".png"}]}, "B"),
    ("equals-ignore-case", "MessageAttributes", {"k": [{"equals-ignore-case": "red"}]}, "C"),
    ("anything-but-values", "MessageAttributes", {"k": [{"anything-but": ["a", "b"]}]}, "BC"),
    ("anything-but-number", "MessageAttributes", {"n": [{"anything-but": [5]}]}, "BE"),
    ("anything-but-prefix", "MessageAttributes", {"k": [{"anything-but": {"prefix": "ab"}}]}, "ACE"),
    ("numeric-range", "MessageAttributes", {"n": [{"numeric": [">", 0, "<=", 150]}]}, "AB"),
    ("exists-true", "MessageAttributes", {"n": [{"exists": True}]}, "ABE"),
    # D carries no attributes at all, and AWS: "An empty set of attributes results in the filter
    # not matching", even for exists: false.
    ("exists-false", "MessageAttributes", {"n": [{"exists": False}]}, "C"),
    ("cidr", "MessageAttributes", {"ip": [{"cidr": "10.0.0.0/24"}]}, "A"),
    ("or-within-list", "MessageAttributes", {"k": ["a", {"prefix": "RE"}]}, "AC"),
    ("and-across-keys", "MessageAttributes", {"k": ["a", "b"], "n": [{"numeric": ["<", 0]}]}, "E"),
    ("$or", "MessageAttributes", {"$or": [{"k": ["a"]}, {"n": [{"numeric": [">", 100]}]}]}, "AB"),
    ("string-array-attribute", "MessageAttributes", {"tags": ["y"]}, "A"),
    ("body-nested", "MessageBody", {"order": {"kind": ["big"]}}, "AE"),
    ("body-nested-prefix", "MessageBody", {"order": {"kind": [{"prefix": "big"}]}}, "ACE"),
    ("body-array", "MessageBody", {"items": ["b"]}, "A"),
    ("body-numeric", "MessageBody", {"price": [{"numeric": [">=", 0]}]}, "AB"),
    # exists looks at leaf values (AWS), so the key is a number here, not the object "order".
    ("body-exists-false", "MessageBody", {"price": [{"exists": False}]}, "CD"),
    ("body-$or", "MessageBody", {"$or": [{"price": [200]}, {"other": [1]}]}, "BD"),
]


@pytest.fixture(scope="module")
def delivered(server):
    """Publish every message once to a topic with one subscription per case; return, per case,
    the set of message names its queue received."""
    sns, sqs = sns_client(server), sqs_client(server)
    topic = sns.create_topic(Name=f"filters-{uuid.uuid4().hex[:8]}")["TopicArn"]
    queues = {}
    for case, scope, policy, _ in CASES:
        url = sqs.create_queue(QueueName=f"filter-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={
            "RawMessageDelivery": "true", "FilterPolicyScope": scope, "FilterPolicy": json.dumps(policy)})
        queues[case] = url
    for name, (attrs, body) in MESSAGES.items():
        sns.publish(TopicArn=topic, Message=json.dumps(dict(body, name=name)), MessageAttributes={
            key: {"DataType": kind, "StringValue": value} for key, (kind, value) in attrs.items()})
    # Publish answers once every copy is stored, so the queues are complete now.
    got = {}
    for case, url in queues.items():
        names = []
        while True:
            batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                break
            names += [json.loads(m["Body"])["name"] for m in batch]
        got[case] = names
    return got


@pytest.mark.parametrize("case,scope,policy,expected", CASES, ids=[c[0] for c in CASES])
def test_operator(delivered, case, scope, policy, expected):
    assert sorted(delivered[case]) == sorted(expected), (policy, scope)


def test_anything_but_suffix_is_refused_as_aws_does(server):
    """AWS accepts anything-but with a prefix but refuses it with a suffix (LocalStack's recorded
    AWS responses show the error); wharf answers the same InvalidParameter."""
    sns, sqs = sns_client(server), sqs_client(server)
    topic = sns.create_topic(Name=f"filters-{uuid.uuid4().hex[:8]}")["TopicArn"]
    url = sqs.create_queue(QueueName=f"filter-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    with pytest.raises(ClientError) as e:
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={
            "FilterPolicy": json.dumps({"k": [{"anything-but": {"suffix": ".png"}}]})})
    assert e.value.response["Error"]["Code"] == "InvalidParameter"
    assert "Unsupported anything-but pattern: suffix" in e.value.response["Error"]["Message"]
