"""The key-value document of a space shared between people (docs/client.md).

Every record is signed by its author device; in a shared space that device
may belong to another member's account, verified from that account's pinned
key through its registry (as the vault does). Alice, Bob (writer) and Carol
(reader) on one in-process relay over SQLite (the fixture of
``test_vault_share``).
"""

from __future__ import annotations

from test_vault_share import People, people, sync  # noqa: F401 - the fixture

from sddsf.client.kv import KeyValue


async def test_a_members_value_is_read_as_theirs_not_as_forged(p: People) -> None:
    KeyValue(p.bob, p.space).put("dinner", "pasta")
    KeyValue(p.alice, p.space).put("lunch", "soup")
    await sync(p.bob, p.alice, p.bob, p.carol, p.phone)
    for reader in (p.alice, p.phone, p.bob, p.carol):
        kv = KeyValue(reader, p.space)
        entries = {e.key: e for e in kv.entries()}
        assert kv.alerts == [] and kv.unreadable == []
        assert {k: e.value for k, e in entries.items()} == {"dinner": "pasta", "lunch": "soup"}
        (head,) = entries["dinner"].heads
        assert head.author == p.bob.device_id.hex()


async def test_members_writing_one_key_at_once_see_both_values(p: People) -> None:
    # Without the member's registry, Bob's record was refused as forged and
    # only the plain last-writer-wins copy was left: one value silently lost.
    KeyValue(p.alice, p.space).put("dinner", "soup")
    KeyValue(p.bob, p.space).put("dinner", "pasta")
    await sync(p.alice, p.bob, p.alice)
    for reader in (p.alice, p.bob):
        kv = KeyValue(reader, p.space)
        entry = kv.entry("dinner")
        assert entry is not None and entry.conflict and kv.alerts == []
        assert {(h.author, h.value) for h in entry.heads} == {
            (p.alice.device_id.hex(), "soup"), (p.bob.device_id.hex(), "pasta")}
