"""`/openapi.json`, and schemathesis fuzzing the live server against it.

The document test is async, bounded by conftest's default 60 s; the fuzzing is a
sync test, `slow` (~13 s), bounded by `subprocess.run(timeout=600)`, its server a
child process (`processes.serve`) stopped in `finally`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aura_trio import client

from .helpers import HOST, token
from .processes import serve

SEED = os.environ.get("AURA_SCHEMATHESIS_SEED", "20261122")
EXAMPLES = os.environ.get("AURA_SCHEMATHESIS_EXAMPLES", "40")


async def test_openapi_documents_every_route(aura):
    response = await client.request(HOST, aura.port, "GET", "/openapi.json")
    assert response.status == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    operations = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert operations == {
        ("/health", "get"),
        ("/health/ready", "get"),
        ("/aura/test/stream", "get"),
        ("/aura/test/stream", "post"),
        ("/aura/hitl/approve/{request_id}", "post"),
        ("/aura/hitl/reject/{request_id}", "post"),
        ("/aura/hitl/requests/{request_id}", "get"),
        ("/aura/hitl/signals/{session_id}", "get"),
        ("/aura/hitl/pending", "get"),
        ("/aura/hitl/audit", "get"),
    }
    stream = doc["paths"]["/aura/test/stream"]
    assert "text/event-stream" in stream["get"]["responses"]["200"]["content"]
    assert stream["post"]["requestBody"]["required"] is True
    approve = doc["paths"]["/aura/hitl/approve/{request_id}"]["post"]
    assert approve["requestBody"]["required"] is False
    assert approve["security"] == [{"bearerAuth": []}]
    assert {"401", "403", "404", "409"} <= set(approve["responses"])


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_schema_violation(tmp_path: Path, redis_server, raw_redis):
    env = {
        "REDIS_URL": redis_server.url,
        "AURA_HITL_TIMEOUT_SECONDS": "1",
        "AURA_MAX_STREAMS_PER_USER": "1000",
        "AURA_LOG_LEVEL": "WARNING",
    }
    schemathesis = Path(sys.executable).with_name("schemathesis")
    config = tmp_path / "schemathesis.toml"
    # Invalid input may also be refused for its size: a body over 64 KiB (413), a
    # request line over 16 KiB (431), both in the envelope and documented.
    config.write_text(
        "[checks.negative_data_rejection]\n"
        'expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", '
        '"415", "422", "428", "429", "431"]\n'
    )
    with serve(tmp_path, env=env) as server:
        result = subprocess.run(
            [
                str(schemathesis), "--config-file", str(config), "run", f"http://{HOST}:{server.port}/openapi.json",
                "-H", f"Authorization: Bearer {token()}",
                "--checks", "all",
                "--max-examples", EXAMPLES,
                "--seed", SEED,
                "--request-timeout", "20",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "NO_COLOR": "1"},
        )  # fmt: skip
        assert server.process.poll() is None, "the server died under fuzzing"
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Tested: 10" in result.stdout
    errors = [e for e in server.logs() if e.get("level") == "ERROR"]
    assert not errors, errors
