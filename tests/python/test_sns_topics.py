"""SNS topics and subscriptions through boto3: create (idempotence, conflicts, FIFO names),
attributes, listing and paging, tags, permissions, data-protection policies, SQS
subscriptions, errors as AWS words them, unsupported features, and the shared listener (SQS
still answers on the same port, AddPermission goes to the right API)."""

import json
import tempfile
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, Server, sns_client, sqs_client


def uid(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def error(exc_info):
    e = exc_info.value.response["Error"]
    return e["Code"], e["Message"], exc_info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def queue_arn(sqs, url):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def test_create_is_idempotent_and_conflicts_are_refused(sns):
    name = uid()
    arn = sns.create_topic(Name=name)["TopicArn"]
    assert arn == f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}"
    assert sns.create_topic(Name=name)["TopicArn"] == arn
    with pytest.raises(ClientError) as e:
        sns.create_topic(Name=name, Attributes={"FifoTopic": "true"})
    assert error(e)[0] == "InvalidParameter"
    tagged = uid()
    sns.create_topic(Name=tagged, Tags=[{"Key": "k", "Value": "v"}])
    with pytest.raises(ClientError) as e:
        sns.create_topic(Name=tagged, Tags=[{"Key": "k", "Value": "other"}])
    assert error(e) == ("InvalidParameter", "Invalid parameter: Tags Reason: Topic already exists with different tags", 400)


def test_topic_names(sns):
    for bad in ["", "has space", "a" * 257, "dot.ted"]:
        with pytest.raises(ClientError) as e:
            sns.create_topic(Name=bad)
        assert error(e)[:2] == ("InvalidParameter", "Invalid parameter: Topic Name"), bad
    with pytest.raises(ClientError) as e:
        sns.create_topic(Name="nofifo", Attributes={"FifoTopic": "true"})
    assert error(e)[1].startswith("Invalid parameter: Fifo Topic names must end with .fifo")
    with pytest.raises(ClientError) as e:
        sns.create_topic(Name="x.fifo")
    assert error(e)[0] == "InvalidParameter"
    arn = sns.create_topic(Name=uid() + ".fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    attrs = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attrs["FifoTopic"] == "true" and attrs["ContentBasedDeduplication"] == "false"


def test_attributes_round_trip(sns):
    arn = sns.create_topic(Name=uid(), Attributes={"DisplayName": "Orders"})["TopicArn"]
    attrs = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attrs["TopicArn"] == arn
    assert attrs["Owner"] == ACCOUNT
    assert attrs["DisplayName"] == "Orders"
    assert attrs["SubscriptionsConfirmed"] == "0"
    assert json.loads(attrs["Policy"])["Statement"][0]["Resource"] == arn
    assert "http" in json.loads(attrs["EffectiveDeliveryPolicy"])
    policy = {"http": {"defaultHealthyRetryPolicy": {"numRetries": 5, "minDelayTarget": 1, "maxDelayTarget": 10}}}
    for name, value in [
        ("DisplayName", "Renamed"),
        ("SignatureVersion", "2"),
        ("TracingConfig", "Active"),
        ("KmsMasterKeyId", "alias/aws/sns"),
        ("DeliveryPolicy", json.dumps(policy)),
        ("SQSSuccessFeedbackRoleArn", f"arn:aws:iam::{ACCOUNT}:role/r"),
        ("SQSSuccessFeedbackSampleRate", "50"),
    ]:
        sns.set_topic_attributes(TopicArn=arn, AttributeName=name, AttributeValue=value)
        assert sns.get_topic_attributes(TopicArn=arn)["Attributes"][name] == value
    for name, value in [("SignatureVersion", "3"), ("NoSuch", "x"), ("ContentBasedDeduplication", "true"),
                        ("DeliveryPolicy", "{not json")]:
        with pytest.raises(ClientError) as e:
            sns.set_topic_attributes(TopicArn=arn, AttributeName=name, AttributeValue=value)
        assert error(e)[0] == "InvalidParameter", name
    fifo = sns.create_topic(Name=uid() + ".fifo", Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "true"})["TopicArn"]
    sns.set_topic_attributes(TopicArn=fifo, AttributeName="FifoThroughputScope", AttributeValue="MessageGroup")
    attrs = sns.get_topic_attributes(TopicArn=fifo)["Attributes"]
    assert attrs["ContentBasedDeduplication"] == "true" and attrs["FifoThroughputScope"] == "MessageGroup"


