"""The Open Inference Protocol's root paths, ``/v2/...``, for every model at once.

OIP clients (KServe's, Seldon's, Triton's) address a server by host and port and a
model by name: ``POST /v2/models/NAME/infer``. Each model's application serves the
protocol under its own route (``/NAME/v2/models/NAME/...``); this small application,
routed at ``/v2``, forwards a root path to the model's router through Serve's handle
(``serve.get_app_handle(NAME)``), so the answer is the router's own, and adds the
server-wide endpoints (``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``).

It costs one hop more than the application's own route; clients that can take a base
URL (``http://HOST:8000/NAME``) skip it.
"""

from __future__ import annotations

import re
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from services.router.app import json_response
from services.router.schema import MAX_BODY_BYTES

__all__ = ["Gateway", "build_app"]

_MODEL = re.compile(r"^/models/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?P<tail>/ready|/infer)?$")


def _answer(doc: Any, status: int = 200) -> Response:
    return json_response(doc, status)


@serve.deployment
class Gateway:
    def __init__(self) -> None:
        self._handles: dict[str, Any] = {}
        self.app = serve.get_replica_context().app_name

    def _handle(self, name: str) -> Any:
        if name == self.app:
            raise LookupError(f"{name} is this gateway, not a model")
        if name not in self._handles:
            self._handles[name] = serve.get_app_handle(name)  # raises when there is none
        return self._handles[name]

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        prefix = request.scope.get("root_path", "").rstrip("/")
        path = path[len(prefix) :] if prefix and path.startswith(prefix) else path
        if path == "":
            return _answer({"name": "shipyard", "version": "1", "extensions": []})
        if path in ("/health/live", "/health/ready"):
            return _answer({"live" if path.endswith("live") else "ready": True})
        match = _MODEL.match(path)
        if match is None:
            return _answer({"error": f"no route /v2{path}; use /v2/models/NAME, "
                                     "/v2/models/NAME/ready or /v2/models/NAME/infer"}, 404)  # fmt: skip
        name = match["name"]
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return _answer({"error": f"the body has {int(length):,} bytes; at most "
                                     f"{MAX_BODY_BYTES:,}"}, 413)  # fmt: skip
        try:
            handle = self._handle(name)
        except Exception:  # noqa: BLE001 - Serve's own error when no such application runs
            return _answer({"error": f"no model {name!r} is deployed",
                            "hint": "see `shipyard serve status`"}, 404)  # fmt: skip
        body = await request.body() if request.method == "POST" else b""
        try:
            status, doc = await handle.respond.remote(
                request.method, f"/v2/models/{name}{match['tail'] or ''}", body,
                request.headers.get("content-type", ""))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the model's router is gone or overloaded
            self._handles.pop(name, None)
            return _answer({"error": f"model {name!r} did not answer: {type(exc).__name__}"}, 503)
        return _answer(doc, status)


def build_app(args: dict[str, Any]) -> Any:
    """The gateway application (it takes no args)."""
    return Gateway.options(name="gateway").bind()
