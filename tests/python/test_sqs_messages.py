"""Messages through boto3 (AWS JSON 1.0): send, receive, delete, visibility, long polling,
delays, attributes and their MD5s, batches, limits, FIFO and dead-letter queues."""

import hashlib
import threading
import time

import pytest
from botocore.exceptions import ClientError

from conftest import md5_of_attributes


def code(exc_info):
    return exc_info.value.response["Error"]["Code"]


def receive(sqs, url, **kw):
    return sqs.receive_message(QueueUrl=url, **kw).get("Messages", [])


def test_send_receive_delete(sqs, new_queue):
    url = new_queue()
    sent = sqs.send_message(QueueUrl=url, MessageBody="hello wharf")
    assert sent["MD5OfMessageBody"] == hashlib.md5(b"hello wharf").hexdigest()
    msgs = receive(sqs, url)
    assert len(msgs) == 1
    m = msgs[0]
    assert m["Body"] == "hello wharf"
    assert m["MessageId"] == sent["MessageId"]
    assert m["MD5OfBody"] == sent["MD5OfMessageBody"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_unicode_and_whitespace_body_round_trips(sqs, new_queue):
    url = new_queue()
    body = "tab\tcr\r\nlf\n€ 𝄞 \ue000"
    sent = sqs.send_message(QueueUrl=url, MessageBody=body)
    assert sent["MD5OfMessageBody"] == hashlib.md5(body.encode()).hexdigest()
    assert receive(sqs, url)[0]["Body"] == body


def test_invalid_body_characters(sqs, new_queue):
    url = new_queue()
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="bad \x01 char")
    assert code(e) == "InvalidMessageContents"


def test_message_attributes_round_trip_with_md5(sqs, new_queue):
    url = new_queue()
    attrs = {
        "attribName1": {"DataType": "String", "StringValue": "attribValue 1"},
        "customNumberTypeAttrib": {
            "DataType": "Number.float",
            "StringValue": "4563442423554324324264524243.32543234",
        },
        "binaryAttribute": {"DataType": "Binary", "BinaryValue": b"Hello binary world!"},
        "custom.bin": {"DataType": "Binary.gzip", "BinaryValue": bytes(range(256))},
    }
    sent = sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes=attrs)
    assert sent["MD5OfMessageAttributes"] == md5_of_attributes(attrs)
    three = {k: attrs[k] for k in ("attribName1", "customNumberTypeAttrib", "binaryAttribute")}
    assert md5_of_attributes(three) == "c932db14a896c663f83c260297d594ff"
    m = receive(sqs, url, MessageAttributeNames=["All"])[0]
    assert m["MessageAttributes"] == attrs
    assert m["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]


def test_message_attribute_name_filters(sqs, new_queue):
    url = new_queue()
    attrs = {
        n: {"DataType": "String", "StringValue": n} for n in ("foo.a", "foo.b", "bar", "foobar")
    }
    sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes=attrs)
    m = receive(sqs, url, MessageAttributeNames=["foo.*", "bar"], VisibilityTimeout=0)[0]
    assert set(m["MessageAttributes"]) == {"foo.a", "foo.b", "bar"}
    assert m["MD5OfMessageAttributes"] == md5_of_attributes({k: attrs[k] for k in m["MessageAttributes"]})
    m = receive(sqs, url, VisibilityTimeout=0)[0]
    assert "MessageAttributes" not in m and "MD5OfMessageAttributes" not in m
    m = receive(sqs, url, MessageAttributeNames=[".*"])[0]
    assert set(m["MessageAttributes"]) == set(attrs)


@pytest.mark.parametrize(
    "attrs",
    [
        {"AWS.reserved": {"DataType": "String", "StringValue": "x"}},
        {"bad name": {"DataType": "String", "StringValue": "x"}},
        {"n": {"DataType": "Text", "StringValue": "x"}},
        {"n": {"DataType": "Number", "StringValue": "not-a-number"}},
        {"n": {"DataType": "String", "StringValue": ""}},
        {f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(11)},
    ],
    ids=["reserved-prefix", "bad-name", "bad-type", "bad-number", "empty-value", "eleven"],
)
def test_invalid_message_attributes(sqs, new_queue, attrs):
    url = new_queue()
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes=attrs)
    assert code(e) == "InvalidParameterValue"


