"""Queues through boto3: create (idempotence, conflicts, FIFO names), URLs, listing, attributes
(every one Terraform sets round-trips), tags, permissions, delete."""

import json
import time
import uuid

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, Server, sqs_client, wait_until


def code(exc_info):
    return exc_info.value.response["Error"]["Code"]


def uid(prefix="q"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_create_get_url_and_delete(sqs, server):
    name = uid()
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    assert url == f"{server.endpoint}/{ACCOUNT}/{name}"
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(ClientError) as e:
        sqs.get_queue_url(QueueName=name)
    assert code(e) == "AWS.SimpleQueueService.NonExistentQueue"
    assert e.value.response["Error"]["QueryErrorCode"] == "QueueDoesNotExist"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as e:
        sqs.delete_queue(QueueUrl=url)
    assert code(e) == "AWS.SimpleQueueService.NonExistentQueue"


def test_queue_url_follows_host_header_and_lookups_ignore_it(sqs, server):
    name = uid()
    sqs.create_queue(QueueName=name)
    r = requests.post(
        server.endpoint,
        headers={
            "Host": "sqs.internal:4566",
            "X-Amz-Target": "AmazonSQS.GetQueueUrl",
            "Content-Type": "application/x-amz-json-1.0",
        },
        data=json.dumps({"QueueName": name}),
        timeout=10,
    )
    assert r.json()["QueueUrl"] == f"http://sqs.internal:4566/{ACCOUNT}/{name}"
    # Any host and account in a QueueUrl name the same queue.
    foreign = f"https://elsewhere.example/123456789012/{name}"
    sqs.send_message(QueueUrl=foreign, MessageBody="x")
    attrs = sqs.get_queue_attributes(QueueUrl=foreign, AttributeNames=["ApproximateNumberOfMessages"])
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "1"


def test_create_is_idempotent_and_conflicts_are_reported(sqs):
    name = uid()
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})["QueueUrl"] == url
    assert sqs.create_queue(QueueName=name)["QueueUrl"] == url
    with pytest.raises(ClientError) as e:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "61"})
    assert code(e) == "QueueAlreadyExists"
    assert e.value.response["Error"]["QueryErrorCode"] == "QueueNameExists"


@pytest.mark.parametrize(
    "name,attrs",
    [
        ("bad name", {}),
        ("x" * 81, {}),
        ("dots.not.allowed", {}),
        ("needs-fifo-attr.fifo", {}),
        ("no-suffix", {"FifoQueue": "true"}),
    ],
    ids=["space", "too-long", "dots", "fifo-name-without-attribute", "fifo-attribute-without-name"],
)
def test_invalid_queue_names(sqs, name, attrs):
    with pytest.raises(ClientError) as e:
        sqs.create_queue(QueueName=name, Attributes=attrs)
    assert code(e) == "InvalidParameterValue"


def test_list_queues_prefix_and_paging(sqs):
    prefix = uid("list")
    urls = sorted(sqs.create_queue(QueueName=f"{prefix}-{i:02d}")["QueueUrl"] for i in range(5))
    assert sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"] == urls
    page1 = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2)
    assert page1["QueueUrls"] == urls[:2]
    page2 = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2, NextToken=page1["NextToken"])
    assert page2["QueueUrls"] == urls[2:4]
    page3 = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2, NextToken=page2["NextToken"])
    assert page3["QueueUrls"] == urls[4:]
    assert "NextToken" not in page3
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix=uid("none"))
    # boto3's own paginator works over it.
    pages = sqs.get_paginator("list_queues").paginate(QueueNamePrefix=prefix, PaginationConfig={"PageSize": 2})
    assert [u for p in pages for u in p.get("QueueUrls", [])] == urls


