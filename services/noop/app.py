"""No-op Serve applications, the floor Shipyard's data plane is measured against.

``benchmarks/dataplane_bench.py`` deploys them next to the model applications, with
the deployment options Shipyard's router and predictor run with (read from
``shipyard.serving.app_config``), so the floor is Ray Serve as Shipyard's cluster runs
it, minus everything Shipyard does per request:

- ``build_one``: one deployment (``noop``) that reads the body and answers a tiny
  JSON document: the proxy and one replica hop.
- ``build_two``: an ingress (``ingress``) that reads the body, awaits a second
  deployment (``leaf``) through its ``DeploymentHandle`` and answers what it returned:
  the shape of Shipyard's router in front of a predictor.

- ``build_batched``: the same ingress in front of a leaf that answers through
  ``@serve.batch`` (no wait) and ``asyncio.to_thread``, as Shipyard's predictor does;
  ``{"thread": false}`` answers on the replica's loop instead: what the predictor's
  batching and thread hop cost, with no model and no features.

All are ``import_path`` targets (``services.noop.app:build_one``, ``...:build_two``,
``...:build_batched``); only ``build_batched`` takes an arg.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["BatchedLeaf", "Ingress", "Leaf", "Noop", "NoopArgs", "build_batched", "build_one",
           "build_two"]  # fmt: skip

ANSWER = b'{"ok":true}'


class NoopArgs(BaseModel):
    """The applications take no args; anything given is a mistake, said at deploy time."""

    model_config = ConfigDict(extra="forbid")


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


@serve.deployment
class Noop:
    async def __call__(self, request: Request) -> Response:
        await request.body()
        return _json(ANSWER)


@serve.deployment
class Leaf:
    async def answer(self, body: bytes) -> bytes:
        return ANSWER


@serve.deployment
class BatchedLeaf:
    def __init__(self, thread: bool = True) -> None:
        self.thread = thread

    async def answer(self, body: bytes) -> bytes:
        return await self.batch(body)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def batch(self, bodies: list[bytes]) -> list[bytes]:
        if self.thread:
            return await asyncio.to_thread(_answers, len(bodies))
        return _answers(len(bodies))


def _answers(n: int) -> list[bytes]:
    return [ANSWER] * n


@serve.deployment
class Ingress:
    def __init__(self, leaf: DeploymentHandle) -> None:
        self.leaf = leaf

    async def __call__(self, request: Request) -> Response:
        body = await request.body()
        return _json(await self.leaf.answer.remote(body))


def build_one(args: dict[str, Any]) -> Any:
    """One deployment answering every request."""
    NoopArgs.model_validate(args)
    return Noop.options(name="noop").bind()


def build_two(args: dict[str, Any]) -> Any:
    """An ingress awaiting a second deployment, then answering."""
    NoopArgs.model_validate(args)
    return Ingress.options(name="ingress").bind(Leaf.options(name="leaf").bind())


class BatchedArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thread: bool = True


def build_batched(args: dict[str, Any]) -> Any:
    """The ingress in front of a leaf that batches and answers in a thread (or not)."""
    parsed = BatchedArgs.model_validate(args)
    leaf = BatchedLeaf.options(name="leaf").bind(thread=parsed.thread)
    return Ingress.options(name="ingress").bind(leaf)
