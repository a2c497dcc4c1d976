"""Publish and PublishBatch to SQS subscriptions through boto3: the JSON envelope (signed, and
checked with an independent verifier), raw delivery with message attributes and their MD5s,
MessageStructure=json, FIFO topics to FIFO queues (group, deduplication, sequence numbers),
filter policies on attributes and on the body, limits and errors, and what happens when the
subscribed queue is gone (dead-letter queue)."""

import base64
import hashlib
import json
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import md5_of_attributes, verify_sns_signature


def uid(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def error(exc_info):
    e = exc_info.value.response["Error"]
    return e["Code"], e["Message"]


@pytest.fixture
def wire(sns, sqs):
    """wire(topic_attrs, queue_attrs, sub_attrs, fifo) -> (topic arn, queue url, subscription arn)"""

    def make(fifo=False, topic_attrs=None, sub_attrs=None, queue_attrs=None):
        tattrs = dict(topic_attrs or {})
        qattrs = dict(queue_attrs or {})
        suffix = ".fifo" if fifo else ""
        if fifo:
            tattrs["FifoTopic"] = "true"
            qattrs["FifoQueue"] = "true"
        topic = sns.create_topic(Name=uid() + suffix, Attributes=tattrs)["TopicArn"]
        url = sqs.create_queue(QueueName=uid("q") + suffix, Attributes=qattrs)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=sub_attrs or {})["SubscriptionArn"]
        return topic, url, sub

    return make


def receive(sqs, url, n=10, wait=2):
    got = []
    for _ in range(5):
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait,
                                MessageAttributeNames=["All"], AttributeNames=["All"])
        got += r.get("Messages", [])
        if len(got) >= n or not r.get("Messages"):
            break
    return got