def test_default_attributes(sqs):
    url = sqs.create_queue(QueueName=uid())["QueueUrl"]
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert a["VisibilityTimeout"] == "30"
    assert a["DelaySeconds"] == "0"
    assert a["MaximumMessageSize"] == "1048576"
    assert a["MessageRetentionPeriod"] == "345600"
    assert a["ReceiveMessageWaitTimeSeconds"] == "0"
    assert a["QueueArn"] == f"arn:aws:sqs:{REGION}:{ACCOUNT}:{url.rsplit('/', 1)[1]}"
    assert int(a["CreatedTimestamp"]) > 1_600_000_000
    assert a["LastModifiedTimestamp"] == a["CreatedTimestamp"] or int(a["LastModifiedTimestamp"]) >= int(a["CreatedTimestamp"])
    for k in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
              "ApproximateNumberOfMessagesDelayed"):
        assert a[k] == "0"
    assert "FifoQueue" not in a
    one = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["DelaySeconds"])["Attributes"]
    assert one == {"DelaySeconds": "0"}


def test_terraform_attributes_round_trip(sqs):
    dlq = sqs.create_queue(QueueName=uid("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    name = uid()
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
    policy = json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage", "Resource": arn}],
    })
    allow = json.dumps({"redrivePermission": "byQueue", "sourceQueueArns": [dlq_arn]})
    attrs = {
        "VisibilityTimeout": "45",
        "DelaySeconds": "3",
        "MaximumMessageSize": "2048",
        "MessageRetentionPeriod": "3600",
        "ReceiveMessageWaitTimeSeconds": "2",
        "Policy": policy,
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 4}),
        "RedriveAllowPolicy": allow,
        "KmsMasterKeyId": "alias/aws/sqs",
        "KmsDataKeyReusePeriodSeconds": "600",
    }
    url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    for k in ("VisibilityTimeout", "DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod",
              "ReceiveMessageWaitTimeSeconds", "Policy", "RedriveAllowPolicy", "KmsMasterKeyId",
              "KmsDataKeyReusePeriodSeconds"):
        assert got[k] == attrs[k], k
    assert json.loads(got["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 4}
    assert got["SqsManagedSseEnabled"] == "false"
    # Re-creating with the same attributes (as `terraform apply` does) is fine.
    assert sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"] == url


def test_fifo_attributes(sqs):
    name = uid() + ".fifo"
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "FifoQueue": "true",
            "ContentBasedDeduplication": "true",
            "DeduplicationScope": "messageGroup",
            "FifoThroughputLimit": "perMessageGroupId",
        },
    )["QueueUrl"]
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert a["FifoQueue"] == "true"
    assert a["ContentBasedDeduplication"] == "true"
    assert a["DeduplicationScope"] == "messageGroup"
    assert a["FifoThroughputLimit"] == "perMessageGroupId"
    with pytest.raises(ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"DeduplicationScope": "everything"})
    assert code(e) == "InvalidAttributeValue"
    std = sqs.create_queue(QueueName=uid())["QueueUrl"]
    with pytest.raises(ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=std, Attributes={"ContentBasedDeduplication": "true"})
    assert code(e) == "InvalidAttributeName"


def test_set_queue_attributes(sqs):
    url = sqs.create_queue(QueueName=uid())["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "120", "DelaySeconds": "10"})
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout", "DelaySeconds"])
    assert a["Attributes"] == {"VisibilityTimeout": "120", "DelaySeconds": "10"}


@pytest.mark.parametrize(
    "attrs,expected",
    [
        ({"VisibilityTimeout": "43201"}, "InvalidAttributeValue"),
        ({"DelaySeconds": "-1"}, "InvalidAttributeValue"),
        ({"MaximumMessageSize": "1023"}, "InvalidAttributeValue"),
        ({"MessageRetentionPeriod": "1209601"}, "InvalidAttributeValue"),
        ({"ReceiveMessageWaitTimeSeconds": "21"}, "InvalidAttributeValue"),
        ({"Policy": "{not json"}, "InvalidAttributeValue"),
        ({"KmsDataKeyReusePeriodSeconds": "59"}, "InvalidAttributeValue"),
        ({"RedrivePolicy": '{"maxReceiveCount": 3}'}, "InvalidParameterValue"),
        ({"NoSuchAttribute": "1"}, "InvalidAttributeName"),
        ({"QueueArn": "arn:aws:sqs:x:y:z"}, "InvalidAttributeName"),
    ],
)
def test_invalid_attribute_values_change_nothing(sqs, attrs, expected):
    url = sqs.create_queue(QueueName=uid())["QueueUrl"]
    with pytest.raises(ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "99", **attrs})
    assert code(e) == expected
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]
    assert a["VisibilityTimeout"] == "30"


