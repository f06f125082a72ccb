"""The server's edge, as one ASGI middleware: the API key on every ``/v1`` route, and one
structured (JSON) access-log line per request."""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

access_log = logging.getLogger("steer.serve.access")


class Guard:
    """Wraps the app: refuses ``/v1`` requests without ``Authorization: Bearer <key>`` (when
    ``api_key()`` gives a key) with 401, and logs each request when it ends."""

    def __init__(self, app: Any, *, api_key: Callable[[], str | None]):
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope.setdefault("state", {})
        status = {"code": 0}

        async def send_logged(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if scope["path"].startswith("/v1") and not self._authorised(scope):
                await _unauthorised(send_logged)
            else:
                await self.app(scope, receive, send_logged)
        finally:
            self._log(scope, status["code"], time.perf_counter() - start)

    def _authorised(self, scope) -> bool:
        key = self.api_key()
        if key is None:
            return True
        given = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = given.partition(" ")
        # compare_digest: the time taken must not tell how much of a guessed key was right
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), key.encode()
        )

    def _log(self, scope, status: int, seconds: float) -> None:
        client = scope.get("client")
        record = {
            "time": round(time.time(), 3),
            "client": f"{client[0]}:{client[1]}" if client else None,
            "method": scope.get("method"),
            "path": scope.get("path"),
            "status": status,
            "ms": round(seconds * 1000, 1),
            **scope["state"].get("access", {}),
        }
        access_log.info(json.dumps(record))


async def _unauthorised(send) -> None:
    body = json.dumps(
        {
            "error": {
                "message": "missing or wrong API key (send Authorization: Bearer <key>)",
                "type": "authentication_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b"Bearer"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
