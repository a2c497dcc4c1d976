"""The Query protocol (form-encoded, XML answers) with real SigV4-signed requests, as older SDKs
and shell scripts speak it; POST and GET, on `/` and on the queue URL."""

import base64
import hashlib
import uuid

from conftest import ACCOUNT, find, findall


def uid():
    return f"query-{uuid.uuid4().hex[:10]}"


def test_create_send_receive_delete(query, server):
    name = uid()
    status, root = query.call(
        "CreateQueue",
        {"QueueName": name, "Attribute.1.Name": "VisibilityTimeout", "Attribute.1.Value": "40",
         "Tag.1.Key": "team", "Tag.1.Value": "q"},
    )
    assert status == 200
    url = find(root, "CreateQueueResult/QueueUrl").text
    assert url == f"{server.endpoint}/{ACCOUNT}/{name}"
    assert find(root, "ResponseMetadata/RequestId").text

    body = "line1\r\nline2 & <xml> €"
    status, root = query.call(
        "SendMessage",
        {
            "QueueUrl": url,
            "MessageBody": body,
            "MessageAttribute.1.Name": "color",
            "MessageAttribute.1.Value.DataType": "String",
            "MessageAttribute.1.Value.StringValue": "blue",
            "MessageAttribute.2.Name": "blob",
            "MessageAttribute.2.Value.DataType": "Binary",
            "MessageAttribute.2.Value.BinaryValue": base64.b64encode(b"\x00\x01").decode(),
        },
    )
    assert status == 200
    assert find(root, "SendMessageResult/MD5OfMessageBody").text == hashlib.md5(body.encode()).hexdigest()
    md5_attrs = find(root, "SendMessageResult/MD5OfMessageAttributes").text

    status, root = query.call(
        "ReceiveMessage",
        {"QueueUrl": url, "AttributeName.1": "All", "MessageAttributeName.1": "All"},
    )
    assert status == 200
    msg = find(root, "ReceiveMessageResult/Message")
    assert find(msg, "Body").text == body  # the CR survived XML
    assert find(msg, "MD5OfMessageAttributes").text == md5_attrs
    attrs = {find(a, "Name").text: find(a, "Value") for a in findall(msg, "MessageAttribute")}
    assert find(attrs["color"], "StringValue").text == "blue"
    assert base64.b64decode(find(attrs["blob"], "BinaryValue").text) == b"\x00\x01"
    sys_attrs = {find(a, "Name").text: find(a, "Value").text for a in findall(msg, "Attribute")}
    assert sys_attrs["ApproximateReceiveCount"] == "1"

    handle = find(msg, "ReceiptHandle").text
    status, root = query.call("DeleteMessage", {"QueueUrl": url, "ReceiptHandle": handle})
    assert status == 200 and root.tag.endswith("DeleteMessageResponse")

    status, root = query.call("ListQueueTags", {"QueueUrl": url})
    tags = {find(t, "Key").text: find(t, "Value").text for t in findall(root, "ListQueueTagsResult/Tag")}
    assert tags == {"team": "q"}


def test_queue_url_path_and_get(query):
    name = uid()
    query.call("CreateQueue", {"QueueName": name})
    path = f"/{ACCOUNT}/{name}"
    status, _ = query.call("SendMessage", {"MessageBody": "via path"}, path=path)
    assert status == 200
    status, root = query.call(
        "GetQueueAttributes", {"AttributeName.1": "ApproximateNumberOfMessages"}, path=path, method="GET"
    )
    assert status == 200
    a = find(root, "GetQueueAttributesResult/Attribute")
    assert find(a, "Name").text == "ApproximateNumberOfMessages" and find(a, "Value").text == "1"
    status, root = query.call("ListQueues", {"QueueNamePrefix": name}, method="GET")
    assert [u.text.rsplit("/", 1)[1] for u in findall(root, "ListQueuesResult/QueueUrl")] == [name]


def test_batch_in_query(query):
    name = uid()
    _, root = query.call("CreateQueue", {"QueueName": name})
    url = find(root, "CreateQueueResult/QueueUrl").text
    params = {"QueueUrl": url}
    for i, body in enumerate(["a", "b", "\x01bad"], start=1):
        params[f"SendMessageBatchRequestEntry.{i}.Id"] = f"e{i}"
        params[f"SendMessageBatchRequestEntry.{i}.MessageBody"] = body
    status, root = query.call("SendMessageBatch", params)
    assert status == 200
    ok = [find(e, "Id").text for e in findall(root, "SendMessageBatchResult/SendMessageBatchResultEntry")]
    bad = findall(root, "SendMessageBatchResult/BatchResultErrorEntry")
    assert ok == ["e1", "e2"]
    assert find(bad[0], "Id").text == "e3" and find(bad[0], "SenderFault").text == "true"


def test_errors_are_xml_with_query_codes(query):
    status, root = query.call("GetQueueUrl", {"QueueName": uid()})
    assert status == 400
    assert root.tag.endswith("ErrorResponse")
    assert find(root, "Error/Code").text == "AWS.SimpleQueueService.NonExistentQueue"
    assert find(root, "Error/Type").text == "Sender"
    assert "for this wsdl version" in find(root, "Error/Message").text
    assert find(root, "RequestId").text

    status, root = query.call("NoSuchAction")
    assert status == 400 and find(root, "Error/Code").text == "InvalidAction"

    status, root = query.call("CreateQueue", {})
    assert find(root, "Error/Code").text == "MissingParameter"

    name = uid()
    query.call("CreateQueue", {"QueueName": name})
    query.call("PurgeQueue", {"QueueUrl": name})
    status, root = query.call("PurgeQueue", {"QueueUrl": name})
    assert status == 403
    assert find(root, "Error/Code").text == "AWS.SimpleQueueService.PurgeQueueInProgress"