def test_get_unknown_attribute(sqs):
    url = sqs.create_queue(QueueName=uid())["QueueUrl"]
    with pytest.raises(ClientError) as e:
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Bogus"])
    assert code(e) == "InvalidAttributeName"


def test_redrive_checks(sqs):
    fifo_dlq = sqs.create_queue(QueueName=uid() + ".fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    fifo_arn = sqs.get_queue_attributes(QueueUrl=fifo_dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    with pytest.raises(ClientError) as e:
        sqs.create_queue(
            QueueName=uid(),
            Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": fifo_arn, "maxReceiveCount": 1})},
        )
    assert code(e) == "InvalidParameterValue"
    deny = sqs.create_queue(
        QueueName=uid("deny"), Attributes={"RedriveAllowPolicy": '{"redrivePermission":"denyAll"}'}
    )["QueueUrl"]
    deny_arn = sqs.get_queue_attributes(QueueUrl=deny, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    src = sqs.create_queue(QueueName=uid())["QueueUrl"]
    with pytest.raises(ClientError) as e:
        sqs.set_queue_attributes(
            QueueUrl=src,
            Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": deny_arn, "maxReceiveCount": 1})},
        )
    assert code(e) == "InvalidParameterValue"
    missing = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{uid('missing')}"
    with pytest.raises(ClientError) as e:
        sqs.set_queue_attributes(
            QueueUrl=src,
            Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": missing, "maxReceiveCount": 1})},
        )
    assert code(e) == "InvalidParameterValue"


def test_tags(sqs):
    url = sqs.create_queue(QueueName=uid(), tags={"team": "core", "env": "dev"})["QueueUrl"]
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "core", "env": "dev"}
    sqs.tag_queue(QueueUrl=url, Tags={"env": "prod", "cost": ""})
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "core", "env": "prod", "cost": ""}
    sqs.untag_queue(QueueUrl=url, TagKeys=["team", "cost"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "prod"}
    sqs.untag_queue(QueueUrl=url, TagKeys=["env"])
    assert "Tags" not in sqs.list_queue_tags(QueueUrl=url)
    with pytest.raises(ClientError) as e:
        sqs.tag_queue(QueueUrl=url, Tags={f"k{i}": "v" for i in range(51)})
    assert code(e) == "InvalidParameterValue"


def test_permissions_are_stored_in_the_policy(sqs):
    url = sqs.create_queue(QueueName=uid())["QueueUrl"]
    sqs.add_permission(QueueUrl=url, Label="send", AWSAccountIds=["111111111111"], Actions=["SendMessage"])
    sqs.add_permission(
        QueueUrl=url, Label="rw", AWSAccountIds=["222222222222", "333333333333"],
        Actions=["ReceiveMessage", "DeleteMessage"],
    )
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"])
    sids = {s["Sid"]: s for s in policy["Statement"]}
    assert sids["send"]["Principal"]["AWS"] == "arn:aws:iam::111111111111:root"
    assert sids["send"]["Action"] == "SQS:SendMessage"
    assert sids["rw"]["Action"] == ["SQS:ReceiveMessage", "SQS:DeleteMessage"]
    with pytest.raises(ClientError) as e:
        sqs.add_permission(QueueUrl=url, Label="send", AWSAccountIds=["1"], Actions=["SendMessage"])
    assert code(e) == "InvalidParameterValue"
    sqs.remove_permission(QueueUrl=url, Label="send")
    sqs.remove_permission(QueueUrl=url, Label="rw")
    assert "Policy" not in sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    with pytest.raises(ClientError) as e:
        sqs.remove_permission(QueueUrl=url, Label="rw")
    assert code(e) == "InvalidParameterValue"


def test_message_move_task_redrives_a_dlq(sqs):
    dlq = sqs.create_queue(QueueName=uid("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    src = sqs.create_queue(
        QueueName=uid("src"),
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})},
    )["QueueUrl"]
    for i in range(5):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"dead {i}",
                         MessageAttributes={"i": {"DataType": "Number", "StringValue": str(i)}})
    handle = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    assert handle
    assert wait_until(lambda: sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0]["Status"] == "COMPLETED")
    task = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0]
    assert task["ApproximateNumberOfMessagesMoved"] == 5
    assert task["ApproximateNumberOfMessagesToMove"] == 5
    assert "TaskHandle" not in task
    bodies = set()
    while True:
        got = sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get("Messages", [])
        if not got:
            break
        bodies |= {m["Body"] for m in got}
        assert all(m["MessageAttributes"]["i"]["DataType"] == "Number" for m in got)
    assert bodies == {f"dead {i}" for i in range(5)}
    with pytest.raises(ClientError) as e:
        sqs.cancel_message_move_task(TaskHandle=handle)
    assert code(e) == "InvalidParameterValue"


