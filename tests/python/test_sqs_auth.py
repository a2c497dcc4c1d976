"""SigV4 authentication on the SQS listener, with real signers: boto3 over JSON, botocore's
SigV4Auth on Query form posts, botocore's SigV4QueryAuth presigned GET URLs, and the aws CLI.

The server here is started with a config file whose `[credentials]` table holds two keys; the
shared in-memory server (no credentials) must keep accepting anything.
"""

import datetime
import json
import uuid
from unittest import mock

import boto3
import botocore.auth
import pytest
import requests
from botocore import UNSIGNED
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import REGION, QueryClient, Server, find, make_aws_cli

KEY_ID = "AKIAWHARFAUTHTEST01"
SECRET = "wharf/Auth+Test/secret0123456789abcdefXY"
OTHER_ID = "AKIAWHARFAUTHTEST02"
OTHER_SECRET = "second-secret"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    config = tmp_path_factory.mktemp("auth") / "wharf.toml"
    config.write_text(f'[credentials]\n{KEY_ID} = "{SECRET}"\n{OTHER_ID} = "{OTHER_SECRET}"\n')
    s = Server(config=config)
    yield s
    s.stop()
    assert s.proc.returncode in (0, -15), "".join(s.output)


def client(server, key=KEY_ID, secret=SECRET, **config):
    return boto3.client(
        "sqs",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, **config),
    )


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def status(excinfo):
    return excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def queue_url(auth_server):
    return client(auth_server).create_queue(QueueName=f"auth-{uuid.uuid4().hex[:8]}")["QueueUrl"]


def test_startup_block_names_the_mode(auth_server, server):
    assert "SigV4 required (2 access keys)" in "".join(auth_server.output)
    assert "any credentials accepted" in "".join(server.output)


def test_boto3_json_with_the_right_keys(auth_server, queue_url):
    sqs = client(auth_server)
    sent = sqs.send_message(
        QueueUrl=queue_url,
        MessageBody="signed hello",
        MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}},
    )
    got = sqs.receive_message(
        QueueUrl=queue_url,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["SenderId"],
        WaitTimeSeconds=1,
    )["Messages"]
    assert [m["MessageId"] for m in got] == [sent["MessageId"]]
    # The verified signer is the SenderId, as on AWS (where it is the principal).
    assert got[0]["Attributes"]["SenderId"] == KEY_ID
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=got[0]["ReceiptHandle"])
    # The second configured key works too.
    assert client(auth_server, OTHER_ID, OTHER_SECRET).get_queue_url(QueueName=queue_url.rsplit("/", 1)[1])


def test_query_form_post_signed_with_sigv4auth(auth_server, queue_url):
    q = QueryClient(auth_server.endpoint, KEY_ID, SECRET)
    code, root = q.call("SendMessage", {"QueueUrl": queue_url, "MessageBody": "query body with spaces & symbols"})
    assert code == 200, root
    assert find(root, "SendMessageResult/MessageId") is not None
    # Signed Query GET (header form) on the queue URL path, too.
    path = "/" + queue_url.split("/", 3)[3]
    code, root = q.call("GetQueueAttributes", {"AttributeName.1": "All"}, path=path, method="GET")
    assert code == 200, root


def test_presigned_get_url(auth_server, queue_url):
    creds = Credentials(KEY_ID, SECRET)
    req = AWSRequest(
        method="GET",
        url=auth_server.endpoint + "/",
        params={"Action": "GetQueueUrl", "Version": "2012-11-05", "QueueName": queue_url.rsplit("/", 1)[1]},
    )
    SigV4QueryAuth(creds, "sqs", REGION, expires=60).add_auth(req)
    url = req.prepare().url
    assert "X-Amz-Signature=" in url and "X-Amz-Credential=" in url
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200, resp.text
    assert queue_url.rsplit("/", 1)[1] in resp.text

    # Any change to what was signed breaks it.
    resp = requests.get(url.replace("GetQueueUrl", "ListQueues"), timeout=10)
    assert resp.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in resp.text


def test_presigned_url_expires(auth_server):
    # Signed two minutes ago, valid for one: botocore's own clock is moved back.
    past = botocore.auth.get_current_datetime() - datetime.timedelta(minutes=2)
    req = AWSRequest(
        method="GET", url=auth_server.endpoint + "/", params={"Action": "ListQueues", "Version": "2012-11-05"}
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=past):
        SigV4QueryAuth(Credentials(KEY_ID, SECRET), "sqs", REGION, expires=60).add_auth(req)
    resp = requests.get(req.prepare().url, timeout=10)
    assert resp.status_code == 400, resp.text
    assert "<Code>RequestExpired</Code>" in resp.text


