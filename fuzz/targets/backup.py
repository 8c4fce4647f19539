"""Passphrase backup blobs (:mod:`sddsf.protocol.backup`): :func:`decode_backup`,
the KDF parameter check, and :func:`open_backup_with_keys` with keys derived
once (tiny Argon2id parameters, allowed through the tests-only ``minimums``).

:func:`open_backup` is not fuzzed: it runs Argon2id with the blob's parameters,
which may legitimately ask for up to 4 GiB (the pinned maximum).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from fuzz.contract import attempt
from fuzz.targets import Target
from fuzz.world import world
from sddsf.protocol import backup as bk
from sddsf.testing import vectorgen

_TINY = bk.KdfMinimums(t=1, m_kib=8, p=1)
_PASSPHRASE = "correct horse battery staple"  # noqa: S105 - a fuzzing fixture


@cache
def _backup() -> bk.Backup:
    w = world()
    return bk.make_backup(vectorgen.seed("fuzz/secret"), _PASSPHRASE, w.account.account_id,
                          salt=bytes(range(16)), nonce=bytes(24), t=1, m_kib=8, p=1,
                          minimums=_TINY)


@cache
def _keys() -> bk.BackupKeys:
    return bk.derive_keys(_PASSPHRASE, _backup().kdf, minimums=_TINY)


def run(data: bytes) -> None:
    """Decode; check the parameters (production and tiny minimums); open."""
    header = bk.decode_backup(data)
    attempt(bk.check_kdf_params, header.kdf)
    bk.kdf_params_ok(header.kdf, minimums=_TINY)
    bk.open_backup_with_keys(data, _keys(), world().account.account_id)


def seeds() -> Iterator[bytes]:
    """A real blob (tiny parameters) and one with the production parameters' shape."""
    yield _backup().blob
    yield bk.make_backup(vectorgen.seed("fuzz/secret"), _PASSPHRASE, bytes(32),
                         salt=bytes(64), nonce=bytes(24), t=1, m_kib=8, p=1,
                         minimums=_TINY).blob


TARGETS = {"backup": Target("backup", run, seeds)}
