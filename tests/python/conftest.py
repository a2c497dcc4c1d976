"""Shared fixtures: one wharf server per test module, and real SQS clients pointed at it.

The server is `wharf serve --in-memory --http 127.0.0.1:<free> --admin 127.0.0.1:<free>` from
$WHARF_BIN (default target/debug/wharf). For working on the SQS crate alone, set
$WHARF_SQS_ONLY_BIN to the crate's `sqs_only` example binary instead; it takes the address as
its only argument. Suites that need another shape (a config file with credentials, a data
directory to crash and recover) build their own `Server(...)`.
"""

import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "000000000000"
NS = "{http://queue.amazonaws.com/doc/2012-11-05/}"
CREDS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


def md5_of_attributes(attrs):
    """AWS's MD5OfMessageAttributes, written independently of the server's (boto3 does not
    check it, so the suites do)."""
    h = hashlib.md5()
    for name in sorted(attrs):
        a = attrs[name]
        dt = a["DataType"]
        h.update(struct.pack(">I", len(name.encode())) + name.encode())
        h.update(struct.pack(">I", len(dt.encode())) + dt.encode())
        if "BinaryValue" in a:
            v = a["BinaryValue"]
            h.update(b"\x02" + struct.pack(">I", len(v)) + v)
        else:
            v = a["StringValue"].encode()
            h.update(b"\x01" + struct.pack(">I", len(v)) + v)
    return h.hexdigest()


def free_ports(n):
    """n distinct free ports (all held open while choosing, so they cannot repeat)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Server:
    """One `wharf serve` process.

    storage: the storage flags (default `--in-memory`; e.g. `["--data-dir", d]`).
    config: path of a TOML config file (`--config`), e.g. one with a `[credentials]` table.
    env: extra environment. WHARF_CREDENTIALS from the test runner's own environment is never
    passed on, so a suite gets the authentication it asked for and no other.
    """

    def __init__(self, storage=("--in-memory",), config=None, env=None):
        self.storage = list(storage)
        self.config = config
        self.env = env or {}
        # A port chosen free can be taken by someone else before the server binds it; then the
        # server exits at once and we try again with new ports.
        for _ in range(3):
            if self._start():
                return
        raise RuntimeError("wharf did not start:\n" + "".join(self.output))

    def _start(self):
        http_port, admin_port, amqp_port = free_ports(3)
        self.http = f"127.0.0.1:{http_port}"
        self.amqp_port = amqp_port
        only = os.environ.get("WHARF_SQS_ONLY_BIN")
        if only:
            cmd = [only, self.http]
        else:
            binary = os.environ.get("WHARF_BIN") or str(ROOT / "target" / "debug" / "wharf")
            admin = self.admin = f"127.0.0.1:{admin_port}"
            cmd = [binary, "serve", *self.storage, "--http", self.http, "--admin", admin]
            if "WHARF_AMQP" in self.env:
                # The caller chose the AMQP address (an address other than loopback, say).
                self.amqp_port = int(self.env["WHARF_AMQP"].rsplit(":", 1)[1])
            else:
                cmd += ["--amqp", f"127.0.0.1:{amqp_port}"]
            if self.config:
                cmd += ["--config", str(self.config)]
        env = {k: v for k, v in os.environ.items() if k != "WHARF_CREDENTIALS"}
        env.update(self.env)
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env
        )
        self.output = []
        ready = threading.Event()

        def pump():
            # Keep draining stdout for the server's whole life so it never blocks on a full pipe.
            for line in self.proc.stdout:
                self.output.append(line)
                if line.startswith("ready in"):
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 30
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                return False
        self.endpoint = f"http://{self.http}"
        return True

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()
    # Only now: a server that died mid-module is a failure of that module.
    assert s.proc.returncode in (0, -15), "".join(s.output)


def sqs_client(server):
    """boto3's SQS client for `server`: no retries, so every error reaches the test."""
    return boto3.client(
        "sqs",
        endpoint_url=server.endpoint,
        region_name=REGION,
        config=Config(retries={"max_attempts": 1}, read_timeout=40),
        **CREDS,
    )


@pytest.fixture(scope="module")
def sqs(server):
    return sqs_client(server)


