"""``sddsf encryption-policy show|reset``: the relay's published encryption policy,
what this device applies, and forgetting the merged values."""

from __future__ import annotations

from typing import Any

import click

from sddsf.cli.device_cmds import _emit, _run, _with_device
from sddsf.cli.output import JSON_HELP, Out
from sddsf.client.controller import (
    effective_encryption_policy,
    published_encryption_policy,
    reset_encryption_policy,
)
from sddsf.client.device import Device
from sddsf.errors import NotFoundError
from sddsf.protocol.encpolicy import MAX_KDF_M_KIB, MAX_KDF_P, MAX_KDF_T, MIN_EPOCH_AGE_S, clamp

__all__ = ["register"]

_LIMITS = {"max_epoch_age_s": MIN_EPOCH_AGE_S, "min_kdf_t": MAX_KDF_T,
           "min_kdf_m_kib": MAX_KDF_M_KIB, "min_kdf_p": MAX_KDF_P}


@click.group("encryption-policy")
def encryption_policy() -> None:
    """The relay's signed encryption policy (key rotation age, backup KDF minimums)."""


@encryption_policy.command("show")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """What the relay publishes now and what this device applies (the strictest
    values seen so far, clamped to the documented floors)."""
    async def go(d: Device) -> dict[str, Any]:
        try:
            published = await published_encryption_policy(d)
        except NotFoundError:
            return _info(d, None, ())
        return _info(d, published.to_json(), clamp(published)[1])

    info = _run(_with_device(ctx, go))

    def render(c: Out) -> None:
        pub, eff = info["published"], info["effective"]
        c.line("relay publishes: " + (_line(pub) if pub else "no encryption policy"))
        if info["clamped"]:
            c.line(f"  clamped by this device (out of the allowed range): "
                   f"{', '.join(info['clamped'])}")
        c.line("this device applies: " + (_line(eff) if eff else
                                          "its own defaults (no policy merged yet)"))
        c.line(f"limits on relay values: rotation at most every {MIN_EPOCH_AGE_S} s; "
               f"KDF minimums at most t={MAX_KDF_T}, m={MAX_KDF_M_KIB // 1024} MiB, "
               f"p={MAX_KDF_P}")
        c.line("`sddsf encryption-policy reset` forgets the applied values (the next sync "
               "takes the relay's current ones)")
    _emit(info, as_json, render)


def _info(d: Device, published: dict[str, object] | None,
          clamped: tuple[str, ...]) -> dict[str, Any]:
    effective = effective_encryption_policy(d)
    return {"relay": d.relay_url, "published": published, "clamped": list(clamped),
            "effective": effective.to_json() if effective is not None else None,
            "limits": dict(_LIMITS)}


def _line(p: dict[str, Any]) -> str:
    return (f"rotate keys older than {p['max_epoch_age_s']} s; backup KDF at least "
            f"t={p['min_kdf_t']}, m={int(p['min_kdf_m_kib']) // 1024} MiB, p={p['min_kdf_p']}; "
            f"suites {p['suites']}")


@encryption_policy.command("reset")
@click.pass_context
def reset(ctx: click.Context) -> None:
    """Forget the applied policy; the next sync fetches the relay's current one."""
    async def go(d: Device) -> bool:
        return reset_encryption_policy(d)

    if _run(_with_device(ctx, go)):
        click.echo("forgot the applied encryption policy; the next sync takes the relay's "
                   "current one (clamped)")
    else:
        click.echo("no encryption policy was applied on this device (nothing to forget)")


def register(cli: click.Group) -> None:
    """Attach ``encryption-policy``."""
    cli.add_command(encryption_policy)