def test_message_move_task_rate_and_cancel(sqs):
    dlq = sqs.create_queue(QueueName=uid("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.create_queue(
        QueueName=uid("src"),
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})},
    )
    other = sqs.create_queue(QueueName=uid("dest"))["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.send_message_batch(QueueUrl=dlq, Entries=[{"Id": str(i), "MessageBody": str(i)} for i in range(10)])
    handle = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=other_arn,
                                         MaxNumberOfMessagesPerSecond=2)["TaskHandle"]
    with pytest.raises(ClientError) as e:
        sqs.start_message_move_task(SourceArn=dlq_arn)
    assert code(e) == "InvalidParameterValue"
    running = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0]
    assert running["Status"] == "RUNNING" and running["TaskHandle"] == handle
    assert running["DestinationArn"] == other_arn and running["MaxNumberOfMessagesPerSecond"] == 2
    time.sleep(1.2)
    moved = sqs.cancel_message_move_task(TaskHandle=handle)["ApproximateNumberOfMessagesMoved"]
    assert 1 <= moved < 10
    assert wait_until(lambda: sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0]["Status"] == "CANCELLED")
    left = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert int(left["ApproximateNumberOfMessages"]) > 0


def test_message_move_task_errors(sqs):
    with pytest.raises(ClientError) as e:
        sqs.list_message_move_tasks(SourceArn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:{uid('none')}")
    assert code(e) == "ResourceNotFoundException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    plain = sqs.create_queue(QueueName=uid())["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=plain, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    with pytest.raises(ClientError) as e:
        sqs.start_message_move_task(SourceArn=arn)
    assert code(e) == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        sqs.cancel_message_move_task(TaskHandle="bm9wZQ==")
    assert code(e) == "ResourceNotFoundException"


def test_recreate_delay_60_refuses_a_deleted_name_as_aws_does():
    server = Server(env={"WHARF_SQS_RECREATE_DELAY": "60"})
    try:
        client = sqs_client(server)
        name = uid()
        url = client.create_queue(QueueName=name)["QueueUrl"]
        client.delete_queue(QueueUrl=url)
        with pytest.raises(ClientError) as e:
            client.create_queue(QueueName=name)
        assert code(e) == "AWS.SimpleQueueService.QueueDeletedRecently"
        assert e.value.response["Error"]["QueryErrorCode"] == "QueueDeletedRecently"
        assert "wait 60 seconds" in e.value.response["Error"]["Message"]
        # Only that name is held back, and nothing was left behind under it.
        with pytest.raises(ClientError) as e:
            client.get_queue_url(QueueName=name)
        assert code(e) == "AWS.SimpleQueueService.NonExistentQueue"
        client.create_queue(QueueName=uid())
    finally:
        server.stop()


def test_by_default_a_deleted_queue_can_be_created_again_at_once_and_is_empty(sqs):
    name = uid()
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="old")
    sqs.delete_queue(QueueUrl=url)
    assert sqs.create_queue(QueueName=name)["QueueUrl"] == url
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []
