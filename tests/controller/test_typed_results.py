"""The relay client returns typed results (frozen dataclasses, bytes decoded, ints
as ints) for spaces, reports, trust and alerts, parsed in one place: a malformed
answer is a DecodeError ``malformed``, never a KeyError or TypeError.

The typed answers come from a real relay app (real SQLite, real signatures,
injected clock). A malformed answer is a fault a real relay cannot produce: a
transport in front of the app replaces the answer of one endpoint, every other
request (the session handshake included) reaches the relay."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from ctlkit import GOOD, HOUR_MS, Account, bad_signature, open_relay
from relaykit import T0, Clock

from sddsf.client.relay_client import RelayClient
from sddsf.client.results import Alert, DevicePosture, DeviceTrust, ReportReceipt, TrustFactor
from sddsf.client.transport.base import Proof, SpaceInfo
from sddsf.errors import Code, DecodeError
from sddsf.wire import b64


@pytest.fixture
async def account(tmp_path: Path) -> AsyncIterator[Account]:
    clock = Clock(T0 + 12 * HOUR_MS)
    app, storage = await open_relay(tmp_path, clock)
    acct = await Account(app, storage, clock).start(2)
    yield acct
    await acct.close()
    await storage.close()


def _frozen(value: object) -> None:
    assert dataclasses.is_dataclass(value) and not isinstance(value, type)
    assert type(value).__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert not hasattr(value, "__dict__")  # slotted


async def test_space_answers_are_space_infos(account: Account) -> None:
    a = account
    created = a.created
    assert isinstance(created, SpaceInfo)
    assert (created.space_id, created.size, created.epoch) == (a.world.space, 0, 0)
    assert isinstance(created.root, bytes) and len(created.root) == 32
    assert await a.client(0).list_spaces() == [created]
    nxt = await a.client(0).put_key_package(a.world.space, a.world.key_package())
    assert isinstance(nxt, SpaceInfo)
    assert (nxt.space_id, nxt.epoch) == (a.world.space, 1)


async def test_a_report_receipt_is_typed(account: Account) -> None:
    receipt = await account.posture(0)
    assert isinstance(receipt, ReportReceipt)
    _frozen(receipt)
    assert (receipt.kind, receipt.stored) == ("posture", True)
    assert isinstance(receipt.audit_seq, int) and isinstance(receipt.entry, bytes)
    assert isinstance(receipt.proof, Proof) and isinstance(receipt.proof.tree_head, bytes)
    assert all(isinstance(h, bytes) for h in receipt.proof.hashes)
    account.clock.now += 1  # a new report (a copy would be a replay)...
    again = await account.posture(0)  # ...of the same posture: stored, not logged
    assert (again.stored, again.audit_seq, again.entry, again.proof) == (True, None, None, None)


async def test_device_trust_is_typed(account: Account) -> None:
    a = account
    await a.posture(0)
    trust = await a.client(0).device_trust()
    assert [t.device_id for t in trust] == [a.device_id(0), a.device_id(1)]
    me = trust[0]
    assert isinstance(me, DeviceTrust)
    _frozen(me)
    assert (me.name, me.status, me.access, me.quarantined) == ("laptop", "active", "full", False)
    assert isinstance(me.score, int) and isinstance(me.factors, tuple)
    assert all(isinstance(f, TrustFactor) and isinstance(f.points, int) for f in me.factors)
    assert isinstance(me.posture, DevicePosture)
    assert (me.posture.os, me.posture.package_hash) == (GOOD.os, GOOD.package_hash)
    assert me.posture.ts_ms == a.clock.now
    assert trust[1].posture is None  # dev1 never reported


async def test_alerts_and_acknowledgements_are_typed(account: Account) -> None:
    a = account
    await a.push(1)
    bad = [bad_signature(a.world.op(1, ts=a.clock.now, record=False).raw) for _ in range(5)]
    await a.client(1).upload(a.world.space, bad, proofs=False)
    [alert] = [x for x in await a.client(0).alerts() if x.rule == "sig_failure_burst"]
    assert isinstance(alert, Alert)
    _frozen(alert)
    assert (alert.device_id, alert.severity, alert.quarantine) == (a.device_id(1), "high", True)
    assert len(alert.alert_id) == 16 and isinstance(alert.created_ms, int)
    assert isinstance(alert.quarantine_until_ms, int)
    assert (alert.acked_ms, alert.acked_by) == (None, None)
    acked = await a.client(0).ack_alert(alert.alert_id)
    assert isinstance(acked, Alert)
    assert (acked.alert_id, acked.acked_by) == (alert.alert_id, a.device_id(0))
    assert isinstance(acked.acked_ms, int)
    [again] = await a.client(0).ack_alerts_as_account(a.world.account, [alert.alert_id])
    assert isinstance(again, Alert) and again.alert_id == alert.alert_id
    everything = await a.client(0).alerts(include_acked=True)
    assert alert.alert_id in {x.alert_id for x in everything}
    assert alert.alert_id not in {x.alert_id for x in await a.client(0).alerts()}


# ------------------------------------------------------------ malformed answers


class _OneAnswerReplaced(httpx.AsyncBaseTransport):
    """The relay app, except that ``method path`` is answered with ``body``."""

    def __init__(self, app: object, method: str, path: str, body: object) -> None:
        self.inner = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        self.method, self.path, self.body = method, path, body

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == self.method and request.url.path == self.path:
            return httpx.Response(200, json=self.body)
        return await self.inner.handle_async_request(request)


_B = b64(bytes(16))
_SPACE = {"space_id": _B, "size": 0, "root": b64(bytes(32)), "epoch": 0}
_ALERT = {"alert_id": _B, "device": "", "rule": "fork", "severity": "high", "message": "m",
          "quarantine": False, "quarantine_until_ms": None, "created_ms": 1, "acked_ms": None,
          "acked_by": None}
_FACTOR = {"name": "forks", "points": -10, "detail": "d"}
_TRUST = {"device_id": _B, "name": "laptop", "status": "active", "score": 90,
          "access": "full", "quarantined": False, "factors": [_FACTOR], "posture": None}


def _without(d: dict[str, object], key: str) -> dict[str, object]:
    return {k: v for k, v in d.items() if k != key}


Call = Callable[[RelayClient, Account], Awaitable[object]]


def _submit(client: RelayClient, a: Account) -> Awaitable[object]:
    return client.submit_report(a.aid, a.posture_report(0))


# (what, method, path (with {space} / {account} / {alert}), answer, the call)
MALFORMED: list[tuple[str, str, str, object, Call]] = [
    ("space without root", "POST", "/v1/spaces", _without(_SPACE, "root"),
     lambda c, a: c.create_space(a.world.space, a.world.key_package())),
    ("space size as text", "POST", "/v1/spaces", {**_SPACE, "size": "0"},
     lambda c, a: c.create_space(a.world.space, a.world.key_package())),
    ("spaces not a list", "GET", "/v1/spaces", {"spaces": "none"},
     lambda c, a: c.list_spaces()),
    ("space epoch a bool", "GET", "/v1/spaces", {"spaces": [{**_SPACE, "epoch": True}]},
     lambda c, a: c.list_spaces()),
    ("no spaces key", "GET", "/v1/spaces", {}, lambda c, a: c.list_spaces()),
    ("answer not an object", "GET", "/v1/spaces", [], lambda c, a: c.list_spaces()),
    ("key package space id not base64", "POST", "/v1/spaces/{space}/keys",
     {**_SPACE, "space_id": "!!"},
     lambda c, a: c.put_key_package(a.world.space, a.world.key_package())),
    ("receipt without stored", "POST", "/v1/accounts/{account}/reports", {"kind": "posture"},
     _submit),
    ("receipt seq as text", "POST", "/v1/accounts/{account}/reports",
     {"kind": "posture", "stored": True, "audit_seq": "3"}, _submit),
    ("receipt proof not an object", "POST", "/v1/accounts/{account}/reports",
     {"kind": "posture", "stored": True, "audit_seq": 3, "entry": _B, "proof": [1]},
     _submit),
    ("trust score as text", "GET", "/v1/controller/devices",
     {"devices": [{**_TRUST, "score": "90"}]}, lambda c, a: c.device_trust()),
    ("factor without points", "GET", "/v1/controller/devices",
     {"devices": [{**_TRUST, "factors": [_without(_FACTOR, "points")]}]},
     lambda c, a: c.device_trust()),
    ("posture without ts", "GET", "/v1/controller/devices",
     {"devices": [{**_TRUST, "posture": {"os": "Linux"}}]}, lambda c, a: c.device_trust()),
    ("alert without created_ms", "GET", "/v1/controller/alerts",
     {"alerts": [_without(_ALERT, "created_ms")]}, lambda c, a: c.alerts()),
    ("alert id a number", "GET", "/v1/controller/alerts",
     {"alerts": [{**_ALERT, "alert_id": 5}]}, lambda c, a: c.alerts()),
    ("ack answer empty", "POST", "/v1/controller/alerts/{alert}/ack", {},
     lambda c, a: c.ack_alert(bytes(16))),
    ("ack quarantine as text", "POST", "/v1/controller/alerts/{alert}/ack",
     {**_ALERT, "quarantine": "false"}, lambda c, a: c.ack_alert(bytes(16))),
    ("account ack alerts not a list", "POST", "/v1/accounts/{account}/alerts/ack",
     {"alerts": {"a": 1}}, lambda c, a: c.ack_alerts_as_account(a.world.account, [])),
]


@pytest.mark.parametrize(("method", "path", "answer", "call"),
                         [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
async def test_a_malformed_answer_is_a_decode_error(account: Account, method: str, path: str,
                                                    answer: object, call: Call) -> None:
    a = account
    path = path.format(space=b64(a.world.space), account=b64(a.aid), alert=b64(bytes(16)))
    client = RelayClient("http://relay.test", device=a.world.devices[0], account_id=a.aid,
                         transport=_OneAnswerReplaced(a.app, method, path, answer),
                         clock=a.clock)
    a.clients.append(client)  # closed with the others
    with pytest.raises(DecodeError) as refused:
        await call(client, a)
    assert refused.value.code is Code.MALFORMED