def test_system_attributes(sqs, new_queue):
    url = new_queue()
    before = int(time.time() * 1000)
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    sent = sqs.send_message(
        QueueUrl=url,
        MessageBody="x",
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": trace}},
    )
    assert sent["MD5OfMessageSystemAttributes"] == md5_of_attributes(
        {"AWSTraceHeader": {"DataType": "String", "StringValue": trace}}
    )
    m = receive(sqs, url, MessageSystemAttributeNames=["All"])[0]
    a = m["Attributes"]
    assert a["AWSTraceHeader"] == trace
    assert a["ApproximateReceiveCount"] == "1"
    assert before - 1000 <= int(a["SentTimestamp"]) <= int(time.time() * 1000) + 1000
    assert int(a["ApproximateFirstReceiveTimestamp"]) >= int(a["SentTimestamp"])
    assert a["SenderId"]
    # The deprecated AttributeNames member still works, and selects individual names.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    m = receive(sqs, url, AttributeNames=["ApproximateReceiveCount"])[0]
    assert m["Attributes"] == {"ApproximateReceiveCount": "2"}


def test_visibility_timeout_and_receive_count(sqs, new_queue):
    url = new_queue(VisibilityTimeout=1)
    sqs.send_message(QueueUrl=url, MessageBody="v")
    first = receive(sqs, url, MessageSystemAttributeNames=["ApproximateReceiveCount"])
    assert first and first[0]["Attributes"]["ApproximateReceiveCount"] == "1"
    assert receive(sqs, url) == []  # invisible for 1 s
    time.sleep(1.3)
    again = receive(sqs, url, MessageSystemAttributeNames=["ApproximateReceiveCount"])
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    assert again[0]["ReceiptHandle"] != first[0]["ReceiptHandle"]
    # The first handle is stale now: deleting with it succeeds but leaves the message.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"])
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_per_receive_visibility_and_change_visibility(sqs, new_queue):
    url = new_queue()
    sqs.send_message(QueueUrl=url, MessageBody="v")
    m = receive(sqs, url, VisibilityTimeout=60)[0]
    assert receive(sqs, url) == []
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    m2 = receive(sqs, url)
    assert m2 and m2[0]["MessageId"] == m["MessageId"]
    with pytest.raises(ClientError) as e:
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=m2[0]["ReceiptHandle"], VisibilityTimeout=43201
        )
    assert code(e) == "InvalidParameterValue"
    # An old lease's handle is no longer in flight.
    with pytest.raises(ClientError) as e:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=5)
    assert code(e) == "AWS.SimpleQueueService.MessageNotInflight"


def test_garbage_receipt_handles(sqs, new_queue):
    url = new_queue()
    with pytest.raises(ClientError) as e:
        sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-handle")
    assert code(e) == "ReceiptHandleIsInvalid"
    with pytest.raises(ClientError) as e:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle="x" * 48, VisibilityTimeout=1)
    assert code(e) == "ReceiptHandleIsInvalid"
    # A valid handle of another queue is not valid here.
    other = new_queue()
    sqs.send_message(QueueUrl=other, MessageBody="x")
    h = receive(sqs, other)[0]["ReceiptHandle"]
    with pytest.raises(ClientError) as e:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=h)
    assert code(e) == "ReceiptHandleIsInvalid"


def test_receive_parameter_ranges(sqs, new_queue):
    url = new_queue()
    for kw in ({"MaxNumberOfMessages": 11}, {"MaxNumberOfMessages": 0}, {"WaitTimeSeconds": 21},
               {"VisibilityTimeout": 43201}):
        with pytest.raises(ClientError) as e:
            sqs.receive_message(QueueUrl=url, **kw)
        assert code(e) == "InvalidParameterValue", kw


def test_receive_up_to_ten(sqs, new_queue):
    url = new_queue()
    for i in range(15):
        sqs.send_message(QueueUrl=url, MessageBody=str(i))
    got = receive(sqs, url, MaxNumberOfMessages=10)
    assert 1 <= len(got) <= 10
    assert len({m["MessageId"] for m in got}) == len(got)


def test_long_poll_returns_when_a_message_arrives(sqs, new_queue):
    url = new_queue()
    threading.Timer(0.7, lambda: sqs.send_message(QueueUrl=url, MessageBody="late")).start()
    t0 = time.monotonic()
    msgs = receive(sqs, url, WaitTimeSeconds=10)
    took = time.monotonic() - t0
    assert msgs and msgs[0]["Body"] == "late"
    assert 0.5 < took < 5


