"""Typed async HTTP client of the relay API (the transport adapter of the client).

It authenticates a device (challenge-response), signs every mutating request
with a fresh nonce and timestamp, and turns every ``{code, message}`` error body
back into the typed :mod:`sddsf.errors` exception. httpx exceptions are
translated here, once: a connection failure is :class:`UnavailableError`.

It trusts nothing it receives: callers verify registries, key packages, tree
heads and proofs with :mod:`sddsf.protocol`.

Size: one short typed method per relay endpoint (sessions, registry, key
packages, ops, proofs, snapshots, pairing, backups, controller), sharing
one signing and error-translation path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import httpx

from sddsf.client.results import Alert, DeviceTrust, ReportReceipt, parse_list, parse_space
from sddsf.client.retry import RetryPolicy, Sleep, parse_retry_after
from sddsf.client.transport.base import (
    MembershipAppended,
    MembershipLog,
    PulledOp,
    RelayLimits,
    SpaceInfo,
    UploadResult,
)
from sddsf.crypto import random_bytes
from sddsf.errors import (
    AuthenticationError,
    Code,
    DecodeError,
    NotFoundError,
    RateLimitedError,
    SddsfError,
    UnavailableError,
    UsageError,
    error_from_wire,
)
from sddsf.protocol import auth
from sddsf.protocol.backup import Backup, KdfParams
from sddsf.protocol.identity import AccountKeys, DeviceKeys
from sddsf.protocol.pairing import PAIRING_VERSION
from sddsf.wire import b64 as _b64
from sddsf.wire import unb64 as _unb64

__all__ = ["PulledOp", "RelayClient", "RelayLimits", "ReportSource", "UploadResult"]
# PulledOp, RelayLimits and UploadResult live in sddsf.client.transport.base (re-exported).

log = logging.getLogger("sddsf.client")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@functools.cache
def _trust_store() -> ssl.SSLContext:
    """The TLS context every relay client of this process verifies relays with.

    httpx's own default (its CA bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``),
    built once: loading the bundle costs about 20 ms, which each new client
    used to pay (most of a device's open). A context is safe to share: it holds
    trust settings, and every connection still checks the relay's certificate
    and host name against them.
    """
    return httpx.create_ssl_context()


def _base_url(url: str) -> httpx.URL:
    """``url`` as an httpx client keeps its base URL: with a path that ends in
    "/", so that request paths join under it."""
    parsed = httpx.URL(url)
    if parsed.raw_path.endswith(b"/"):
        return parsed
    return parsed.copy_with(raw_path=parsed.raw_path + b"/")


class _ConnectionDropped(UnavailableError):
    """The connection broke before a response arrived (retried once)."""


class ReportSource(Protocol):
    """Supplies this device's signed posture report at every session opening and
    checks the relay's receipt (:mod:`sddsf.client.controller`)."""

    def posture_report(self) -> bytes:
        """A fresh signed posture report."""
        ...

    def accepted(self, report: bytes, response: ReportReceipt) -> None:
        """The relay's answer to ``report`` (raises if its proof does not verify)."""
        ...


def _members(items: list[dict[str, Any]]) -> dict[bytes, str]:
    return {_unb64(i["account_id"]): str(i["role"]) for i in items}


class RelayClient:
    """A device's connection to one relay."""

    def __init__(self, base_url: str, *, device: DeviceKeys | None = None,
                 account_id: bytes | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], int] = _now_ms, timeout_s: float = 30.0,
                 retry: RetryPolicy | None = None) -> None:
        self.device = device
        self.account_id = account_id
        self._clock = clock
        self._url = _base_url(base_url)  # a malformed URL fails here, at once
        self._transport, self._timeout_s = transport, timeout_s
        self._client: httpx.AsyncClient | None = None  # made at the first request
        self._closed = False
        self._token: bytes | None = None
        self._token_expires_ms = 0
        self.relay_id: bytes | None = None
        #: The optional features the relay listed at the last session opening
        #: (empty for a relay that predates the list).
        self.features: frozenset[str] = frozenset()
        #: The signed encryption policy of a first-sync bundle, answering
        #: :meth:`encryption_policy` while the bundle is in use (None: ask).
        self.held_policy: bytes | None = None
        #: Sends a signed posture report before each session opening (the
        #: controller scores the device with it); None sends none.
        self.reporter: ReportSource | None = None
        #: Why the last posture report was not accepted (None: it was).
        self.report_error: SddsfError | None = None
        #: When to try a request again (429 with Retry-After, 503, connection errors).
        self.retry = retry or RetryPolicy()
        #: How the retry waits (tests replace it to observe the waits).
        self.sleep: Sleep = asyncio.sleep
        self._limits: RelayLimits | None = None
        #: The session opening in flight, shared by concurrent callers.
        self._opening: asyncio.Future[bytes] | None = None
        self._waiting = 0  # callers awaiting _opening

    async def aclose(self) -> None:
        """Close the HTTP connection pool (and stop a session opening in flight)."""
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.cancel()
        self._closed = True
        if self._client is not None:
            await self._client.aclose()

    @property
    def _http(self) -> httpx.AsyncClient:
        """The HTTP client, made at the first request.

        A device that works offline (the CLI's ``get``, ``ls`` and ``put``; an
        application between syncs) never loads httpx's connection code or the
        TLS trust store: about 100 ms for a process's first client.

        Raises:
            UsageError: the client was closed.
        """
        if self._closed:
            raise UsageError("this relay client is closed; open the device again")
        if self._client is None:
            # A given transport (in-process tests, the demo) brings its own TLS, if any.
            verify: ssl.SSLContext | bool = True if self._transport is not None \
                else _trust_store()
            self._client = httpx.AsyncClient(base_url=self._url, transport=self._transport,
                                             timeout=self._timeout_s, verify=verify)
        return self._client

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------- plumbing
    async def _send(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                    params: dict[str, Any] | None = None, signed: bool = False,
                    authed: bool = False, headers: dict[str, str] | None = None,
                    idempotent: bool = True, key: DeviceKeys | AccountKeys | None = None) -> Any:
        # Every relay write is idempotent (17.2) except the few callers that say
        # otherwise; each try is signed again with a fresh nonce.
        async def attempt() -> Any:
            return await self._send_retrying_session(method, path, body=body, params=params,
                                                     signed=signed, authed=authed,
                                                     headers=headers, key=key)
        if authed or signed:
            # The session opening retries its own requests; opened before this
            # request's tries, a relay that is down gets the policy's tries, not
            # tries of tries (4 x 4 connections and ~9 s of waiting).
            await self._session_token()
        return await self.retry.run(attempt, idempotent=idempotent, what=f"{method} {path}",
                                    sleep=self.sleep)

    async def _send_retrying_session(self, method: str, path: str, *,
                                     body: dict[str, Any] | None,
                                     params: dict[str, Any] | None, signed: bool,
                                     authed: bool, headers: dict[str, str] | None,
                                     key: DeviceKeys | AccountKeys | None) -> Any:
        used = self._token
        try:
            try:
                return await self._send_once(method, path, body=body, params=params,
                                             signed=signed, authed=authed, extra=headers,
                                             key=key)
            except _ConnectionDropped:
                # A pooled keep-alive connection the relay was closing as we
                # sent: retry once on a new one. Every request is idempotent
                # (ops and entries by content, signed ones get a fresh nonce).
                return await self._send_once(method, path, body=body, params=params,
                                             signed=signed, authed=authed, extra=headers,
                                             key=key)
        except AuthenticationError as exc:
            # The relay forgot our session (restart, or another node): open a
            # new one and retry once. A signed request is re-signed with a fresh
            # nonce, so the retry is not a replay.
            if exc.code is not Code.UNAUTHENTICATED or not (authed or signed):
                raise
            if used is None or self._token == used:  # else a concurrent request reopened it
                self.forget_session()
            return await self._send_once(method, path, body=body, params=params,
                                         signed=signed, authed=authed, extra=headers, key=key)

    async def _send_once(self, method: str, path: str, *, body: dict[str, Any] | None,
                         params: dict[str, Any] | None, signed: bool, authed: bool,
                         extra: dict[str, str] | None = None,
                         key: DeviceKeys | AccountKeys | None = None) -> Any:
        content = json.dumps(body).encode() if body is not None else b""
        headers = {"content-type": "application/json"} if body is not None else {}
        headers.update(extra or {})
        if key is not None:  # no session: signed by a key the account's registry knows
            headers.update(self._key_headers(method, path, params, content, key))
        if authed or signed:
            token = await self._session_token()
            headers["authorization"] = f"Bearer {_b64(token)}"
            if signed and self.device is not None:  # _session_token ensured a device
                request = self._http.build_request(method, path, params=params)
                target = request.url.raw_path.decode("ascii")
                nonce, ts = random_bytes(auth.NONCE_SIZE), self._clock()
                sig = self.device.sign(auth.request_message(
                    method, target, content, nonce, ts, auth.token_hash(token)))
                headers.update({"x-sddsf-nonce": _b64(nonce), "x-sddsf-timestamp": str(ts),
                                "x-sddsf-signature": _b64(sig)})
        try:
            response = await self._http.request(method, path, params=params, content=content,
                                                headers=headers)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            raise _ConnectionDropped(f"the relay at {self._url} dropped the "
                                     "connection before answering; try again") from None
        except httpx.HTTPError as exc:
            raise UnavailableError(f"cannot reach the relay at {self._url} "
                                   f"({_why_unreachable(exc)})") from None
        if response.status_code >= 400:
            try:
                err = response.json()
                error = error_from_wire(str(err["code"]), str(err["message"]))
            except (ValueError, KeyError, TypeError):
                raise UnavailableError(f"relay answered HTTP {response.status_code} without "
                                       "an error body") from None
            if isinstance(error, RateLimitedError):
                wait = parse_retry_after(response.headers.get("retry-after"))
                if wait is not None:
                    error.retry_after_s = wait
            raise error
        try:
            return response.json()
        except ValueError:
            raise DecodeError("relay sent a response that is not JSON") from None

    def _key_headers(self, method: str, path: str, params: dict[str, Any] | None,
                     content: bytes, key: DeviceKeys | AccountKeys) -> dict[str, str]:
        key_id = key.device_id if isinstance(key, DeviceKeys) else key.account_id
        target = self._http.build_request(method, path, params=params).url.raw_path.decode()
        nonce, ts = random_bytes(auth.NONCE_SIZE), self._clock()
        sig = key.sign(auth.key_request_message(method, target, content, nonce, ts, key_id))
        return {"x-sddsf-key-id": _b64(key_id), "x-sddsf-nonce": _b64(nonce),
                "x-sddsf-timestamp": str(ts), "x-sddsf-signature": _b64(sig)}

    @property
    def base_url(self) -> str:
        """The relay's URL."""
        return str(self._url)

    @property
    def session_expires_ms(self) -> int:
        """When the current session ends (0: none open)."""
        return self._token_expires_ms if self._token is not None else 0

    async def session_token(self) -> bytes:
        """The current session's token, opening a session first if needed.

        Concurrent callers share one opening (single flight): the runner's sync
        and live loops both need a session again after a relay restart, and two
        handshakes racing for one device would waste a posture report each and
        may refuse each other's challenge.
        """
        return await self._session_token()

    async def _session_token(self) -> bytes:
        if self._token is not None and self._clock() < self._token_expires_ms - 30_000:
            return self._token
        if self.device is None or self.account_id is None:
            raise UnavailableError("this client has no device identity to authenticate with")
        opening = self._opening
        if opening is None:
            opening = self._opening = asyncio.ensure_future(self._handshake())
            opening.add_done_callback(self._opened)
        # shield: a caller that is cancelled does not cancel the others' opening;
        # the last one that stops waiting cancels it (nothing is left running).
        self._waiting += 1
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            if self._waiting == 1:
                opening.cancel()
                # Forgotten at once, not when its done-callback runs: a request
                # made right after this opens a new session instead of awaiting
                # the cancelled one.
                if self._opening is opening:
                    self._opening = None
            raise
        finally:
            self._waiting -= 1

    def _opened(self, opening: asyncio.Future[bytes]) -> None:
        if self._opening is opening:
            self._opening = None
        if not opening.cancelled():
            opening.exception()  # retrieved: awaited by every caller that waits

    async def _handshake(self) -> bytes:
        assert self.device is not None and self.account_id is not None  # noqa: S101
        device, account_id = self.device, self.account_id
        # The posture report and the challenge do not depend on each other (a
        # challenge is stateless): asked at once, an opening is two round trips
        # instead of three. The session request waits for the report's answer,
        # so the relay scores the device with the fresh posture, as before.
        report = asyncio.ensure_future(self._report_posture())
        try:
            ch = await self._challenge(device, account_id)
        except BaseException:
            report.cancel()
            with contextlib.suppress(BaseException):  # the challenge's error is the one to see
                await report
            raise
        await report
        try:
            s = await self._session(device, account_id, ch)
        except AuthenticationError as exc:
            # The challenge was refused (it expired on the way, or a node with a
            # skewed clock answered): once more with a new one.
            if exc.code is not Code.UNAUTHENTICATED:
                raise
            s = await self._session(device, account_id,
                                    await self._challenge(device, account_id))
        token = _unb64(s["token"])
        self._token, self._token_expires_ms = token, int(s["expires_ms"])
        listed = s.get("features")
        self.features = frozenset(f for f in listed if isinstance(f, str)) \
            if isinstance(listed, list) else frozenset()
        return token

    @staticmethod
    def _ids(device: DeviceKeys, account_id: bytes) -> dict[str, str]:
        return {"account_id": _b64(account_id), "device_id": _b64(device.device_id)}

    async def _challenge(self, device: DeviceKeys, account_id: bytes) -> bytes:
        ch = await self._send("POST", "/v1/auth/challenge", body=self._ids(device, account_id))
        challenge, self.relay_id = _unb64(ch["challenge"]), _unb64(ch["relay_id"])
        return challenge

    async def _session(self, device: DeviceKeys, account_id: bytes,
                       challenge: bytes) -> dict[str, Any]:
        assert self.relay_id is not None  # noqa: S101 - set with the challenge
        sig = device.sign(auth.session_message(self.relay_id, account_id, device.device_id,
                                               challenge))
        s: dict[str, Any] = await self._send("POST", "/v1/auth/session", body={
            **self._ids(device, account_id), "challenge": _b64(challenge),
            "signature": _b64(sig)})
        return s

    async def _report_posture(self) -> None:
        # Before the session: reports are self-authenticating, and the relay
        # scores the device (and may refuse the session) with the fresh one.
        if self.reporter is None or self.account_id is None:
            return
        report = self.reporter.posture_report()
        try:
            response = await self.submit_report(self.account_id, report)
        except UnavailableError:
            raise
        except SddsfError as exc:  # e.g. an older relay without the endpoint
            self.report_error = exc
            log.warning("the relay did not accept this device's posture: %s", exc)
            return
        self.report_error = None
        self.reporter.accepted(report, response)

    def forget_session(self) -> None:
        """Drop the cached session (the next call opens a new one)."""
        self._token = None

    async def limits(self) -> RelayLimits:
        """The relay's request limits (``GET /v1/limits``), asked once per client; a
        relay without the endpoint has the default limits."""
        if self._limits is None:
            try:
                r = await self._send("GET", "/v1/limits")
                self._limits = RelayLimits(
                    max_request_bytes=int(r["max_request_bytes"]),
                    max_batch_ops=int(r["max_batch_ops"]), max_page_ops=int(r["max_page_ops"]),
                    max_op=int(r["max_op"]), max_field_chars=int(r["max_field_chars"]))
            except NotFoundError:
                self._limits = RelayLimits()
            except (KeyError, TypeError, ValueError):
                raise DecodeError("the relay sent malformed limits") from None
        return self._limits

    # -------------------------------------------------------------- registry
    async def create_account(self, genesis: bytes) -> bytes:
        """Upload a genesis entry; returns the account id (idempotent)."""
        r = await self._send("POST", "/v1/accounts", body={"genesis": _b64(genesis)})
        return _unb64(r["account_id"])

    async def registry(self, account_id: bytes, since: int = 0, *,
                       signer: DeviceKeys | AccountKeys | None = None) -> list[bytes]:
        """Registry entries from ``since`` (verify them!). The request is signed by
        ``signer``, by default this client's device (no session needed, so a device
        awaiting approval can read it); a device recovering with the account secret
        passes the account keys."""
        key = signer or (self.device if account_id == self.account_id else None)
        # Another account's registry: with this device's session, as a member of
        # a space shared with it (protocol.md 17.3.4, 21.7).
        r = await self._send("GET", f"/v1/accounts/{_quote(account_id)}/registry",
                             params={"since": since}, key=key, authed=key is None)
        return [_unb64(e) for e in r["entries"]]

    async def append_registry(self, account_id: bytes, entry: bytes) -> int:
        """Append a signed entry; returns the next seq."""
        r = await self._send("POST", f"/v1/accounts/{_quote(account_id)}/registry",
                             body={"entry": _b64(entry)})
        return int(r["next_seq"])

    async def bootstrap(self, nonce: bytes) -> bytes:
        """The signed first-sync bundle (``GET /v1/bootstrap``, protocol 17.9;
        verify it, then every component)."""
        r = await self._send("GET", "/v1/bootstrap", authed=True, params={"nonce": _b64(nonce)})
        return _unb64(r["bundle"])

    # ---------------------------------------------------------------- spaces
    async def create_space(self, space_id: bytes, key_package: bytes) -> SpaceInfo:
        """Create a space with its epoch-0 key package; the space's log state
        (DecodeError ``malformed`` if the answer is not one)."""
        r = await self._send("POST", "/v1/spaces", signed=True,
                             body={"space_id": _b64(space_id), "key_package": _b64(key_package)})
        return parse_space(r)

    async def list_spaces(self) -> list[SpaceInfo]:
        """The account's spaces (DecodeError ``malformed`` if the answer is not a list
        of them)."""
        r = await self._send("GET", "/v1/spaces", authed=True)
        return parse_list(r, "spaces", parse_space)

    async def put_key_package(self, space_id: bytes, key_package: bytes) -> SpaceInfo:
        """Open the next epoch; the space's log state."""
        r = await self._send("POST", f"/v1/spaces/{_quote(space_id)}/keys", signed=True,
                             body={"key_package": _b64(key_package)})
        return parse_space(r)

    async def key_packages(self, space_id: bytes, since_epoch: int = 0) -> list[bytes]:
        """Key packages from ``since_epoch``."""
        r = await self._send("GET", f"/v1/spaces/{_quote(space_id)}/keys", authed=True,
                             params={"since_epoch": since_epoch})
        return [_unb64(p) for p in r["key_packages"]]

    async def append_membership(self, space_id: bytes, entry: bytes) -> MembershipAppended:
        """Append a signed membership entry to the space log (protocol.md 21.7)."""
        r = await self._send("POST", f"/v1/spaces/{_quote(space_id)}/members", signed=True,
                             body={"entry": _b64(entry)})
        return MembershipAppended(r["status"], r["offset"], _members(r["members"]),
                                  _unb64(r["tree_head"]["tree_head"]))

    async def membership(self, space_id: bytes) -> MembershipLog:
        """Every membership entry of the space with its offset, the relay's member
        set, the owner account and the current tree head (verify before use)."""
        r = await self._send("GET", f"/v1/spaces/{_quote(space_id)}/members", authed=True)
        return MembershipLog([(e["offset"], _unb64(e["entry"])) for e in r["entries"]],
                             _members(r["members"]), _unb64(r["owner"]),
                             _unb64(r["tree_head"]["tree_head"]))

    async def upload(self, space_id: bytes, envelopes: Sequence[bytes], *,
                     proofs: bool = True) -> tuple[list[UploadResult], bytes]:
        """Upload a batch; returns per-op results and the signed tree head."""
        r = await self._send("POST", f"/v1/spaces/{_quote(space_id)}/ops", signed=True,
                             body={"ops": [_b64(e) for e in envelopes], "proofs": proofs})
        results = [UploadResult(
            x["status"], x.get("offset"), _unb64(x["op_id"]) if x.get("op_id") else None,
            [_unb64(p) for p in x["proof"]] if x.get("proof") is not None else None,
            x.get("code"), x.get("message")) for x in r["results"]]
        return results, _unb64(r["tree_head"]["tree_head"])

    async def pull(self, space_id: bytes, after: int = -1, limit: int = 500, *,
                   omit_own: bool = False) -> tuple[list[PulledOp], bytes]:
        """One page of ops after ``after`` and the current signed tree head
        (``omit_own``: this device's own ops without their envelope)."""
        r = await self._send("GET", f"/v1/spaces/{_quote(space_id)}/ops", authed=True,
                             params={"after": after, "limit": limit,
                                     "omit_own": "true" if omit_own else "false"})
        ops = [PulledOp(o["offset"], _unb64(o["op_id"]), _unb64(o["leaf_hash"]),
                        _unb64(o["envelope"]) if o["envelope"] is not None else None,
                        o.get("own") is True)
               for o in r["ops"]]
        return ops, _unb64(r["tree_head"]["tree_head"])

    async def tree_head(self, space_id: bytes) -> bytes:
        """The current signed tree head."""
        r = await self._send("GET", f"/v1/spaces/{_quote(space_id)}/tree-head", authed=True)
        return _unb64(r["tree_head"])

    async def inclusion_proof(self, space_id: bytes, index: int,
                              size: int | None = None) -> tuple[list[bytes], bytes]:
        """Inclusion proof and the signed head it is relative to."""
        params: dict[str, Any] = {"index": index}
        if size is not None:
            params["size"] = size
        r = await self._send("GET", f"/v1/spaces/{_quote(space_id)}/proofs/inclusion",
                             authed=True, params=params)
        return [_unb64(p) for p in r["proof"]], _unb64(r["tree_head"]["tree_head"])

    async def consistency_proof(self, space_id: bytes, first: int,
                                second: int | None = None) -> tuple[list[bytes], bytes]:
        """Consistency proof and the signed head of ``second``."""
        params: dict[str, Any] = {"first": first}
        if second is not None:
            params["second"] = second
        r = await self._send("GET", f"/v1/spaces/{_quote(space_id)}/proofs/consistency",
                             authed=True, params=params)
        return [_unb64(p) for p in r["proof"]], _unb64(r["tree_head"]["tree_head"])

    async def acknowledge(self, space_id: bytes, offset: int) -> tuple[int, int]:
        """Tell the relay this device applied every op up to ``offset``.

        Returns ``(stored ack, offset below which envelopes are pruned)``.
        """
        r = await self._send("POST", f"/v1/spaces/{_quote(space_id)}/ack", signed=True,
                             body={"offset": offset})
        return int(r["acked"]), int(r["pruned_before"])

    async def put_snapshot(self, space_id: bytes, doc_id: bytes, covers_offset: int,
                           blob: bytes) -> int:
        """Store a signed encrypted snapshot of a doc; returns the stored cover offset."""
        r = await self._send("PUT", f"/v1/spaces/{_quote(space_id)}/docs/{_quote(doc_id)}"
                             "/snapshot", signed=True,
                             body={"covers_offset": covers_offset, "blob": _b64(blob)})
        return int(r["covers_offset"])

    async def get_snapshot(self, space_id: bytes, doc_id: bytes) -> tuple[int, bytes]:
        """The doc's snapshot ``(covers_offset, blob)``."""
        r = await self._send("GET", f"/v1/spaces/{_quote(space_id)}/docs/{_quote(doc_id)}"
                             "/snapshot", authed=True)
        return int(r["covers_offset"]), _unb64(r["blob"])

    async def put_snapshot_chunk(self, space_id: bytes, chunk_id: bytes, blob: bytes) -> None:
        """Store one chunk of a chunked snapshot (upload every chunk, then the manifest)."""
        await self._send("PUT", f"/v1/spaces/{_quote(space_id)}/snapshot-chunks/"
                         f"{_quote(chunk_id)}", signed=True, body={"blob": _b64(blob)})

    async def get_snapshot_chunk(self, space_id: bytes, chunk_id: bytes) -> bytes:
        """One chunk of a chunked snapshot (check it against its manifest)."""
        r = await self._send("GET", f"/v1/spaces/{_quote(space_id)}/snapshot-chunks/"
                             f"{_quote(chunk_id)}", authed=True)
        return _unb64(r["blob"])

    async def attest_snapshot(self, space_id: bytes, doc_id: bytes, attestation: bytes) -> None:
        """Send this device's signed verdict on the doc's current snapshot."""
        await self._send("POST", f"/v1/spaces/{_quote(space_id)}/docs/{_quote(doc_id)}"
                         "/snapshot/attestations", signed=True,
                         body={"attestation": _b64(attestation)})

    async def snapshot_attestations(self, space_id: bytes,
                                    doc_id: bytes) -> tuple[bytes | None, list[bytes]]:
        """``(snapshot id, attestations)`` of the doc's current snapshot (unverified)."""
        r = await self._send("GET", f"/v1/spaces/{_quote(space_id)}/docs/{_quote(doc_id)}"
                             "/snapshot/attestations", authed=True)
        sid = r.get("snapshot_id")
        return (_unb64(sid) if sid else None), [_unb64(a) for a in r["attestations"]]

    async def put_presence(self, space_id: bytes, record: bytes) -> None:
        """Publish this device's presence record in the space (protocol.md 17.4.14),
        replacing its previous one."""
        await self._send("PUT", f"/v1/spaces/{_quote(space_id)}/presence", signed=True,
                         body={"record": _b64(record)})

    async def presence(self, space_id: bytes) -> list[bytes]:
        """The live presence records of the space's devices (verify and open each;
        DecodeError ``malformed`` if the answer is not a list of base64 records)."""
        r = await self._send("GET", f"/v1/spaces/{_quote(space_id)}/presence", authed=True)
        return parse_list(r, "records", _presence_record)

    # ------------------------------------------------------- pairing mailbox
    # Every channel request names the caller's slot by its token (docs/protocol.md 17.4.7).
    async def open_channel(self, token: bytes) -> tuple[bytes, int, int]:
        """Open a pairing mailbox whose initiator slot is ``token``:
        ``(channel_id, nameplate, expires_ms)``.

        Raises:
            DecodeError: the relay does not speak pairing version 2
                (``unsupported_version``).
        """
        r = await self._send("POST", "/v1/pairing", body={"version": PAIRING_VERSION},
                             headers=_pairing_token(token), idempotent=False)
        if "nameplate" not in r:  # a relay from before pairing version 2 ignores the body
            raise DecodeError(f"the relay at {self._url} does not speak pairing "
                              f"version {PAIRING_VERSION}: update the relay",
                              Code.UNSUPPORTED_VERSION)
        return _unb64(r["channel_id"]), int(r["nameplate"]), int(r["expires_ms"])

    async def claim_channel(self, nameplate: int, token: bytes) -> tuple[bytes, int]:
        """Claim the joiner slot of the mailbox numbered ``nameplate`` for ``token``:
        ``(channel_id, expires_ms)``.

        Raises:
            NotFoundError: no such number (expired, or mistyped).
            ConflictError: another device claimed it first (the relay burns it),
                or it is burnt or expired.
            DecodeError: the relay does not speak pairing version 2.
        """
        try:
            r = await self._send("POST", "/v1/pairing/claim", body={"nameplate": nameplate},
                                 headers=_pairing_token(token), idempotent=False)
        except NotFoundError as exc:
            if exc.message == "no such endpoint":
                raise DecodeError(f"the relay at {self._url} does not speak pairing "
                                  f"version {PAIRING_VERSION}: update the relay",
                                  Code.UNSUPPORTED_VERSION) from None
            raise
        return _unb64(r["channel_id"]), int(r["expires_ms"])

    async def post_channel(self, channel_id: bytes, token: bytes, index: int,
                           body: bytes) -> int:
        """Post message ``index`` in the slot of ``token`` (a retry of the same
        message is answered as stored); returns its index."""
        r = await self._send("POST", f"/v1/pairing/{_quote(channel_id)}/messages",
                             body={"index": index, "body": _b64(body)},
                             headers=_pairing_token(token))
        return int(r["messages"][0]["index"])

    async def read_channel(self, channel_id: bytes, token: bytes,
                           after: int = -1) -> list[tuple[int, str, bytes]]:
        """Messages after index ``after``: ``(index, sender, body)``."""
        r = await self._send("GET", f"/v1/pairing/{_quote(channel_id)}/messages",
                             params={"after": after}, headers=_pairing_token(token))
        return [(int(x["index"]), str(x["sender"]), _unb64(x["body"])) for x in r["messages"]]

    async def burn_channel(self, channel_id: bytes, token: bytes,
                           reason: str = "failed") -> None:
        """Burn a pairing mailbox, telling the other side ``reason``."""
        await self._send("POST", f"/v1/pairing/{_quote(channel_id)}/burn",
                         body={"reason": reason}, headers=_pairing_token(token))

    # ------------------------------------------------------------ controller
    # Each answer below is parsed by sddsf.client.results: a malformed one is a
    # DecodeError ``malformed``.
    async def submit_report(self, account_id: bytes, report: bytes) -> ReportReceipt:
        """Submit a signed device report; the receipt names its audit leaf and proof."""
        r = await self._send("POST", f"/v1/accounts/{_quote(account_id)}/reports",
                             body={"report": _b64(report)})
        return ReportReceipt.from_json(r)

    async def device_trust(self) -> list[DeviceTrust]:
        """Every device of the account with its trust score, access and factors."""
        r = await self._send("GET", "/v1/controller/devices", authed=True)
        return parse_list(r, "devices", DeviceTrust.from_json)

    async def alerts(self, *, include_acked: bool = False) -> list[Alert]:
        """The account's alerts (open ones, or all), oldest first."""
        r = await self._send("GET", "/v1/controller/alerts", authed=True,
                             params={"all": "true" if include_acked else "false"})
        return parse_list(r, "alerts", Alert.from_json)

    async def ack_alert(self, alert_id: bytes) -> Alert:
        """Acknowledge an alert (lifts its quarantine); the acknowledged alert."""
        r = await self._send("POST", f"/v1/controller/alerts/{_quote(alert_id)}/ack",
                             signed=True, body={})
        return Alert.from_json(r)

    async def ack_alerts_as_account(self, account: AccountKeys,
                                    alert_ids: Sequence[bytes]) -> list[Alert]:
        """Acknowledge alerts with the account key (lifts their quarantine, also one
        about the account's only device); no ids: every open alert."""
        ts = self._clock()
        sig = account.sign(auth.alert_ack_message(account.account_id, ts, alert_ids))
        r = await self._send("POST", f"/v1/accounts/{_quote(account.account_id)}/alerts/ack",
                             body={"alert_ids": [_b64(a) for a in alert_ids], "ts_ms": ts,
                                   "signature": _b64(sig)})
        return parse_list(r, "alerts", Alert.from_json)

    async def audit_page(self, start: int = 0,
                         limit: int = 1000) -> tuple[list[tuple[int, bytes]], bytes]:
        """Audit entries from ``start`` and the signed head of the whole log."""
        r = await self._send("GET", "/v1/controller/audit", authed=True,
                             params={"start": start, "limit": limit})
        return ([(int(e["seq"]), _unb64(e["entry"])) for e in r["entries"]],
                _unb64(r["tree_head"]["tree_head"]))

    async def audit_consistency(self, first: int,
                                second: int | None = None) -> tuple[list[bytes], bytes]:
        """Consistency proof between audit log sizes and the signed head of ``second``."""
        params: dict[str, Any] = {"first": first}
        if second is not None:
            params["second"] = second
        r = await self._send("GET", "/v1/controller/audit/proofs/consistency", authed=True,
                             params=params)
        return [_unb64(p) for p in r["proof"]], _unb64(r["tree_head"]["tree_head"])

    async def encryption_policy(self) -> bytes:
        """The relay's signed encryption policy (verify it with the pinned relay key)."""
        if self.held_policy is not None:
            return self.held_policy
        r = await self._send("GET", "/v1/controller/encryption-policy")
        return _unb64(r["policy"])

    async def ws_ticket(self) -> bytes:
        """A single-use WebSocket ticket."""
        r = await self._send("POST", "/v1/ws/ticket", signed=True, body={})
        return _unb64(r["ticket"])

    # ---------------------------------------------------- passphrase backups
    async def put_backup(self, account_id: bytes, backup: Backup) -> None:
        """Store (or replace) the account's passphrase backup (signed by this device)."""
        kdf = backup.kdf
        await self._send("PUT", f"/v1/accounts/{_quote(account_id)}/backup", signed=True,
                         body={"kdf": {"alg": kdf.alg, "t": kdf.t, "m": kdf.m_kib,
                                       "p": kdf.p, "salt": _b64(kdf.salt)},
                               "verifier": _b64(backup.verifier), "blob": _b64(backup.blob)})

    async def delete_backup(self, account_id: bytes) -> bool:
        """Delete the account's passphrase backup; False if there was none."""
        r = await self._send("DELETE", f"/v1/accounts/{_quote(account_id)}/backup",
                             signed=True)
        return bool(r["deleted"])

    async def backup_kdf(self, account_id: bytes) -> KdfParams:
        """The backup's KDF parameters as the relay states them (unchecked: call
        :func:`sddsf.protocol.backup.check_kdf_params` before deriving anything)."""
        r = await self._send("GET", f"/v1/accounts/{_quote(account_id)}/backup/kdf")
        try:
            kdf = r["kdf"]
            values = [kdf[k] for k in ("t", "m", "p")]
            if not isinstance(kdf["alg"], str) or any(
                    isinstance(v, bool) or not isinstance(v, int) for v in values):
                raise TypeError("kdf fields")
            return KdfParams(t=values[0], m_kib=values[1], p=values[2],
                             salt=_unb64(str(kdf["salt"]), "kdf.salt"), alg=kdf["alg"])
        except (KeyError, TypeError):
            raise DecodeError("the relay sent malformed backup KDF parameters") from None

    async def account_by_fingerprint(self, prefix: bytes) -> bytes:
        """The genesis registry entry of the account whose fingerprint is ``prefix``
        (20 bytes; unverified: verify it and check that its id starts with them)."""
        r = await self._send("GET", f"/v1/accounts/by-fingerprint/{_quote(prefix)}",
                             authed=True)
        try:
            return _unb64(str(r["genesis"]), "genesis")
        except (KeyError, TypeError):
            raise DecodeError("the relay sent no genesis entry") from None

    async def backup_account(self, fingerprint_bytes: bytes) -> bytes:
        """The id of the account with a backup whose fingerprint is ``fingerprint_bytes``
        (20 bytes; unverified: check that the id starts with them)."""
        r = await self._send("GET", f"/v1/backups/by-fingerprint/{_quote(fingerprint_bytes)}")
        try:
            return _unb64(str(r["account_id"]), "account_id")
        except (KeyError, TypeError):
            raise DecodeError("the relay sent no account id") from None

    async def fetch_backup(self, account_id: bytes, verifier: bytes) -> bytes:
        """The backup blob, for the right verifier (a wrong one is counted by the relay)."""
        r = await self._send("POST", f"/v1/accounts/{_quote(account_id)}/backup/fetch",
                             body={"verifier": _b64(verifier)}, idempotent=False)
        try:
            return _unb64(str(r["blob"]), "blob")
        except (KeyError, TypeError):
            raise DecodeError("the relay sent no backup blob") from None


def _why_unreachable(exc: httpx.HTTPError) -> str:
    """What a person should know about a transport failure (never a class name)."""
    text = str(exc).lower()
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "not an http:// or https:// URL: check the relay URL"
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time: check the network, or try again later"
    if isinstance(exc, httpx.ConnectError):
        if "name or service not known" in text or "nodename nor servname" in text \
                or "temporary failure in name resolution" in text:
            return "host name not found: check the relay URL"
        if "certificate" in text or "ssl" in text:
            return "its TLS certificate is not trusted"
        return ("connection refused or host unreachable: is the relay running, and is the "
                "URL right?")
    if isinstance(exc, httpx.ProxyError):
        return "the proxy refused the connection"
    return "network error: check the network and the relay URL"


def _presence_record(item: object) -> bytes:
    if not isinstance(item, str):
        raise DecodeError("the relay sent a presence record that is not base64 text")
    return _unb64(item, "presence record")


def _quote(raw: bytes) -> str:
    # URL-safe base64 needs no escaping in a path segment.
    return _b64(raw)


def _pairing_token(token: bytes) -> dict[str, str]:
    """The header that names a pairing slot (docs/protocol.md 17.4.7)."""
    return {"x-sddsf-pairing-token": _b64(token)}
