"""kombu's own AMQP integration tests (`t/integration/test_py_amqp.py` and the `common.py` it
imports, from kombu's source package, unmodified) against a fresh wharf. scripts/test fetches
the source package and passes its location in WHARF_KOMBU_SRC."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Server


def test_kombu_py_amqp_integration_suite_passes_against_wharf():
    src = os.environ.get("WHARF_KOMBU_SRC")
    if not src:
        pytest.skip("WHARF_KOMBU_SRC is not set; scripts/test fetches kombu's source package and sets it")
    suite = Path(src) / "t" / "integration" / "test_py_amqp.py"
    assert suite.is_file(), f"kombu's integration suite is missing at {suite}"
    server = Server()
    try:
        env = dict(os.environ, RABBITMQ_HOST="127.0.0.1", RABBITMQ_5672_TCP=str(server.amqp_port))
        run = subprocess.run(
            [sys.executable, "-m", "pytest", str(suite), "-q", "-p", "no:cacheprovider", "-W", "ignore"],
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        server.stop()
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary, summary
