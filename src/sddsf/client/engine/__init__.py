"""The device engine: parts with one job each, composed by :class:`SyncEngine`.

* :mod:`~sddsf.client.engine.identity` — the device's keys, account, relay pin, clock;
* :mod:`~sddsf.client.engine.registry` — the verified device registry;
* :mod:`~sddsf.client.engine.keyring` — key epochs, packages, rotation;
* :mod:`~sddsf.client.engine.documents` — live pycrdt documents and their stored state;
* :mod:`~sddsf.client.engine.verified` — the verified Merkle tree and tree head;
* :mod:`~sddsf.client.engine.outbox` — edits sealed into ops, held, re-queued;
* :mod:`~sddsf.client.engine.snapshots` — writing and choosing snapshots (18.7);
* :mod:`~sddsf.client.engine.pull` / :mod:`~sddsf.client.engine.push` — moving ops;
* :mod:`~sddsf.client.engine.corroboration` — snapshot trust and upkeep;
* :mod:`~sddsf.client.engine.sync` — the order of a sync.

No part imports the :class:`~sddsf.client.device.Device` facade (a test checks it).
"""

from sddsf.client.engine.common import (
    EngineHooks,
    EngineObserver,
    EngineSettings,
    SkippedOp,
    SyncReport,
)
from sddsf.client.engine.sync import SyncEngine

__all__ = ["EngineHooks", "EngineObserver", "EngineSettings", "SkippedOp", "SyncEngine",
           "SyncReport"]