def test_envelope_is_signed_and_verifies(sns, sqs, wire):
    topic, url, sub = wire()
    attrs = {"s": {"DataType": "String", "StringValue": "v"}, "n": {"DataType": "Number", "StringValue": "42"},
             "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}, "a": {"DataType": "String.Array", "StringValue": '["x", 1]'}}
    mid = sns.publish(TopicArn=topic, Message="hello", Subject="greeting", MessageAttributes=attrs)["MessageId"]
    [m] = receive(sqs, url, 1)
    body = json.loads(m["Body"])
    assert body["Type"] == "Notification" and body["MessageId"] == mid
    assert body["TopicArn"] == topic and body["Message"] == "hello" and body["Subject"] == "greeting"
    assert body["SignatureVersion"] == "1" and body["UnsubscribeURL"].endswith(sub.replace(":", "%3A"))
    assert body["MessageAttributes"] == {
        "s": {"Type": "String", "Value": "v"}, "n": {"Type": "Number", "Value": "42"},
        "b": {"Type": "Binary", "Value": base64.b64encode(b"\x00\x01").decode()},
        "a": {"Type": "String.Array", "Value": '["x", 1]'}}
    assert "MessageAttributes" not in m  # not raw: attributes stay in the envelope
    verify_sns_signature(body)
    tampered = dict(body, Message="HELLO")
    with pytest.raises(Exception):
        verify_sns_signature(tampered)
    # SignatureVersion 2 (SHA256withRSA).
    sns.set_topic_attributes(TopicArn=topic, AttributeName="SignatureVersion", AttributeValue="2")
    sns.publish(TopicArn=topic, Message="two")
    [m] = receive(sqs, url, 1)
    body = json.loads(m["Body"])
    assert body["SignatureVersion"] == "2" and "Subject" not in body
    verify_sns_signature(body)


def test_raw_delivery_maps_attributes_with_correct_md5s(sns, sqs, wire):
    topic, url, _ = wire(sub_attrs={"RawMessageDelivery": "true"})
    attrs = {"color": {"DataType": "String", "StringValue": "red"},
             "price": {"DataType": "Number.float", "StringValue": "3.25"},
             "blob": {"DataType": "Binary", "BinaryValue": b"\xff\x00raw"}}
    sns.publish(TopicArn=topic, Message="raw body", MessageAttributes=attrs)
    [m] = receive(sqs, url, 1)
    assert m["Body"] == "raw body"
    assert m["MD5OfBody"] == hashlib.md5(b"raw body").hexdigest()
    assert m["MessageAttributes"] == attrs
    assert m["MD5OfMessageAttributes"] == md5_of_attributes(attrs)


def test_message_structure_json(sns, sqs, wire):
    topic, url, _ = wire()
    raw_topic, raw_url, _ = wire(sub_attrs={"RawMessageDelivery": "true"})
    msg = json.dumps({"default": "for everyone", "sqs": "for queues", "email": "for people", "ignored": 1})
    sns.publish(TopicArn=topic, Message=msg, MessageStructure="json")
    assert json.loads(receive(sqs, url, 1)[0]["Body"])["Message"] == "for queues"
    sns.publish(TopicArn=raw_topic, Message=json.dumps({"default": "d"}), MessageStructure="json")
    assert receive(sqs, raw_url, 1)[0]["Body"] == "d"
    for bad, message in [("not json", "Invalid parameter: Message Structure - JSON message body failed to parse"),
                         ('{"sqs": "x"}', "Invalid parameter: Message Structure - No default entry in JSON message body")]:
        with pytest.raises(ClientError) as e:
            sns.publish(TopicArn=topic, Message=bad, MessageStructure="json")
        assert error(e) == ("InvalidParameter", message)


def test_fifo_topic_to_fifo_queue(sns, sqs, wire):
    topic, url, _ = wire(fifo=True, sub_attrs={"RawMessageDelivery": "true"})
    r1 = sns.publish(TopicArn=topic, Message="one", MessageGroupId="g1", MessageDeduplicationId="d1")
    r2 = sns.publish(TopicArn=topic, Message="two", MessageGroupId="g1", MessageDeduplicationId="d2")
    dup = sns.publish(TopicArn=topic, Message="one again", MessageGroupId="g1", MessageDeduplicationId="d1")
    assert dup["MessageId"] == r1["MessageId"] and dup["SequenceNumber"] == r1["SequenceNumber"]
    assert int(r2["SequenceNumber"]) > int(r1["SequenceNumber"]) and len(r1["SequenceNumber"]) == 20
    got = receive(sqs, url, 2)
    assert [m["Body"] for m in got] == ["one", "two"]
    assert got[0]["Attributes"]["MessageGroupId"] == "g1"
    assert got[0]["Attributes"]["MessageDeduplicationId"] == "d1"
    for m in got:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    with pytest.raises(ClientError) as e:
        sns.publish(TopicArn=topic, Message="x", MessageDeduplicationId="d")
    assert error(e) == ("InvalidParameter", "Invalid parameter: The MessageGroupId parameter is required for FIFO topics")
    with pytest.raises(ClientError) as e:
        sns.publish(TopicArn=topic, Message="x", MessageGroupId="g")
    assert "ContentBasedDeduplication" in error(e)[1]
    # Content-based deduplication: the same body within 5 minutes is one message.
    cbd, cbd_url, _ = wire(fifo=True, topic_attrs={"ContentBasedDeduplication": "true"})
    a = sns.publish(TopicArn=cbd, Message="same", MessageGroupId="g")
    b = sns.publish(TopicArn=cbd, Message="same", MessageGroupId="g")
    assert a["MessageId"] == b["MessageId"]
    got = receive(sqs, cbd_url, 1)
    assert len(got) == 1
    body = json.loads(got[0]["Body"])
    assert body["SequenceNumber"] == a["SequenceNumber"] and body["Message"] == "same"
    assert got[0]["Attributes"]["MessageDeduplicationId"] == hashlib.sha256(b"same").hexdigest()


def test_standard_topic_refuses_dedup_and_forwards_group(sns, sqs, wire):
    topic, url, _ = wire()
    with pytest.raises(ClientError) as e:
        sns.publish(TopicArn=topic, Message="x", MessageDeduplicationId="d")
    assert "MessageDeduplicationId" in error(e)[1]
    sns.publish(TopicArn=topic, Message="fair", MessageGroupId="tenant-1")
    [m] = receive(sqs, url, 1)
    assert m["Attributes"]["MessageGroupId"] == "tenant-1"


def test_publish_batch(sns, sqs, wire):
    topic, url, _ = wire(sub_attrs={"RawMessageDelivery": "true"})
    entries = [{"Id": f"e{i}", "Message": f"m{i}",
                "MessageAttributes": {"i": {"DataType": "Number", "StringValue": str(i)}}} for i in range(10)]
    r = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)
    assert [s["Id"] for s in r["Successful"]] == [f"e{i}" for i in range(10)] and r["Failed"] == []
    got = receive(sqs, url, 10)
    assert sorted(m["Body"] for m in got) == sorted(f"m{i}" for i in range(10))
    assert all(m["MessageAttributes"]["i"]["StringValue"] == m["Body"][1:] for m in got)
    cases = [
        ([{"Id": f"e{i}", "Message": "m"} for i in range(11)], "TooManyEntriesInBatchRequest"),
        ([{"Id": "same", "Message": "a"}, {"Id": "same", "Message": "b"}], "BatchEntryIdsNotDistinct"),
        ([{"Id": "bad id!", "Message": "a"}], "InvalidBatchEntryId"),
        ([{"Id": f"e{i}", "Message": "x" * 30000} for i in range(10)], "BatchRequestTooLong"),
    ]
    for entries, code in cases:
        with pytest.raises(ClientError) as e:
            sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)
        assert error(e)[0] == code
    fifo, fifo_url, _ = wire(fifo=True)
    r = sns.publish_batch(TopicArn=fifo, PublishBatchRequestEntries=[
        {"Id": "a", "Message": "1", "MessageGroupId": "g", "MessageDeduplicationId": "1"},
        {"Id": "b", "Message": "2", "MessageGroupId": "g", "MessageDeduplicationId": "2"}])
    assert all("SequenceNumber" in s for s in r["Successful"])
    assert [json.loads(m["Body"])["Message"] for m in receive(sqs, fifo_url, 2)] == ["1", "2"]


