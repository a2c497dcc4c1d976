"""HTTP and HTTPS subscriptions against a real local endpoint: the SubscriptionConfirmation POST (signed,
with a Token and a SubscribeURL that points back at wharf), confirming by following the URL,
Notification POSTs with AWS's headers (raw and enveloped), retries per DeliveryPolicy, the
subscription's dead-letter queue when retries run out, a restart in the middle of retries, the
UnsubscribeURL, and SigV4 authentication with the unsigned links still working."""

import ipaddress
import json
import ssl
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from conftest import Server, sns_client, sqs_client, verify_sns_signature


def uid(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Endpoint:
    """An HTTP endpoint that records every POST and answers with `statuses` in turn (then 200)."""

    def __init__(self):
        self.requests = []
        self.statuses = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                with outer.lock:
                    outer.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                                           "at": time.monotonic()})
                    status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, n, timeout=15, kind=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = [r for r in self.requests if kind is None or r["headers"].get("x-amz-sns-message-type") == kind]
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"expected {n} {kind or ''} requests, got {len(got)}: {got}")

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def endpoint():
    e = Endpoint()
    yield e
    e.close()


def subscribe_confirmed(sns, endpoint, topic, attributes=None):
    protocol = endpoint.url.split(":", 1)[0]
    arn = sns.subscribe(TopicArn=topic, Protocol=protocol, Endpoint=endpoint.url, Attributes=attributes or {},
                        ReturnSubscriptionArn=True)["SubscriptionArn"]
    [conf] = endpoint.wait(1, kind="SubscriptionConfirmation")
    body = json.loads(conf["body"])
    r = requests.get(body["SubscribeURL"], timeout=10)
    assert r.status_code == 200, r.text
    return arn, conf


def test_confirmation_then_notifications(sns, endpoint):
    topic = sns.create_topic(Name=uid())["TopicArn"]
    pending = sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint.url)["SubscriptionArn"]
    assert pending == "pending confirmation"
    [conf] = endpoint.wait(1, kind="SubscriptionConfirmation")
    h, body = conf["headers"], json.loads(conf["body"])
    assert h["x-amz-sns-topic-arn"] == topic
    assert h["user-agent"] == "Amazon Simple Notification Service Agent"
    assert h["content-type"] == "text/plain; charset=UTF-8"
    assert "x-amz-sns-subscription-arn" not in h
    assert body["Type"] == "SubscriptionConfirmation" and body["TopicArn"] == topic and len(body["Token"]) >= 32
    assert body["SubscribeURL"].startswith(sns.meta.endpoint_url + "/?Action=ConfirmSubscription")
    verify_sns_signature(body)
    [listed] = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert listed["SubscriptionArn"] == "PendingConfirmation"
    # Nothing is delivered to a pending subscription.
    sns.publish(TopicArn=topic, Message="too early")
    with pytest.raises(ClientError) as e:
        sns.confirm_subscription(TopicArn=topic, Token="0" * 64)
    assert e.value.response["Error"]["Message"] == "Invalid parameter: Token"
    # Following the SubscribeURL (unsigned GET, as an endpoint does) confirms.
    r = requests.get(body["SubscribeURL"], timeout=10)
    assert r.status_code == 200 and "<ConfirmSubscriptionResult><SubscriptionArn>" in r.text
    sub = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"][0]["SubscriptionArn"]
    attrs = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
    assert attrs["PendingConfirmation"] == "false"
    assert json.loads(attrs["EffectiveDeliveryPolicy"])["healthyRetryPolicy"]["numRetries"] == 3
    # Confirming again is fine.
    assert sns.confirm_subscription(TopicArn=topic, Token=body["Token"])["SubscriptionArn"] == sub
    mid = sns.publish(TopicArn=topic, Message="hello", Subject="s",
                      MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})["MessageId"]
    [note] = endpoint.wait(1, kind="Notification")
    h, body = note["headers"], json.loads(note["body"])
    assert h["x-amz-sns-message-id"] == mid and h["x-amz-sns-subscription-arn"] == sub
    assert body["Message"] == "hello" and body["Subject"] == "s" and body["MessageAttributes"]["k"]["Value"] == "v"
    verify_sns_signature(body)
    assert len(endpoint.requests) == 2, "the early message was not delivered"
    # Raw delivery: the message itself, flagged.
    sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="RawMessageDelivery", AttributeValue="true")
    sns.publish(TopicArn=topic, Message="raw!")
    note = endpoint.wait(2, kind="Notification")[1]
    assert note["body"] == "raw!" and note["headers"]["x-amz-sns-rawdelivery"] == "true"
    # The UnsubscribeURL works unsigned too.
    r = requests.get(body["UnsubscribeURL"], timeout=10)
    assert r.status_code == 200
    assert sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"] == []