def test_missing_topics_and_bad_arns(sns):
    missing = f"arn:aws:sns:{REGION}:{ACCOUNT}:{uid()}"
    with pytest.raises(ClientError) as e:
        sns.get_topic_attributes(TopicArn=missing)
    assert error(e) == ("NotFound", "Topic does not exist", 404)
    with pytest.raises(ClientError) as e:
        sns.publish(TopicArn=missing, Message="m")
    assert error(e)[0] == "NotFound"
    with pytest.raises(ClientError) as e:
        sns.get_topic_attributes(TopicArn="not-an-arn")
    assert error(e) == ("InvalidParameter", "Invalid parameter: TopicArn Reason: An ARN must have at least 6 elements, not 1", 400)
    with pytest.raises(ClientError) as e:
        sns.get_topic_attributes(TopicArn=f"arn:aws:sns:eu-west-1:{ACCOUNT}:x")
    assert error(e)[:2] == ("InvalidParameter", "Invalid parameter: TopicArn")
    # Deleting what does not exist succeeds, as on AWS.
    sns.delete_topic(TopicArn=missing)
    with pytest.raises(ClientError) as e:
        sns.get_subscription_attributes(SubscriptionArn=missing + ":" + str(uuid.uuid4()))
    assert error(e) == ("NotFound", "Subscription does not exist", 404)


def test_list_topics_pages_by_100(sns):
    prefix = uid("page")
    mine = {sns.create_topic(Name=f"{prefix}-{i:03}")["TopicArn"] for i in range(105)}
    seen, token, pages = [], None, 0
    while True:
        r = sns.list_topics(**({"NextToken": token} if token else {}))
        pages += 1
        assert len(r["Topics"]) <= 100
        seen += [t["TopicArn"] for t in r["Topics"]]
        token = r.get("NextToken")
        if not token:
            break
    assert pages >= 2
    assert mine <= set(seen)
    assert len(seen) == len(set(seen))
    for arn in mine:
        sns.delete_topic(TopicArn=arn)


def test_tags(sns):
    arn = sns.create_topic(Name=uid(), Tags=[{"Key": "team", "Value": "a"}])["TopicArn"]
    sns.tag_resource(ResourceArn=arn, Tags=[{"Key": "env", "Value": "dev"}, {"Key": "team", "Value": "b"}])
    tags = {t["Key"]: t["Value"] for t in sns.list_tags_for_resource(ResourceArn=arn)["Tags"]}
    assert tags == {"team": "b", "env": "dev"}
    sns.untag_resource(ResourceArn=arn, TagKeys=["team", "absent"])
    assert sns.list_tags_for_resource(ResourceArn=arn)["Tags"] == [{"Key": "env", "Value": "dev"}]
    with pytest.raises(ClientError) as e:
        sns.tag_resource(ResourceArn=arn, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)])
    assert error(e)[0] == "TagLimitExceeded"
    with pytest.raises(ClientError) as e:
        sns.tag_resource(ResourceArn=arn, Tags=[{"Key": "d", "Value": "1"}, {"Key": "d", "Value": "2"}])
    assert error(e)[1] == "Invalid parameter: Duplicated keys are not allowed."
    with pytest.raises(ClientError) as e:
        sns.list_tags_for_resource(ResourceArn=arn + "-missing")
    assert error(e) == ("ResourceNotFound", "Resource does not exist", 404)