def test_long_poll_waits_and_returns_empty(sqs, new_queue):
    url = new_queue()
    t0 = time.monotonic()
    assert receive(sqs, url, WaitTimeSeconds=1) == []
    assert time.monotonic() - t0 >= 0.9


def test_queue_default_wait_applies(sqs, new_queue):
    url = new_queue(ReceiveMessageWaitTimeSeconds=1)
    t0 = time.monotonic()
    assert receive(sqs, url) == []
    assert time.monotonic() - t0 >= 0.9
    t0 = time.monotonic()
    assert receive(sqs, url, WaitTimeSeconds=0) == []
    assert time.monotonic() - t0 < 0.5


def test_delay_queue_and_per_message_delay(sqs, new_queue):
    url = new_queue(DelaySeconds=1)
    sqs.send_message(QueueUrl=url, MessageBody="queued-delay")
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert attrs["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"
    assert receive(sqs, url) == []
    msgs = receive(sqs, url, WaitTimeSeconds=3)
    assert msgs and msgs[0]["Body"] == "queued-delay"
    # Per-message DelaySeconds=0 overrides the queue's delay.
    sqs.send_message(QueueUrl=url, MessageBody="now", DelaySeconds=0)
    assert receive(sqs, url)[0]["Body"] == "now"
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", DelaySeconds=901)
    assert code(e) == "InvalidParameterValue"


def test_maximum_message_size_counts_attributes(sqs, new_queue):
    url = new_queue(MaximumMessageSize=1024)
    sqs.send_message(QueueUrl=url, MessageBody="x" * 1024)
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x" * 1025)
    assert code(e) == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        sqs.send_message(
            QueueUrl=url,
            MessageBody="x" * 1000,
            MessageAttributes={"name": {"DataType": "String", "StringValue": "y" * 20}},
        )
    assert code(e) == "InvalidParameterValue"


def test_one_mebibyte_body(sqs, new_queue):
    url = new_queue()
    body = "z" * (1024 * 1024)
    sqs.send_message(QueueUrl=url, MessageBody=body)
    assert receive(sqs, url)[0]["Body"] == body
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody=body + "z")
    assert code(e) == "InvalidParameterValue"


