"""Property-based fuzzing of every operation in the OpenAPI document (schemathesis),
against a real ``pixelbatch serve`` subprocess: no input may produce a 5xx.

Nothing leaves the machine: generated uploads are either not a valid catalog (so no batch
is created) or, in the second test, a fixed catalog whose only URL is 127.0.0.1:9, which
the address policy refuses before connecting; webhook URLs are forced to that address too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests import support

MAX_EXAMPLES = 25
BLOCKED = "http://127.0.0.1:9"
VALID_CSV = (
    b"S. No.,Product Name,Input Image Urls\r\n"
    + f"1,Mug,{BLOCKED}/a.jpg\r\n2,Cup,{BLOCKED}/b.png\r\n".encode()
)
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[support.ServerProcess]:
    root = tmp_path_factory.mktemp("schemathesis")
    proc = support.ServerProcess(
        root / "data",
        {
            "PIXELBATCH_AUTH": "off",
            "PIXELBATCH_FETCH_RETRIES": "0",
            "PIXELBATCH_WEBHOOK_MAX_ATTEMPTS": "1",
        },
    ).start()
    try:
        yield proc
    finally:
        proc.stop()
        log = proc.log_path.read_text(errors="replace")
        assert "Traceback" not in log, f"server log {proc.log_path}:\n{log[-5000:]}"


@pytest.fixture(scope="module")
def api_schema(live_server: support.ServerProcess) -> Any:
    return schemathesis.openapi.from_url(f"{live_server.base_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


def _keep_local(case: Any) -> None:
    """Never let a generated webhook URL point anywhere but the refused local address."""
    if isinstance(case.body, dict) and case.body.get("webhook_url"):
        case.body["webhook_url"] = f"{BLOCKED}/hook"


@schema.parametrize()
@FUZZ
def test_no_operation_answers_5xx(case: Any, live_server: support.ServerProcess) -> None:
    _keep_local(case)
    case.call_and_validate(base_url=live_server.base_url, checks=[not_a_server_error])


@schema.include(path="/api/upload").parametrize()
@FUZZ
def test_upload_options_on_a_valid_catalog_never_5xx(
    case: Any, live_server: support.ServerProcess
) -> None:
    """The success path of an upload, with every form field and header fuzzed."""
    if isinstance(case.body, dict):
        case.body["file"] = VALID_CSV
    _keep_local(case)
    case.call_and_validate(base_url=live_server.base_url, checks=[not_a_server_error])