def test_permissions_edit_the_policy(sns):
    arn = sns.create_topic(Name=uid())["TopicArn"]
    sns.add_permission(TopicArn=arn, Label="pub", AWSAccountId=["111122223333"], ActionName=["Publish"])
    policy = json.loads(sns.get_topic_attributes(TopicArn=arn)["Attributes"]["Policy"])
    mine = [s for s in policy["Statement"] if s["Sid"] == "pub"][0]
    assert mine["Principal"] == {"AWS": "arn:aws:iam::111122223333:root"}
    assert mine["Action"] == "SNS:Publish" and mine["Resource"] == arn
    with pytest.raises(ClientError) as e:
        sns.add_permission(TopicArn=arn, Label="pub", AWSAccountId=["1"], ActionName=["Publish"])
    assert error(e)[1] == "Invalid parameter: Statement already exists"
    sns.remove_permission(TopicArn=arn, Label="pub")
    policy = json.loads(sns.get_topic_attributes(TopicArn=arn)["Attributes"]["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["__default_statement_ID"]


def test_sqs_add_permission_still_reaches_sqs(sqs, sns):
    url = sqs.create_queue(QueueName=uid("q"))["QueueUrl"]
    sqs.add_permission(QueueUrl=url, Label="l1", AWSAccountIds=["111122223333"], Actions=["SendMessage"])
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"])
    assert policy["Statement"][0]["Sid"] == "l1"


def test_data_protection_policy(sns):
    arn = sns.create_topic(Name=uid())["TopicArn"]
    assert sns.get_data_protection_policy(ResourceArn=arn).get("DataProtectionPolicy") in (None, "")
    doc = json.dumps({"Name": "p", "Version": "2021-06-01", "Statement": [{"Sid": "s", "DataDirection": "Inbound",
                      "Principal": ["*"], "DataIdentifier": ["arn:aws:dataprotection::aws:data-identifier/EmailAddress"],
                      "Operation": {"Audit": {"SampleRate": "99", "FindingsDestination": {}}}}]})
    sns.put_data_protection_policy(ResourceArn=arn, DataProtectionPolicy=doc)
    assert json.loads(sns.get_data_protection_policy(ResourceArn=arn)["DataProtectionPolicy"]) == json.loads(doc)
    with pytest.raises(ClientError) as e:
        sns.put_data_protection_policy(ResourceArn=arn, DataProtectionPolicy="{nope")
    assert error(e)[0] == "InvalidParameter"


def test_sqs_subscriptions(sns, sqs):
    topic = sns.create_topic(Name=uid())["TopicArn"]
    qarn = queue_arn(sqs, sqs.create_queue(QueueName=uid("q"))["QueueUrl"])
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=qarn)["SubscriptionArn"]
    assert sub.startswith(topic + ":")
    # The same endpoint again is the same subscription; different attributes are refused.
    assert sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=qarn)["SubscriptionArn"] == sub
    with pytest.raises(ClientError) as e:
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=qarn, Attributes={"RawMessageDelivery": "true"})
    assert "Subscription already exists with different attributes" in error(e)[1]
    attrs = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
    assert attrs["PendingConfirmation"] == "false" and attrs["Protocol"] == "sqs" and attrs["Endpoint"] == qarn
    assert attrs["RawMessageDelivery"] == "false"
    sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="RawMessageDelivery", AttributeValue="True")
    policy = json.dumps({"color": ["red"]})
    sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="FilterPolicy", AttributeValue=policy)
    attrs = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
    assert attrs["RawMessageDelivery"] == "true"
    assert attrs["FilterPolicy"] == policy and attrs["FilterPolicyScope"] == "MessageAttributes"
    listed = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert listed == [{"SubscriptionArn": sub, "Owner": ACCOUNT, "Protocol": "sqs", "Endpoint": qarn, "TopicArn": topic}]
    assert sub in [s["SubscriptionArn"] for s in sns.list_subscriptions()["Subscriptions"]]
    t = sns.get_topic_attributes(TopicArn=topic)["Attributes"]
    assert t["SubscriptionsConfirmed"] == "1"
    sns.unsubscribe(SubscriptionArn=sub)
    sns.unsubscribe(SubscriptionArn=sub)  # twice is fine
    assert sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"] == []
    assert sns.get_topic_attributes(TopicArn=topic)["Attributes"]["SubscriptionsDeleted"] == "1"


def test_subscription_attribute_errors(sns, sqs):
    topic = sns.create_topic(Name=uid())["TopicArn"]
    qarn = queue_arn(sqs, sqs.create_queue(QueueName=uid("q"))["QueueUrl"])
    cases = [
        ({"FilterPolicy": "{not json"}, "Invalid parameter: Attributes Reason: FilterPolicy"),
        ({"FilterPolicy": json.dumps({"a": [{"numeric": [">", "x"]}]})}, "Invalid parameter: Attributes Reason: FilterPolicy"),
        ({"FilterPolicyScope": "Nope"}, "Invalid parameter: Attributes Reason: FilterPolicyScope: Invalid value [Nope]"),
        ({"RawMessageDelivery": "yes"}, "Invalid parameter: Attributes Reason: RawMessageDelivery: Invalid value [yes]"),
        ({"RedrivePolicy": json.dumps({"deadLetterTargetArn": "nope"})}, "Invalid parameter: Attributes Reason: RedrivePolicy"),
        ({"DeliveryPolicy": "{}"}, "Invalid parameter: Attributes Reason: DeliveryPolicy: Delivery protocol [sqs]"),
        ({"Unknown": "x"}, "Invalid parameter: Attributes Reason: AttributeName"),
    ]
    for attrs, message in cases:
        with pytest.raises(ClientError) as e:
            sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=qarn, Attributes=attrs)
        assert error(e)[0] == "InvalidParameter" and error(e)[1].startswith(message), (attrs, error(e))
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=qarn)["SubscriptionArn"]
    with pytest.raises(ClientError) as e:
        sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="FilterPolicy", AttributeValue='{"a": "b"}')
    assert error(e)[1].startswith("Invalid parameter: FilterPolicy:")
    # 6 keys: AWS allows 5.
    with pytest.raises(ClientError) as e:
        sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="FilterPolicy",
                                        AttributeValue=json.dumps({f"k{i}": ["v"] for i in range(6)}))
    assert error(e)[0] == "InvalidParameter"