def test_signature_version_2_and_content_type(sns, endpoint):
    topic = sns.create_topic(Name=uid(), Attributes={"SignatureVersion": "2"})["TopicArn"]
    policy = {"requestPolicy": {"headerContentType": "application/json"}}
    subscribe_confirmed(sns, endpoint, topic, {"DeliveryPolicy": json.dumps(policy)})
    sns.publish(TopicArn=topic, Message="v2")
    [note] = endpoint.wait(1, kind="Notification")
    body = json.loads(note["body"])
    assert body["SignatureVersion"] == "2"
    assert note["headers"]["content-type"] == "application/json"
    verify_sns_signature(body)


def test_retries_follow_the_delivery_policy(sns, endpoint):
    topic = sns.create_topic(Name=uid())["TopicArn"]
    policy = {"healthyRetryPolicy": {"numRetries": 3, "minDelayTarget": 1, "maxDelayTarget": 1}}
    subscribe_confirmed(sns, endpoint, topic, {"DeliveryPolicy": json.dumps(policy)})
    endpoint.statuses = [500, 503]
    sns.publish(TopicArn=topic, Message="eventually")
    notes = endpoint.wait(3, kind="Notification")
    assert [json.loads(n["body"])["Message"] for n in notes] == ["eventually"] * 3
    gaps = [b["at"] - a["at"] for a, b in zip(notes, notes[1:])]
    assert all(0.8 < g < 3 for g in gaps), gaps
    time.sleep(1.5)
    assert len(endpoint.wait(3, kind="Notification")) == 3, "delivered once it succeeded; no more retries"