def test_batches(sqs, new_queue):
    url = new_queue()
    entries = [
        {"Id": f"m{i}", "MessageBody": f"body {i}",
         "MessageAttributes": {"i": {"DataType": "Number", "StringValue": str(i)}}}
        for i in range(10)
    ]
    r = sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert sorted(s["Id"] for s in r["Successful"]) == sorted(e["Id"] for e in entries)
    for s in r["Successful"]:
        i = int(s["Id"][1:])
        assert s["MD5OfMessageBody"] == hashlib.md5(f"body {i}".encode()).hexdigest()
        assert s["MD5OfMessageAttributes"] == md5_of_attributes(entries[i]["MessageAttributes"])
    got = []
    while len(got) < 10:
        batch = receive(sqs, url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        assert batch
        got += batch
    handles = [{"Id": f"h{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
    r = sqs.change_message_visibility_batch(
        QueueUrl=url, Entries=[dict(h, VisibilityTimeout=30) for h in handles[:3]]
        + [{"Id": "junk", "ReceiptHandle": "junk", "VisibilityTimeout": 30}]
    )
    assert len(r["Successful"]) == 3
    assert r["Failed"][0]["Id"] == "junk" and r["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    r = sqs.delete_message_batch(QueueUrl=url, Entries=handles)
    assert len(r["Successful"]) == 10 and not r.get("Failed")


@pytest.mark.parametrize(
    "entries,expected",
    [
        ([], "AWS.SimpleQueueService.EmptyBatchRequest"),
        ([{"Id": f"e{i}", "MessageBody": "x"} for i in range(11)],
         "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"),
        ([{"Id": "a", "MessageBody": "x"}, {"Id": "a", "MessageBody": "y"}],
         "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"),
        ([{"Id": "not ok!", "MessageBody": "x"}], "AWS.SimpleQueueService.InvalidBatchEntryId"),
        ([{"Id": "a", "MessageBody": "x" * 600_000}, {"Id": "b", "MessageBody": "y" * 600_000}],
         "AWS.SimpleQueueService.BatchRequestTooLong"),
    ],
    ids=["empty", "eleven", "duplicate-ids", "bad-id", "too-long"],
)
def test_batch_errors(sqs, new_queue, entries, expected):
    url = new_queue()
    with pytest.raises(ClientError) as e:
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert code(e) == expected


def test_partial_batch_failure(sqs, new_queue):
    url = new_queue()
    r = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[{"Id": "good", "MessageBody": "ok"}, {"Id": "bad", "MessageBody": "\x00"}],
    )
    assert [s["Id"] for s in r["Successful"]] == ["good"]
    assert r["Failed"][0]["Id"] == "bad"
    assert r["Failed"][0]["SenderFault"] is True


def test_fifo_order_dedup_and_sequence_numbers(sqs, new_queue):
    url = new_queue(fifo=True)
    seqs = []
    for i in range(5):
        r = sqs.send_message(QueueUrl=url, MessageBody=f"m{i}", MessageGroupId="g", MessageDeduplicationId=f"d{i}")
        assert len(r["SequenceNumber"]) == 20 and r["SequenceNumber"].isdigit()
        seqs.append(int(r["SequenceNumber"]))
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    dup = sqs.send_message(QueueUrl=url, MessageBody="m0 again", MessageGroupId="g", MessageDeduplicationId="d0")
    first = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert first["Attributes"]["ApproximateNumberOfMessages"] == "5"
    assert int(dup["SequenceNumber"]) == seqs[0]
    got = receive(sqs, url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"])
    assert [m["Body"] for m in got] == [f"m{i}" for i in range(5)]
    assert got[0]["Attributes"]["MessageGroupId"] == "g"
    assert got[0]["Attributes"]["MessageDeduplicationId"] == "d0"
    assert int(got[0]["Attributes"]["SequenceNumber"]) == seqs[0]


def test_fifo_group_locked_while_in_flight(sqs, new_queue):
    url = new_queue(fifo=True, ContentBasedDeduplication="true")
    for body in ("a1", "a2"):
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="A")
    sqs.send_message(QueueUrl=url, MessageBody="b1", MessageGroupId="B")
    first = receive(sqs, url)
    assert first[0]["Body"] in ("a1", "b1")
    second = receive(sqs, url)
    # The other group is served; the in-flight group's next message is not.
    assert second and second[0]["Body"] in ("a1", "b1") and second[0]["Body"] != first[0]["Body"]
    assert receive(sqs, url) == []
    a = first[0] if first[0]["Body"] == "a1" else second[0]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=a["ReceiptHandle"])
    assert receive(sqs, url)[0]["Body"] == "a2"


def test_fifo_rules(sqs, new_queue):
    url = new_queue(fifo=True)
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageDeduplicationId="d")
    assert code(e) == "MissingParameter"
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g")
    assert code(e) == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="d",
                         DelaySeconds=5)
    assert code(e) == "InvalidParameterValue"
    cbd = new_queue(fifo=True, ContentBasedDeduplication="true")
    a = sqs.send_message(QueueUrl=cbd, MessageBody="same", MessageGroupId="g")
    b = sqs.send_message(QueueUrl=cbd, MessageBody="same", MessageGroupId="g")
    assert a["MessageId"] == b["MessageId"]
    std = new_queue()
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=std, MessageBody="x", MessageDeduplicationId="d")
    assert code(e) == "InvalidParameterValue"
    # Fair queues: a group id on a standard queue is accepted and returned.
    sqs.send_message(QueueUrl=std, MessageBody="x", MessageGroupId="tenant-1")
    m = receive(sqs, std, MessageSystemAttributeNames=["MessageGroupId"])[0]
    assert m["Attributes"]["MessageGroupId"] == "tenant-1"


def test_dead_letter_queue_after_max_receives(sqs, new_queue):
    dlq = new_queue("dlq")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    src = new_queue(
        "src",
        VisibilityTimeout=0,
        RedrivePolicy=f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":2}}',
    )
    sqs.send_message(QueueUrl=src, MessageBody="poison")
    assert receive(sqs, src)
    assert receive(sqs, src)
    assert receive(sqs, src) == []
    moved = receive(sqs, dlq, WaitTimeSeconds=2, MessageSystemAttributeNames=["DeadLetterQueueSourceArn"])
    assert moved and moved[0]["Body"] == "poison"
    src_arn = sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert moved[0]["Attributes"] == {"DeadLetterQueueSourceArn": src_arn}
    sources = sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"]
    assert sources == [src]
    # A message sent straight to the dead-letter queue has no source.
    sqs.send_message(QueueUrl=dlq, MessageBody="direct")
    direct = receive(sqs, dlq, MessageSystemAttributeNames=["All"])
    assert direct[0]["Body"] == "direct" and "DeadLetterQueueSourceArn" not in direct[0]["Attributes"]