def test_limits_and_attribute_errors(sns, wire):
    topic, _, _ = wire()
    sns.publish(TopicArn=topic, Message="x" * 262_144)
    with pytest.raises(ClientError) as e:
        sns.publish(TopicArn=topic, Message="x" * 262_145)
    assert error(e) == ("InvalidParameter", "Invalid parameter: Message too long")
    with pytest.raises(ClientError) as e:
        sns.publish(TopicArn=topic, Message="x" * 262_100, MessageAttributes={"a": {"DataType": "String", "StringValue": "y" * 100}})
    assert error(e)[1] == "Invalid parameter: Message too long"
    with pytest.raises(ClientError) as e:
        sns.publish(TopicArn=topic, Message="")
    assert error(e) == ("InvalidParameter", "Invalid parameter: Empty message")
    for subject in ["", "line\nbreak", "x" * 101]:
        with pytest.raises(ClientError) as e:
            sns.publish(TopicArn=topic, Message="m", Subject=subject)
        assert error(e) == ("InvalidParameter", "Invalid parameter: Subject")
    bad_attrs = [
        ({".a": {"DataType": "String", "StringValue": "v"}}, "Invalid message attribute name starting with character '.' was found."),
        ({"a b": {"DataType": "String", "StringValue": "v"}}, "Invalid non-alphanumeric character '#x20' was found"),
        ({"a": {"DataType": "Float", "StringValue": "1"}}, "has an invalid message attribute type"),
        ({"a": {"DataType": "Number", "StringValue": "abc"}}, "Could not cast message attribute 'a' value to number."),
        ({"a": {"DataType": "String", "StringValue": ""}}, "must contain non-empty message attribute value"),
        ({"a": {"DataType": "String.Array", "StringValue": "notarray"}}, "String.Array must be a JSON array"),
    ]
    for attrs, message in bad_attrs:
        with pytest.raises(ClientError) as e:
            sns.publish(TopicArn=topic, Message="m", MessageAttributes=attrs)
        assert error(e)[0] == "ParameterValueInvalid" and message in error(e)[1], error(e)