def test_wrong_secret_is_signature_does_not_match(auth_server):
    with pytest.raises(ClientError) as e:
        client(auth_server, KEY_ID, "not-the-secret").list_queues()
    assert error_code(e) == "SignatureDoesNotMatch"
    assert status(e) == 403
    code, root = QueryClient(auth_server.endpoint, KEY_ID, "not-the-secret").call("ListQueues")
    assert code == 403
    assert find(root, "Error/Code").text == "SignatureDoesNotMatch"


def test_unknown_key_is_invalid_client_token_id(auth_server):
    with pytest.raises(ClientError) as e:
        client(auth_server, "AKIANOSUCHKEY", SECRET).list_queues()
    assert error_code(e) == "InvalidClientTokenId"
    assert status(e) == 403
    code, root = QueryClient(auth_server.endpoint, "AKIANOSUCHKEY", SECRET).call("ListQueues")
    assert (code, find(root, "Error/Code").text) == (403, "InvalidClientTokenId")


def test_unsigned_request_is_missing_authentication_token(auth_server):
    # boto3 itself, told not to sign.
    with pytest.raises(ClientError) as e:
        client(auth_server, signature_version=UNSIGNED).list_queues()
    assert error_code(e) == "MissingAuthenticationToken"
    assert status(e) == 403

    resp = requests.post(
        auth_server.endpoint + "/",
        headers={"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.ListQueues"},
        data="{}",
        timeout=10,
    )
    assert resp.status_code == 403
    assert resp.headers["x-amzn-query-error"] == "MissingAuthenticationToken;Sender"
    assert resp.json()["__type"].endswith("#MissingAuthenticationTokenException")

    resp = requests.post(
        auth_server.endpoint + "/", data={"Action": "ListQueues", "Version": "2012-11-05"}, timeout=10
    )
    assert resp.status_code == 403
    assert "<Code>MissingAuthenticationToken</Code>" in resp.text


def test_body_tampered_after_signing(auth_server, queue_url):
    q = QueryClient(auth_server.endpoint, KEY_ID, SECRET)
    prepared = q.prepare("SendMessage", {"QueueUrl": queue_url, "MessageBody": "pay 10"})
    body = prepared.body if isinstance(prepared.body, str) else prepared.body.decode()
    assert "pay+10" in body or "pay%2010" in body
    prepared.body = body.replace("10", "99")
    prepared.headers["Content-Length"] = str(len(prepared.body))
    code, root = QueryClient.send(prepared)
    assert (code, find(root, "Error/Code").text) == (403, "SignatureDoesNotMatch")

    # The same over JSON.
    req = AWSRequest(
        method="POST",
        url=auth_server.endpoint + "/",
        data=json.dumps({"QueueUrl": queue_url, "MessageBody": "pay 10"}),
        headers={"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.SendMessage"},
    )
    SigV4Auth(Credentials(KEY_ID, SECRET), "sqs", REGION).add_auth(req)
    prepared = req.prepare()
    resp = requests.post(
        prepared.url,
        headers=dict(prepared.headers),
        data=prepared.body.replace(b"10", b"99") if isinstance(prepared.body, bytes) else prepared.body.replace("10", "99"),
        timeout=10,
    )
    assert resp.status_code == 403
    assert resp.headers["x-amzn-query-error"] == "SignatureDoesNotMatch;Sender"
    # Nothing was sent by either attempt.
    left = client(auth_server).receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    assert all("99" not in m["Body"] for m in left)


def test_clock_skew_over_15_minutes(auth_server):
    skewed = botocore.auth.get_current_datetime() - datetime.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=skewed):
        with pytest.raises(ClientError) as e:
            client(auth_server).list_queues()
    assert error_code(e) == "SignatureDoesNotMatch"
    assert "Signature expired" in e.value.response["Error"]["Message"]


def test_aws_cli_with_env_credentials(auth_server, queue_url):
    good = make_aws_cli(auth_server.endpoint, KEY_ID, SECRET)
    r = good("send-message", "--queue-url", queue_url, "--message-body", "from the cli")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["MessageId"]
    bad = make_aws_cli(auth_server.endpoint, KEY_ID, "wrong")
    r = bad("list-queues")
    assert r.returncode != 0
    assert "SignatureDoesNotMatch" in r.stderr


def test_unauthenticated_server_still_takes_anything(server):
    sqs = boto3.client(
        "sqs",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id="anything",
        aws_secret_access_key="at-all",
        config=Config(retries={"max_attempts": 1}),
    )
    sqs.list_queues()
    resp = requests.post(server.endpoint + "/", data={"Action": "ListQueues", "Version": "2012-11-05"}, timeout=10)
    assert resp.status_code == 200, resp.text
