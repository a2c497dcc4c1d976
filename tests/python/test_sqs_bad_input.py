"""Bad input of every kind gets AWS's error and never harms the server."""

import json

import requests

JSON = {"Content-Type": "application/x-amz-json-1.0"}


def post_json(server, action, body):
    headers = dict(JSON, **{"X-Amz-Target": f"AmazonSQS.{action}"})
    return requests.post(server.endpoint, headers=headers, data=body, timeout=10)


def test_malformed_json(server):
    r = post_json(server, "ListQueues", b"{nope")
    assert r.status_code == 400
    assert r.json()["__type"].endswith("#SerializationException")
    r = post_json(server, "ListQueues", b"[1,2]")
    assert r.status_code == 400


def test_wrong_member_types(server):
    r = post_json(server, "CreateQueue", json.dumps({"QueueName": 5}))
    assert r.status_code == 400
    r = post_json(server, "ReceiveMessage", json.dumps({"QueueUrl": "x", "MaxNumberOfMessages": "many"}))
    assert r.status_code == 400


def test_unknown_action(server):
    r = post_json(server, "Explode", b"{}")
    assert r.status_code == 400
    assert r.json()["__type"].endswith("#UnknownOperationException")
    r = requests.post(server.endpoint, headers=dict(JSON, **{"X-Amz-Target": "NotSqs.Thing"}), data=b"{}",
                      timeout=10)
    assert r.status_code == 400


def test_missing_parameters(server):
    r = post_json(server, "SendMessage", json.dumps({"MessageBody": "x"}))
    assert r.status_code == 400
    assert r.json()["__type"] == "com.amazonaws.sqs#MissingParameter"
    assert r.headers["x-amzn-query-error"] == "MissingParameter;Sender"


def test_invalid_utf8(server):
    r = requests.post(server.endpoint, headers={"Content-Type": "application/x-www-form-urlencoded"},
                      data=b"Action=CreateQueue&QueueName=%FF%FE", timeout=10)
    assert r.status_code == 400
    assert b"InvalidParameterValue" in r.content
    r = post_json(server, "CreateQueue", b'{"QueueName": "\xff\xfe"}')
    assert r.status_code == 400


def test_oversize_request(server):
    r = post_json(server, "SendMessage", b"x" * (5 * 1024 * 1024))
    assert r.status_code == 413


def test_no_action_at_all(server):
    r = requests.get(server.endpoint + "/", timeout=10)
    assert r.status_code == 400
    assert b"MissingParameter" in r.content


def test_server_still_serves(server, sqs):
    assert server.alive()
    assert "QueueUrls" in sqs.list_queues() or sqs.list_queues() is not None