def sns_client(server):
    """boto3's SNS client for `server` (same endpoint as SQS), no retries."""
    return boto3.client(
        "sns",
        endpoint_url=server.endpoint,
        region_name=REGION,
        config=Config(retries={"max_attempts": 1}, read_timeout=40),
        **CREDS,
    )


@pytest.fixture(scope="module")
def sns(server):
    return sns_client(server)


@pytest.fixture
def new_queue(sqs):
    """Create a queue with a unique name; returns its URL."""

    def make(prefix="q", fifo=False, **attributes):
        name = f"{prefix}-{uuid.uuid4().hex[:10]}" + (".fifo" if fifo else "")
        attrs = {k: str(v) for k, v in attributes.items()}
        if fifo:
            attrs["FifoQueue"] = "true"
        return sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]

    return make


class QueryClient:
    """The Query protocol with real SigV4-signed form posts, as pre-2024 SDKs sent them."""

    def __init__(self, endpoint, access_key=None, secret_key=None):
        self.endpoint = endpoint
        self.creds = Credentials(
            access_key or CREDS["aws_access_key_id"], secret_key or CREDS["aws_secret_access_key"]
        )

    def prepare(self, action, params=None, path="/", method="POST"):
        """The signed request, not yet sent (tests may tamper with it first)."""
        form = {"Action": action, "Version": "2012-11-05", **(params or {})}
        url = self.endpoint + path
        if method == "POST":
            req = AWSRequest(
                method="POST",
                url=url,
                data=form,
                headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            )
        else:
            req = AWSRequest(method="GET", url=url, params=form)
        SigV4Auth(self.creds, "sqs", REGION).add_auth(req)
        return req.prepare()

    def call(self, action, params=None, path="/", method="POST"):
        return self.send(self.prepare(action, params, path, method))

    @staticmethod
    def send(prepared):
        resp = requests.request(
            prepared.method, prepared.url, headers=dict(prepared.headers), data=prepared.body, timeout=40
        )
        return resp.status_code, ET.fromstring(resp.content)


@pytest.fixture(scope="module")
def query(server):
    return QueryClient(server.endpoint)


def find(root, path):
    """ElementTree lookup with the SQS namespace on every step."""
    return root.find("/".join(NS + p for p in path.split("/")))


def findall(root, path):
    return root.findall("/".join(NS + p for p in path.split("/")))


def make_aws_cli(endpoint, access_key="test", secret_key="test", service="sqs"):
    """A function running `aws --endpoint-url ENDPOINT <service> ...` with these credentials in
    the environment; it returns the CompletedProcess."""
    exe = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
    assert exe, "the aws CLI is not installed (pip install -r tests/python/requirements.txt)"
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=access_key,
        AWS_SECRET_ACCESS_KEY=secret_key,
        AWS_DEFAULT_REGION=REGION,
        AWS_MAX_ATTEMPTS="1",
    )
    # A profile or session token from the runner's environment must not leak in.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        env.pop(name, None)

    def run(*args):
        return subprocess.run(
            [exe, "--endpoint-url", endpoint, "--output", "json", service, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    return run


@pytest.fixture(scope="module")
def aws_cli(server):
    """Run `aws --endpoint-url ... sqs ...`; returns CompletedProcess."""
    return make_aws_cli(server.endpoint)


def wait_until(predicate, timeout=5.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def verify_sns_signature(message):
    """Check an SNS message's signature the way AWS documents it (fetch the certificate from
    SigningCertURL, rebuild the canonical string, verify SHA1withRSA or SHA256withRSA), with
    the `cryptography` package: independent of the server's implementation. Raises on failure."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    cert = x509.load_pem_x509_certificate(requests.get(message["SigningCertURL"], timeout=10).content)
    if message["Type"] == "Notification":
        fields = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        fields = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    text = "".join(f"{k}\n{message[k]}\n" for k in fields if k in message)
    digest = {"1": hashes.SHA1(), "2": hashes.SHA256()}[message["SignatureVersion"]]
    cert.public_key().verify(base64.b64decode(message["Signature"]), text.encode(), padding.PKCS1v15(), digest)
