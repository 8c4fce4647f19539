"""Passphrase backups of the account secret (``docs/protocol.md`` 17.4.9 and 19).

The relay stores the Argon2id parameters, ``BLAKE2b-256(verifier)`` (never the
verifier) and the opaque blob. It releases the blob to whoever sends the right
verifier. Wrong guesses are limited per source address (``backup_max_failures``
in a row lock that source, doubling) and for the account (the same count from
every source puts the backup in a slow-down in which only a source that has not
guessed wrong may try). So a stranger who knows the account id cannot lock the
owner out, and an attacker's guesses are bounded by the addresses it has
(``docs/protocol.md`` 17.4.9). The state lives in storage: it survives restarts
and is shared by every relay process on one database.
"""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, Depends, Request

from sddsf.errors import (
    AuthenticationError,
    AuthorizationError,
    Code,
    ConflictError,
    ContextError,
    DecodeError,
    NotFoundError,
    RateLimitedError,
)
from sddsf.protocol.backup import (
    VERIFIER_SIZE,
    KdfParams,
    check_kdf_params,
    decode_backup,
    verifier_digest,
)
from sddsf.protocol.identity import ID_SIZE
from sddsf.relay import models as m
from sddsf.relay.deps import Authed, Caller, Ctx, client_ip, limit_ip, log
from sddsf.relay.storage.base import BackupAttemptStatus, BackupLockPolicy, StoredBackup

router = APIRouter()

FINGERPRINT_SIZE = 20  # bytes of the account id a fingerprint shows (identity.fingerprint)

_NONE = "this account has no passphrase backup on this relay"


def _own_account(caller: Caller, account_b64: str) -> bytes:
    aid = m.unb64(account_b64, "account id", size=ID_SIZE)
    if aid != caller.session.account_id:
        raise AuthorizationError("a device can only manage its own account's backup",
                                 Code.NOT_AUTHORIZED)
    return aid


def _kdf_out(b: StoredBackup) -> m.BackupKdf:
    return m.BackupKdf(alg="argon2id", t=b.t, m=b.m_kib, p=b.p, salt=m.b64(b.salt))