def test_exhausted_retries_go_to_the_dead_letter_queue(sns, sqs, endpoint):
    dlq = sqs.create_queue(QueueName=uid("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = sns.create_topic(Name=uid())["TopicArn"]
    policy = {"healthyRetryPolicy": {"numRetries": 1, "minDelayTarget": 1, "maxDelayTarget": 1}}
    subscribe_confirmed(sns, endpoint, topic, {"DeliveryPolicy": json.dumps(policy),
                                               "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn})})
    endpoint.statuses = [500] * 10
    mid = sns.publish(TopicArn=topic, Message="undeliverable")["MessageId"]
    endpoint.wait(2, kind="Notification")
    got = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=5).get("Messages", [])
    assert len(got) == 1
    body = json.loads(got[0]["Body"])
    assert body["MessageId"] == mid and body["Message"] == "undeliverable"
    time.sleep(1.2)
    assert len(endpoint.wait(2, kind="Notification")) == 2, "no attempts after giving up"


def test_restart_in_the_middle_of_retries_loses_nothing():
    endpoint = Endpoint()
    with tempfile.TemporaryDirectory() as d:
        s = Server(storage=["--data-dir", d])
        try:
            sns = sns_client(s)
            topic = sns.create_topic(Name="retrying")["TopicArn"]
            policy = {"healthyRetryPolicy": {"numRetries": 20, "minDelayTarget": 1, "maxDelayTarget": 1}}
            subscribe_confirmed(sns, endpoint, topic, {"DeliveryPolicy": json.dumps(policy)})
            endpoint.statuses = [500] * 1000
            sns.publish(TopicArn=topic, Message="owed")
            endpoint.wait(2, kind="Notification")
        finally:
            s.kill()  # no shutdown code runs
        endpoint.statuses = []
        before = len(endpoint.requests)
        s = Server(storage=["--data-dir", d])
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with endpoint.lock:
                    after = endpoint.requests[before:]
                if after:
                    break
                time.sleep(0.1)
            assert after and json.loads(after[0]["body"])["Message"] == "owed"
            time.sleep(1.5)
            assert len(endpoint.requests) == before + 1, "delivered once after the restart"
            # The subscription survived too.
            sns = sns_client(s)
            subs = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
            assert [x["Endpoint"] for x in subs] == [endpoint.url]
        finally:
            s.stop()
            endpoint.close()


def test_authentication_keeps_the_links_open(tmp_path):
    config = tmp_path / "wharf.toml"
    config.write_text('[credentials]\nAKIAWHARFTEST = "wharf-secret"\n')
    s = Server(config=config)
    endpoint = Endpoint()
    try:
        good = boto3.client("sns", endpoint_url=s.endpoint, region_name="us-east-1",
                            aws_access_key_id="AKIAWHARFTEST", aws_secret_access_key="wharf-secret")
        topic = good.create_topic(Name="authed")["TopicArn"]
        bad = sns_client(s)
        with pytest.raises(ClientError) as e:
            bad.list_topics()
        assert e.value.response["Error"]["Code"] == "InvalidClientTokenId"
        r = requests.post(s.endpoint, data={"Action": "ListTopics"}, timeout=10)
        assert r.status_code == 403 and "MissingAuthenticationToken" in r.text
        # An HTTP endpoint follows its SubscribeURL unsigned, and that works.
        subscribe_confirmed(good, endpoint, topic)
        good.publish(TopicArn=topic, Message="signed in")
        assert json.loads(endpoint.wait(1, kind="Notification")[0]["body"])["Message"] == "signed in"
    finally:
        s.stop()
        endpoint.close()


def test_kill_9_loses_no_accepted_publish():
    """Publishers run flat out against a topic with two SQS subscriptions and one HTTP
    subscription whose endpoint is failing; the server is killed with SIGKILL mid-stream. After
    a restart every Publish that was answered is in both queues and reaches the endpoint."""
    endpoint = Endpoint()
    with tempfile.TemporaryDirectory() as d:
        s = Server(storage=["--data-dir", d])
        accepted = []
        try:
            sns, sqs = sns_client(s), sqs_client(s)
            topic = sns.create_topic(Name="crash")["TopicArn"]
            urls = []
            for raw in ("true", "false"):
                url = sqs.create_queue(QueueName=f"crash-{raw}")["QueueUrl"]
                arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
                sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": raw})
                urls.append(url)
            policy = {"healthyRetryPolicy": {"numRetries": 50, "minDelayTarget": 1, "maxDelayTarget": 1}}
            subscribe_confirmed(sns, endpoint, topic, {"DeliveryPolicy": json.dumps(policy), "RawMessageDelivery": "true"})
            endpoint.statuses = [500] * 100_000
            stop = threading.Event()

            def publish(worker):
                client = sns_client(s)
                i = 0
                while not stop.is_set():
                    body = f"{worker}-{i}"
                    try:
                        client.publish(TopicArn=topic, Message=body)
                    except Exception:
                        return  # the server is gone: this one was not accepted
                    with endpoint.lock:
                        accepted.append(body)
                    i += 1

            threads = [threading.Thread(target=publish, args=(w,)) for w in range(4)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 10
            while len(accepted) < 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            s.kill()  # SIGKILL while publishes are in flight
            stop.set()
            for t in threads:
                t.join()
        except BaseException:
            s.kill()
            raise
        assert len(accepted) >= 200, "too few publishes before the kill"
        with endpoint.lock:
            endpoint.statuses = []
            endpoint.requests.clear()
        s = Server(storage=["--data-dir", d])
        try:
            sqs = sqs_client(s)
            for url in urls:
                url = sqs.get_queue_url(QueueName=url.rsplit("/", 1)[1])["QueueUrl"]
                bodies = set()
                while True:
                    batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
                    if not batch:
                        break
                    for m in batch:
                        body = m["Body"]
                        bodies.add(body if not body.startswith("{") else json.loads(body)["Message"])
                    sqs.delete_message_batch(QueueUrl=url, Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
                missing = set(accepted) - bodies
                assert not missing, f"{url}: {len(missing)} accepted publishes lost, e.g. {sorted(missing)[:5]}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with endpoint.lock:
                    posted = {r["body"] for r in endpoint.requests}
                if set(accepted) <= posted:
                    break
                time.sleep(0.2)
            missing = set(accepted) - posted
            assert not missing, f"HTTP endpoint: {len(missing)} accepted publishes never delivered"
        finally:
            s.stop()
            endpoint.close()


def private_ca(tmp_path):
    """A private CA and a certificate it signed for 127.0.0.1: (CA file, cert file, key file)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject, issuer, public_key, signing_key, *extensions):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wharf test CA")])
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wharf test endpoint")])
    ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key,
                     (x509.BasicConstraints(ca=True, path_length=0), True),
                     (x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                    crl_sign=True, encipher_only=False, decipher_only=False), True))
    leaf = certificate(leaf_name, ca_name, leaf_key.public_key(), ca_key,
                       (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
                       (x509.BasicConstraints(ca=False, path_length=None), True))
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "endpoint.pem", tmp_path / "endpoint.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return ca_file, cert_file, key_file


class HttpsEndpoint(Endpoint):
    """The recording endpoint behind TLS, with a certificate from a private CA."""

    def __init__(self, cert_file, key_file):
        super().__init__()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = self.url.replace("http://", "https://")


def test_https_endpoint_with_a_trusted_ca(tmp_path):
    """An https subscription: the confirmation and the notification arrive over TLS when the
    endpoint's certificate is trusted (here through --sns-https-ca-file); an endpoint whose
    certificate is not trusted gets nothing, as with AWS."""
    ca_file, cert_file, key_file = private_ca(tmp_path)
    trusted, untrusted = HttpsEndpoint(cert_file, key_file), HttpsEndpoint(cert_file, key_file)
    config = tmp_path / "wharf.toml"
    config.write_text(f'sns_https_ca_file = "{ca_file}"\n')
    s = Server(config=config)
    plain = Server()
    try:
        sns = sns_client(s)
        topic = sns.create_topic(Name="tls")["TopicArn"]
        arn, conf = subscribe_confirmed(sns, trusted, topic)
        assert arn.startswith(topic + ":")
        verify_sns_signature(json.loads(conf["body"]))
        sns.publish(TopicArn=topic, Message="over tls")
        [note] = trusted.wait(1, kind="Notification")
        assert json.loads(note["body"])["Message"] == "over tls"
        assert note["headers"]["x-amz-sns-subscription-arn"] == arn

        # The same endpoint, but a server that does not trust its certificate.
        other = sns_client(plain)
        topic = other.create_topic(Name="tls")["TopicArn"]
        other.subscribe(TopicArn=topic, Protocol="https", Endpoint=untrusted.url)
        time.sleep(1.5)
        assert untrusted.requests == [], "delivered to an endpoint with an untrusted certificate"
        # A malformed https endpoint is refused at Subscribe.
        with pytest.raises(ClientError) as e:
            other.subscribe(TopicArn=topic, Protocol="https", Endpoint="http://127.0.0.1/x")
        assert e.value.response["Error"]["Code"] == "InvalidParameter"
    finally:
        s.stop()
        plain.stop()
        trusted.close()
        untrusted.close()