def test_subscribe_errors_and_unsupported(sns, sqs):
    topic = sns.create_topic(Name=uid())["TopicArn"]
    fifo_q = queue_arn(sqs, sqs.create_queue(QueueName=uid("q") + ".fifo", Attributes={"FifoQueue": "true"})["QueueUrl"])
    checks = [
        ("carrier-pigeon", "x", "Invalid parameter: Amazon SNS does not support this protocol string: carrier-pigeon"),
        ("sqs", "not-an-arn", "Invalid parameter: SQS endpoint ARN"),
        ("sqs", fifo_q, "FIFO SQS Queues can not be subscribed to standard SNS topics"),
        ("http", "https://example.com/", "Invalid parameter: Endpoint must match the specified protocol"),
        ("https", "http://example.com/", "Invalid parameter: Endpoint must match the specified protocol"),
        ("email", "someone@example.com", "email delivery needs an SMTP relay"),
        ("sms", "+15555550100", "wharf does not deliver to sms endpoints"),
        ("lambda", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f", "wharf does not deliver to lambda endpoints"),
        ("firehose", f"arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/s", "wharf does not deliver to firehose"),
        ("application", f"arn:aws:sns:{REGION}:{ACCOUNT}:endpoint/GCM/app/1", "wharf does not deliver to application"),
    ]
    for protocol, endpoint, message in checks:
        with pytest.raises(ClientError) as e:
            sns.subscribe(TopicArn=topic, Protocol=protocol, Endpoint=endpoint)
        assert error(e)[0] == "InvalidParameter" and message in error(e)[1], (protocol, error(e))
    for call in [lambda: sns.list_platform_applications(), lambda: sns.get_sms_attributes(),
                 lambda: sns.check_if_phone_number_is_opted_out(phoneNumber="+15555550100")]:
        with pytest.raises(ClientError) as e:
            call()
        assert "not supported" in error(e)[1]
    with pytest.raises(ClientError) as e:
        sns.publish(PhoneNumber="+15555550100", Message="hi")
    assert "does not send SMS" in error(e)[1]


def test_delete_topic_removes_its_subscriptions(sns, sqs):
    topic = sns.create_topic(Name=uid())["TopicArn"]
    qarn = queue_arn(sqs, sqs.create_queue(QueueName=uid("q"))["QueueUrl"])
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=qarn)["SubscriptionArn"]
    sns.delete_topic(TopicArn=topic)
    assert topic not in [t["TopicArn"] for t in sns.list_topics()["Topics"]]
    assert sub not in [s["SubscriptionArn"] for s in sns.list_subscriptions()["Subscriptions"]]


def test_definitions_survive_restart():
    with tempfile.TemporaryDirectory() as d:
        s = Server(storage=["--data-dir", d])
        try:
            sns, sqs = sns_client(s), sqs_client(s)
            topic = sns.create_topic(Name="kept", Attributes={"DisplayName": "K"}, Tags=[{"Key": "a", "Value": "b"}])["TopicArn"]
            fifo = sns.create_topic(Name="kept.fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
            url = sqs.create_queue(QueueName="kept-q")["QueueUrl"]
            sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(sqs, url),
                                Attributes={"RawMessageDelivery": "true", "FilterPolicy": '{"k": ["v"]}'})["SubscriptionArn"]
            sns.add_permission(TopicArn=topic, Label="p", AWSAccountId=["111122223333"], ActionName=["Publish"])
        finally:
            s.stop()
        s = Server(storage=["--data-dir", d])
        try:
            sns, sqs = sns_client(s), sqs_client(s)
            assert {t["TopicArn"] for t in sns.list_topics()["Topics"]} == {topic, fifo}
            attrs = sns.get_topic_attributes(TopicArn=topic)["Attributes"]
            assert attrs["DisplayName"] == "K" and '"Sid":"p"' in attrs["Policy"]
            assert sns.list_tags_for_resource(ResourceArn=topic)["Tags"] == [{"Key": "a", "Value": "b"}]
            sub_attrs = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
            assert sub_attrs["RawMessageDelivery"] == "true" and sub_attrs["FilterPolicy"] == '{"k": ["v"]}'
            # The subscription works after the restart, filter included.
            sns.publish(TopicArn=topic, Message="skipped")
            sns.publish(TopicArn=topic, Message="kept", MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})
            got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2, MaxNumberOfMessages=10)["Messages"]
            assert [m["Body"] for m in got] == ["kept"]
        finally:
            s.stop()
