"""Account metadata without a credential (relay edge review, finding 15).

The registry (device names, revoke reasons, the policy, who added whom) was
readable by anyone who knew the account id. It now needs a session of the
account, or a request signed by a key the registry knows: the account key (a
device recovering with the phrase or a backup), an active device, or the device
an open proposal would add (a joiner awaiting approval). Revoked devices and
strangers are refused. What stays public is what recovering with only a
passphrase needs: whether a backup exists and its KDF parameters.

In process over real SQLite; the client flows that read the registry before
they have a session (recovery from the phrase, a joiner awaiting approval) run
through the real client code.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from edgekit import Relay, new_account, relay_app
from relaykit import World

from sddsf.client.device import Device
from sddsf.client.relay_client import RelayClient
from sddsf.errors import AuthorizationError, Code
from sddsf.protocol import registry as reg
from sddsf.protocol.approval import ActionType
from sddsf.protocol.identity import AccountKeys
from sddsf.wire import b64


def anonymous(relay: Relay) -> RelayClient:
    return RelayClient("http://relay.test", transport=httpx.ASGITransport(app=relay.app),
                       clock=relay.clock)


async def test_the_registry_is_not_public(tmp_path: Path) -> None:
    async with relay_app(tmp_path) as relay:
        world = await new_account(relay, 2)
        path = f"/v1/accounts/{b64(world.account.account_id)}/registry"
        async with relay.http() as h:
            for query in ("", "?since=0", "?since=1"):
                r = await h.get(path + query)
                assert (r.status_code, r.json().get("code")) == (401, "unauthenticated"), \
                    (query, r.text)
        # a stranger's keys do not help
        stranger = World()
        async with anonymous(relay) as c:
            with pytest.raises(AuthorizationError) as refused:
                await c.registry(world.account.account_id, 0, signer=stranger.devices[0])
            assert refused.value.code is Code.UNKNOWN_DEVICE
            with pytest.raises(AuthorizationError):
                await c.registry(world.account.account_id, 0, signer=stranger.account)
        # the account's own devices read it, with or without a session
        async with relay.client(world, 1) as c:
            assert len(await c.registry(world.account.account_id, 0)) == 2


async def test_who_may_read_it(tmp_path: Path) -> None:
    async with relay_app(tmp_path) as relay:
        world = await new_account(relay, 3)
        aid = world.account.account_id
        async with anonymous(relay) as c:  # the account key (recovery)
            assert len(await c.registry(aid, 0, signer=world.account)) == 3
        async with relay.client(world, 0) as c:  # revoke device 2
            await c.append_registry(aid, world.revoke(2))
        async with relay.client(world, 2) as revoked:
            with pytest.raises(AuthorizationError) as refused:
                await revoked.registry(aid, 0)
            assert refused.value.code is Code.REVOKED
        # a governed account: a joiner awaiting approval reads the registry
        policy = reg.set_policy(world.state, world.devices[0], {"approvals": 2},
                                relay.clock.now)
        world.entries.append(policy)
        async with relay.client(world, 0) as c:
            await c.append_registry(aid, policy)
        state = world.state
        joiner = world.devices[4]
        proposal = reg.propose(state, world.devices[0], ActionType.ADD,
                               {"device": reg.device_fields(joiner.public, "tablet")},
                               relay.clock.now, new_device=joiner)
        async with relay.client(world, 0) as c:
            await c.append_registry(aid, proposal)
        async with relay.client(world, 4) as c:
            entries = await c.registry(aid, 0)
            assert entries[-1] == proposal
            with pytest.raises(AuthorizationError):  # not a device yet: no session
                await c.list_spaces()


async def test_recovery_from_the_phrase_still_reads_the_registry(tmp_path: Path) -> None:
    async with relay_app(tmp_path) as relay:
        transport = httpx.ASGITransport(app=relay.app)
        laptop, secret = await Device.create_account(
            tmp_path / "laptop", "http://relay.test", "laptop", passphrase=None,
            insecure_plaintext=True, transport=transport, clock=relay.clock)
        await laptop.create_space("notes")
        await laptop.sync()
        await laptop.close()
        assert AccountKeys.from_secret(secret).account_id == laptop.account.account_id
        recovered = await Device.recover(tmp_path / "tablet", "http://relay.test", secret,
                                         "tablet", passphrase=None, insecure_plaintext=True,
                                         transport=transport, clock=relay.clock)
        assert len(recovered.registry().active_devices()) == 2
        await recovered.close()