def test_filter_policies(sns, sqs, wire):
    policy = {"store": ["example_corp"], "price_usd": [{"numeric": [">=", 100]}],
              "event": [{"anything-but": ["order_cancelled"]}]}
    topic, url, sub = wire(sub_attrs={"FilterPolicy": json.dumps(policy), "RawMessageDelivery": "true"})

    def pub(body, **attrs):
        sns.publish(TopicArn=topic, Message=body, MessageAttributes={
            k: {"DataType": "Number" if isinstance(v, (int, float)) else "String", "StringValue": str(v)}
            for k, v in attrs.items()})

    pub("match", store="example_corp", price_usd=150, event="order_placed")
    pub("cheap", store="example_corp", price_usd=10, event="order_placed")
    pub("cancelled", store="example_corp", price_usd=500, event="order_cancelled")
    pub("other store", store="acme", price_usd=500, event="order_placed")
    pub("no attributes")
    assert [m["Body"] for m in receive(sqs, url, 1)] == ["match"]
    # Body scope: the policy looks into the JSON message.
    sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="FilterPolicyScope", AttributeValue="MessageBody")
    sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="FilterPolicy",
                                    AttributeValue=json.dumps({"order": {"kind": [{"prefix": "big-"}]}}))
    sns.publish(TopicArn=topic, Message=json.dumps({"order": {"kind": "big-one"}}))
    sns.publish(TopicArn=topic, Message=json.dumps({"order": {"kind": "small"}}))
    sns.publish(TopicArn=topic, Message="not json")
    assert [json.loads(m["Body"])["order"]["kind"] for m in receive(sqs, url, 1)] == ["big-one"]
    # Removing the policy delivers everything again.
    sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="FilterPolicy", AttributeValue="")
    sns.publish(TopicArn=topic, Message="all")
    assert [m["Body"] for m in receive(sqs, url, 1)] == ["all"]


def test_fan_out_to_many_queues_with_and_without_filters(sns, sqs):
    topic = sns.create_topic(Name=uid())["TopicArn"]
    urls = []
    for i in range(4):
        url = sqs.create_queue(QueueName=uid("q"))["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attrs = {"RawMessageDelivery": "true"}
        if i % 2:
            attrs["FilterPolicy"] = json.dumps({"odd": ["yes"]})
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=attrs)
        urls.append(url)
    sns.publish(TopicArn=topic, Message="even")
    sns.publish(TopicArn=topic, Message="odd", MessageAttributes={"odd": {"DataType": "String", "StringValue": "yes"}})
    for i, url in enumerate(urls):
        bodies = sorted(m["Body"] for m in receive(sqs, url, 2 if i % 2 == 0 else 1))
        assert bodies == (["even", "odd"] if i % 2 == 0 else ["odd"]), i


def test_deleted_queue_goes_to_the_subscription_dlq(sns, sqs, wire):
    dlq = sqs.create_queue(QueueName=uid("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic, url, _ = wire(sub_attrs={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn})})
    sqs.delete_queue(QueueUrl=url)
    mid = sns.publish(TopicArn=topic, Message="orphan")["MessageId"]
    [m] = receive(sqs, dlq, 1)
    body = json.loads(m["Body"])
    assert body["MessageId"] == mid and body["Message"] == "orphan"
    # Without a DLQ the message is dropped and Publish still succeeds.
    topic2, url2, _ = wire()
    sqs.delete_queue(QueueUrl=url2)
    sns.publish(TopicArn=topic2, Message="dropped")