def _seconds(ms: int) -> int:
    return max(1, (ms + 999) // 1000)


def source_key(address: str) -> bytes:
    """The key a guess is counted under: an IPv4 address, or an IPv6 /64 (one
    host usually holds a whole /64, so its addresses count as one source)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address.encode()[:64] or b"unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped.packed
        return ipaddress.IPv6Network((ip, 64), strict=False).network_address.packed[:8]
    return ip.packed


@router.put("/v1/accounts/{account_id}/backup", response_model=m.BackupKdfOut,
            tags=["backup"])
async def put_backup(account_id: str, body: m.BackupIn, caller: Authed,
                     ctx: Ctx) -> m.BackupKdfOut:
    """Store (or replace) the account's passphrase backup. The relay checks the KDF
    parameters (the client minimums), that the blob decodes and names this account
    and these parameters; it keeps ``BLAKE2b-256(verifier)``, never the verifier."""
    aid = _own_account(caller, account_id)
    kdf = check_kdf_params(KdfParams(t=body.kdf.t, m_kib=body.kdf.m, p=body.kdf.p,
                                     salt=m.unb64(body.kdf.salt, "kdf.salt"),
                                     alg=body.kdf.alg))
    verifier = m.unb64(body.verifier, "verifier", size=VERIFIER_SIZE)
    blob = m.unb64(body.blob, "blob")
    header = decode_backup(blob)
    if header.account != aid:
        raise ContextError("the backup blob names another account")
    if header.kdf != kdf:
        raise DecodeError("the backup blob's KDF parameters differ from the request's kdf")
    await ctx.storage.put_backup(StoredBackup(
        aid, kdf.alg, kdf.t, kdf.m_kib, kdf.p, kdf.salt, verifier_digest(verifier), blob,
        ctx.clock()))
    return m.BackupKdfOut(kdf=body.kdf)


@router.delete("/v1/accounts/{account_id}/backup", response_model=m.BackupDeleted,
               tags=["backup"])
async def delete_backup(account_id: str, caller: Authed, ctx: Ctx) -> m.BackupDeleted:
    """Delete the account's backup and its attempt state (idempotent)."""
    aid = _own_account(caller, account_id)
    return m.BackupDeleted(deleted=await ctx.storage.delete_backup(aid))


@router.get("/v1/accounts/{account_id}/backup/kdf", response_model=m.BackupKdfOut,
            tags=["backup"], dependencies=[Depends(limit_ip)])
async def backup_kdf(account_id: str, ctx: Ctx) -> m.BackupKdfOut:
    """The backup's KDF parameters (public), so a client can derive the verifier."""
    stored = await ctx.storage.get_backup(m.unb64(account_id, "account id", size=ID_SIZE))
    if stored is None:
        raise NotFoundError(_NONE)
    return m.BackupKdfOut(kdf=_kdf_out(stored))


@router.get("/v1/backups/by-fingerprint/{fingerprint}", response_model=m.BackupAccount,
            tags=["backup"], dependencies=[Depends(limit_ip)])
async def backup_by_fingerprint(fingerprint: str, ctx: Ctx) -> m.BackupAccount:
    """The full id of the account with a backup whose fingerprint (the first 20 bytes
    of its id, base64url) is given, so that a person can recover with the
    fingerprint every screen shows. The client checks the answer against the
    fingerprint (and the backup against the account), so a wrong one fails."""
    prefix = m.unb64(fingerprint, "fingerprint", size=FINGERPRINT_SIZE)
    found = await ctx.storage.backup_accounts(prefix, limit=2)
    if not found:
        raise NotFoundError("no account with this fingerprint has a passphrase backup on "
                            "this relay")
    if len(found) > 1:
        raise ConflictError("this fingerprint names several accounts; give the full "
                            "account id (64 hex digits)")
    return m.BackupAccount(account_id=m.b64(found[0]))


@router.post("/v1/accounts/{account_id}/backup/fetch", response_model=m.BackupBlob,
             tags=["backup"], dependencies=[Depends(limit_ip)])
async def fetch_backup(account_id: str, body: m.BackupFetch, request: Request,
                       ctx: Ctx) -> m.BackupBlob:
    """The blob, for the right verifier. Wrong verifiers are counted per source
    address and for the account; a source that guessed wrong ``backup_max_failures``
    times in a row is locked (even for the right one), and while the account is
    locked only a source that never guessed wrong may try."""
    aid = m.unb64(account_id, "account id", size=ID_SIZE)
    verifier = m.unb64(body.verifier, "verifier", size=VERIFIER_SIZE)
    s = ctx.settings
    policy = BackupLockPolicy(s.backup_max_failures, s.backup_lockout_s * 1000,
                              s.backup_max_lockout_s * 1000)
    attempt = await ctx.storage.backup_attempt(aid, verifier_digest(verifier), ctx.clock(),
                                               policy, source=source_key(client_ip(request, ctx)))
    if attempt.status is BackupAttemptStatus.OK and attempt.blob is not None:
        return m.BackupBlob(blob=m.b64(attempt.blob))
    if attempt.status is BackupAttemptStatus.LOCKED:
        wait = _seconds(attempt.retry_after_ms)
        raise RateLimitedError(f"too many wrong passphrases: this backup is locked for this "
                               f"address; retry in {wait} s (or from another network)",
                               retry_after_s=attempt.retry_after_ms / 1000)
    if attempt.retry_after_ms > 0:
        log.warning("backup of account %s: a source locked for %d s after wrong verifiers "
                    "(account lockouts: %d)", aid.hex()[:12], _seconds(attempt.retry_after_ms),
                    attempt.state.lockouts)
        raise AuthenticationError(f"wrong passphrase; after {s.backup_max_failures} failures "
                                  f"the backup is locked for "
                                  f"{_seconds(attempt.retry_after_ms)} s for the addresses "
                                  "that guessed wrong")
    raise AuthenticationError("wrong passphrase")
