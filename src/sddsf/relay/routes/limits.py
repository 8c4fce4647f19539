"""``GET /v1/limits``: what one request to this relay may carry.

Clients size their uploads (ops per request, bytes per request, bytes per op)
from this answer, so a relay configured with lower limits than the defaults
never strands a device with a queue it cannot send (protocol §17.4.11).
"""

from __future__ import annotations

from typing import Final, get_args

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from sddsf.relay import models as m
from sddsf.relay.deps import Ctx, limit_ip

router = APIRouter()


def _field_chars() -> int:
    # The bound the request models put on every base64 body field.
    for field in get_args(m.B64)[1:]:
        for meta in getattr(field, "metadata", ()):
            bound = getattr(meta, "max_length", None)  # annotated_types.MaxLen
            if isinstance(bound, int):
                return bound
    raise RuntimeError("the B64 field has no length bound")  # pragma: no cover


B64_MAX_CHARS: Final = _field_chars()


class LimitsOut(BaseModel):
    """The relay's request limits."""

    max_request_bytes: int
    max_batch_ops: int
    max_page_ops: int
    max_op: int
    max_field_chars: int


@router.get("/v1/limits", response_model=LimitsOut, tags=["ops"],
            dependencies=[Depends(limit_ip)])
async def limits(ctx: Ctx) -> LimitsOut:
    """Request body bytes, ops per upload and per page, bytes per op envelope, and
    base64 characters per body field that this relay accepts."""
    s = ctx.settings
    return LimitsOut(max_request_bytes=s.max_request_bytes, max_batch_ops=s.max_batch_ops,
                     max_page_ops=s.max_page_ops, max_op=s.rules.limits.max_op,
                     max_field_chars=B64_MAX_CHARS)