def test_purge(sqs, new_queue):
    url = new_queue()
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=str(i))
    sqs.purge_queue(QueueUrl=url)
    assert receive(sqs, url) == []
    with pytest.raises(ClientError) as e:
        sqs.purge_queue(QueueUrl=url)
    assert code(e) == "AWS.SimpleQueueService.PurgeQueueInProgress"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_purge_deletes_in_flight_messages(sqs, new_queue):
    url = new_queue()
    sqs.send_message(QueueUrl=url, MessageBody="in flight")
    sqs.send_message(QueueUrl=url, MessageBody="ready")
    leased = receive(sqs, url, VisibilityTimeout=1)
    assert len(leased) == 1
    sqs.purge_queue(QueueUrl=url)
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == "0"
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "0"
    # Past its visibility timeout the purged message does not come back.
    time.sleep(1.5)
    assert receive(sqs, url, WaitTimeSeconds=1) == []
    # Its receipt now names a deleted message: deleting succeeds, changing visibility does not.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=leased[0]["ReceiptHandle"])
    with pytest.raises(ClientError) as e:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=leased[0]["ReceiptHandle"], VisibilityTimeout=5)
    assert code(e) == "AWS.SimpleQueueService.MessageNotInflight"


def test_fifo_receive_request_attempt_id_retries_get_the_same_messages(sqs, new_queue):
    url = new_queue(fifo=True, ContentBasedDeduplication="true")
    sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g")
    sqs.send_message(QueueUrl=url, MessageBody="two", MessageGroupId="g")
    first = receive(sqs, url, ReceiveRequestAttemptId="attempt-1")
    retry = receive(sqs, url, ReceiveRequestAttemptId="attempt-1")
    assert [m["Body"] for m in first] == ["one"] or [m["Body"] for m in first] == ["one", "two"]
    assert [(m["MessageId"], m["ReceiptHandle"]) for m in retry] == [
        (m["MessageId"], m["ReceiptHandle"]) for m in first
    ]
    assert receive(sqs, url, ReceiveRequestAttemptId="attempt-2") == []
    # Deleting ends the retry window of that attempt.
    for m in first:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    after = receive(sqs, url, ReceiveRequestAttemptId="attempt-1")
    assert [m["MessageId"] for m in after] != [m["MessageId"] for m in first]


def test_long_poll_wakes_when_visibility_is_changed_to_zero(sqs, new_queue):
    url = new_queue()
    sqs.send_message(QueueUrl=url, MessageBody="again")
    m = receive(sqs, url, VisibilityTimeout=60)[0]
    threading.Timer(
        0.5,
        lambda: sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0),
    ).start()
    t0 = time.monotonic()
    got = receive(sqs, url, WaitTimeSeconds=10)
    assert got and got[0]["MessageId"] == m["MessageId"]
    assert time.monotonic() - t0 < 5


def test_move_task_sends_dead_letters_home_keeping_their_ids(sqs, new_queue):
    dlq = new_queue("dlq")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":1}}'
    a = new_queue("a", VisibilityTimeout=0, RedrivePolicy=policy)
    b = new_queue("b", VisibilityTimeout=0, RedrivePolicy=policy)
    ids = {}
    for url, body in [(a, "from a"), (b, "from b")]:
        ids[body] = sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"]
        assert receive(sqs, url)
        assert receive(sqs, url) == []
    # Two source queues and no DestinationArn: each message goes back where it came from.
    sqs.start_message_move_task(SourceArn=dlq_arn)
    deadline = time.time() + 5
    while sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0]["Status"] != "COMPLETED":
        assert time.time() < deadline
        time.sleep(0.05)
    for url, body in [(a, "from a"), (b, "from b")]:
        got = receive(sqs, url, MessageSystemAttributeNames=["All"])
        assert [(m["Body"], m["MessageId"]) for m in got] == [(body, ids[body])]
        assert "DeadLetterQueueSourceArn" not in got[0]["Attributes"]
