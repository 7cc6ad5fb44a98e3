"""Who is calling: the API key dependency every batch endpoint takes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from pixelbatch.auth.keys import ANONYMOUS, Principal, authenticate, touch_key
from pixelbatch.db.engine import reading, transaction
from pixelbatch.runtime import Runtime

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer pb_…`")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    header_key: Annotated[str | None, Depends(api_key_header)],
) -> Principal:
    """Anonymous at once when keys are off; otherwise the key is looked up on a worker
    thread. As a plain ``def`` this dependency sent every request to the thread pool and
    back, keys or not, and while a batch runs each hand-over waits for the GIL behind the
    download threads."""
    runtime: Runtime = request.app.state.runtime
    if not runtime.settings.auth_enabled:
        return ANONYMOUS
    presented = credentials.credentials if credentials is not None else header_key
    return await run_in_threadpool(_authenticate, runtime, presented)


def _authenticate(runtime: Runtime, presented: str | None) -> Principal:
    with reading(runtime.sessions) as session:
        who = authenticate(session, presented)
    if who.last_used_stale and who.key_id is not None:
        with transaction(runtime.sessions) as session:
            touch_key(session, who.key_id)
    return who


async def optional_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    header_key: Annotated[str | None, Depends(api_key_header)],
) -> Principal | None:
    """For file downloads, which a signed URL may authorise instead of a key."""
    if credentials is None and header_key is None:
        runtime: Runtime = request.app.state.runtime
        return None if runtime.settings.auth_enabled else ANONYMOUS
    return await principal(request, credentials, header_key)


CurrentPrincipal = Annotated[Principal, Depends(principal)]
OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]
