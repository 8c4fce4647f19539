"""Shared spaces on the device: the membership folded from the log, the pinned keys
of other accounts, and their registries verified from those keys.

Store rows (all in the device's encrypted store):

* ``mpin``  account id -> ``[signing key, recovery key]``: another account's key,
  pinned when this device joined a space of it (the owner, compared by its
  people) or when a verified ``create``/``add`` entry introduced it;
* ``mreg``  account id ‖ u64(seq) -> entry: that account's registry, verified
  from genesis against the pinned key (never trusting the relay);
* ``mlog``  space id ‖ u64(offset) -> entry: the space's membership entries, each
  stored by the pull that verified its leaf against the signed tree head;
* ``owner`` space id -> account id: the account whose space it is (absent: this
  device's own account).

The fold of ``mlog`` (21.3) says, at each log position, who may write and
which registry judges an op's author (``protocol.sharing``, 21.7).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from sddsf.client.engine.common import SkippedOp, SyncReport, as_list, u64
from sddsf.client.engine.identity import DeviceIdentity
from sddsf.client.engine.registry import RegistryView
from sddsf.client.transport.base import Transport
from sddsf.errors import (
    AuthorizationError,
    Code,
    NotFoundError,
    ProofError,
    RegistryError,
    SddsfError,
)
from sddsf.protocol import registry as reg
from sddsf.protocol.encoding import encode
from sddsf.protocol.envelope import OpEnvelope
from sddsf.protocol.identity import AccountPublic
from sddsf.protocol.membership import (
    MembershipEntry,
    MembershipState,
    RegistryResolver,
    can_write,
    decode_entry,
)
from sddsf.protocol.rules import EpochWindow
from sddsf.protocol.sharing import SpaceMembers, check_create_owner

__all__ = ["REGISTRY_MAX_AGE_MS", "Fold", "LogJudge", "Members"]

#: ``package_seqs(space_id, account)``: per epoch, the registry position its key
#: package took ``account``'s devices at (``Keyring.package_seqs``).
PackageSeqs = Callable[[bytes, bytes | None], tuple[int, ...]]

#: How long another account's verified registry is used without asking the
#: relay again (unless a log or key package names later entries of it).
REGISTRY_MAX_AGE_MS = 30_000


@dataclass(frozen=True, slots=True)
class Fold:
    """A space's membership after some entries, and the member set after each
    applied entry (by hash: the ``membership`` of a version 3 key package)."""

    state: MembershipState
    sets: Mapping[bytes, frozenset[bytes]]

    def apply(self, entry: MembershipEntry, registry_of: RegistryResolver) -> Fold:
        """The fold after ``entry`` (refused: raises, and this fold stands)."""
        state = self.state.apply(entry, registry_of)
        return Fold(state, {**self.sets, entry.hash: frozenset(state.members)})


class Members:
    """Membership and other accounts' registries (see the module docstring)."""

    def __init__(self, ident: DeviceIdentity, registry: RegistryView,
                 transport: Transport) -> None:
        self.ident = ident
        self.store = ident.store
        self.reg = registry
        self.transport = transport
        self._regs: dict[bytes, reg.RegistryState] = {}
        self._folds: dict[bytes, Fold] = {}
        #: Per space, entries the relay listed beyond the pulled log (offset ->
        #: bytes): a later pull must find exactly these leaves there.
        self.listed: dict[bytes, dict[int, bytes]] = {}
        #: Per space, the fold including those listed entries (see :meth:`ahead`).
        self._ahead: dict[bytes, Fold] = {}
        #: When each account's registry was last fetched (this device's clock, ms).
        #: Another account's registry is read at most once per
        #: :data:`REGISTRY_MAX_AGE_MS` (each read is a request the relay limits
        #: per address), and at once when a log or key package names entries of
        #: it this device lacks (``force``). The own registry is the sync's own.
        self._fetched_ms: dict[bytes, int] = {}

    def new_sync(self) -> None:
        """A sync starts (the own registry was just refreshed by it)."""
        self._fetched_ms[self.ident.account.account_id] = self.ident.clock()

    def forget(self) -> None:
        """Drop cached states (another process may have stored rows)."""
        self._regs.clear()
        self._folds.clear()
        self.listed.clear()
        self._ahead.clear()

    # ------------------------------------------------------------- owners
    def owner(self, space_id: bytes) -> bytes:
        """The account whose space it is."""
        raw = self.store.get("owner", space_id)
        return raw if raw is not None else self.ident.account.account_id

    def may_write(self, space_id: bytes) -> bool:
        """Whether this account may write the space: its own unshared space, or a
        shared one where it is a writer or an admin (21.5)."""
        state = self.current(space_id).state
        if not state.applied:
            return self.owner(space_id) == self.ident.account.account_id
        return can_write(state, self.ident.account.account_id)

    def shared(self, space_id: bytes) -> bool:
        """Whether the space's log holds a membership (from its ``create`` on)."""
        return bool(self.current(space_id).state.applied)

    # ------------------------------------------------------------- keys
    def pinned(self, account_id: bytes) -> AccountPublic | None:
        """The account's pinned key (this device's own account's always)."""
        if account_id == self.ident.account.account_id:
            return self.ident.account
        raw = self.store.get("mpin", account_id)
        if raw is None:
            return None
        sign, recovery = as_list(raw)
        return AccountPublic.from_keys(bytes(sign), bytes(recovery))

    def pin(self, key: AccountPublic) -> None:
        """Pin another account's key (first pin wins; a different key is refused).

        Raises:
            ProofError: the account id is pinned to another key.
        """
        have = self.pinned(key.account_id)
        if have is None:
            self.store.put("mpin", key.account_id,
                           encode([key.signing_key.raw, key.recovery_key]))
        elif have.signing_key.raw != key.signing_key.raw or \
                have.recovery_key != key.recovery_key:
            raise ProofError(f"account {key.account_id.hex()[:12]} is pinned to another key "
                             "than the one now shown; compare fingerprints again")

    # ------------------------------------------------------------ registries
    def registry_of(self, account_id: bytes) -> reg.RegistryState | None:
        """The account's registry as this device verified it (None: not yet)."""
        if account_id == self.ident.account.account_id:
            return self.reg.state()
        state = self._regs.get(account_id)
        if state is None:
            entries = [v for _, v in self.store.scan("mreg", account_id)]
            key = self.pinned(account_id)
            if not entries or key is None:
                return None
            state = self._regs[account_id] = reg.verify_registry(entries, pinned=key)
        return state

    async def refresh_registry(self, account_id: bytes, *,
                               force: bool = False) -> reg.RegistryState:
        """Fetch and verify the account's new registry entries from its pinned key.

        Raises:
            ProofError: the account has no pinned key here.
            RegistryError: the entries do not verify.
        """
        fetched = self._fetched_ms.get(account_id)
        if not force and fetched is not None and self.ident.clock() - fetched \
                < REGISTRY_MAX_AGE_MS and (state := self.registry_of(account_id)) is not None:
            return state
        if account_id == self.ident.account.account_id:
            state = await self.reg.refresh()
            self._fetched_ms[account_id] = self.ident.clock()
            return state
        key = self.pinned(account_id)
        if key is None:
            raise ProofError(f"no key is pinned for account {account_id.hex()[:12]}")
        old = self.registry_of(account_id)
        entries = await self.transport.registry(account_id, 0 if old is None else old.seq + 1)
        if old is None:
            state = reg.verify_registry(entries, pinned=key)
            start = 0
        else:
            state, start = old, old.seq + 1
            for entry in entries:
                state = state.apply(entry)
        if state.account_id != account_id:
            raise RegistryError("the relay served another account's registry",
                                Code.REGISTRY_INVALID)
        with self.store.batch() as b:
            for i, entry in enumerate(entries):
                b.put("mreg", account_id + u64(start + i), entry)
        self._regs[account_id] = state
        self._fetched_ms[account_id] = self.ident.clock()
        return state

    async def refresh_all(self, accounts: Iterable[bytes], *,
                          force: Collection[bytes] = ()) -> dict[bytes, reg.RegistryState]:
        """Every listed account's registry, refreshed unless read recently (those in
        ``force`` always; those without a pinned key skipped)."""
        out: dict[bytes, reg.RegistryState] = {}
        for account in sorted(set(accounts)):
            if self.pinned(account) is None:
                continue
            try:
                out[account] = await self.refresh_registry(account, force=account in force)
            except (AuthorizationError, NotFoundError):
                # No longer readable (an account removed from every space this
                # one shares with it): what was verified before still stands.
                if (state := self.registry_of(account)) is not None:
                    out[account] = state
        return out

    # ------------------------------------------------------------ membership
    def fold(self, space_id: bytes) -> Fold:
        """The stored membership entries, folded in log order (21.3)."""
        cached = self._folds.get(space_id)
        if cached is None:
            cached = self.fold_more(space_id, Fold(MembershipState.empty(space_id), {}),
                                    [decode_entry(v) for _, v in self.store.scan("mlog",
                                                                                space_id)])
            self._folds[space_id] = cached
        return cached

    def fold_more(self, space_id: bytes, start: Fold,
                  entries: Iterable[MembershipEntry]) -> Fold:
        """``start`` after ``entries``; a refused entry changes nothing (21.4)."""
        fold = start
        owner = self.owner(space_id)
        for e in entries:
            try:
                check_create_owner(e, owner)
                fold = fold.apply(e, self.registry_of)
            except SddsfError:
                continue  # every member skips it alike
        return fold

    async def ahead(self, space_id: bytes) -> Fold:
        """The stored fold, extended by the entries the relay lists beyond the log
        this device pulled: what its newest key packages may name (10.8). The
        extension is not stored: each entry is stored by the pull that finds it
        in the signed log, and must be the leaf listed here (else the relay
        equivocates: ``proof_invalid``).

        Raises:
            ProofError: the relay lists other entries at pulled offsets, or
                another owner than this device knows.
        """
        stored = {int.from_bytes(k[16:], "big"): v for k, v in self.store.scan("mlog", space_id)}
        log = await self.transport.membership(space_id)
        if log.owner != self.owner(space_id):
            raise ProofError("the relay names another owner of this space than the one this "
                             "device joined")
        last = max(stored, default=-1)
        for offset, raw in log.entries:
            if offset <= last and stored.get(offset) != raw:
                raise ProofError(f"the relay lists another membership entry at offset {offset} "
                                 "than its log holds")
        new = [(o, decode_entry(raw)) for o, raw in log.entries if o > last]
        await self.prepare(e for _, e in new)
        self.listed[space_id] = {o: e.raw for o, e in new}
        fold = self._ahead[space_id] = self.fold_more(space_id, self.fold(space_id),
                                                      (e for _, e in new))
        await self.refresh_all(fold.state.members)  # new members: their devices get keys
        return fold

    def current(self, space_id: bytes) -> Fold:
        """The newest membership this device knows: read ahead of the log when it
        did so since its last pull (a change it just made), else the pulled one.
        New key packages are built for it (the relay wants its newest head)."""
        return self._ahead.get(space_id) or self.fold(space_id)

    def behind(self, accounts: Collection[bytes],
               ops: Iterable[OpEnvelope]) -> set[bytes]:
        """The accounts among ``accounts`` whose registry must be fetched now to
        judge ``ops``: one that lists an op's author below the op's ``reg``, or
        all of them for an author none lists yet (a member's new device)."""
        states = {a: s for a in accounts if (s := self.registry_of(a)) is not None}
        out: set[bytes] = {a for a in accounts if a not in states}
        for env in ops:
            owner = next((a for a, s in states.items() if s.device(env.header.author)), None)
            if owner is None:
                return set(accounts)
            if env.header.reg is not None and env.header.reg > states[owner].seq:
                out.add(owner)
        return out

    async def judge(self, space_id: bytes, fetched: list[tuple[int, bytes, bytes | None]],
                    envs: Sequence[OpEnvelope | MembershipEntry | bytes | None],
                    current_epoch: int, package_seqs: PackageSeqs) -> LogJudge:
        """Who judges each leaf of a pulled page (``fetched``, decoded as ``envs``):
        the owner's registry before the space's membership, then each op's
        author's member registry at its position (21.7). The registries of every
        account named are refreshed first, so an op's ``reg`` is covered (else
        ``registry_withheld``).

        Raises:
            ProofError: a membership leaf differs from what the relay listed at
                its offset, or a registry is withheld.
        """
        entries = [e for e in envs if isinstance(e, MembershipEntry)]
        listed = self.listed.get(space_id, {})
        for (offset, _, raw), e in zip(fetched, envs, strict=True):
            if isinstance(e, MembershipEntry) and listed.get(offset, raw) != raw:
                raise ProofError(f"the relay listed another membership entry at offset "
                                 f"{offset} than its log holds")
        fold = self.fold(space_id)
        owner = self.owner(space_id)
        if owner == self.ident.account.account_id and not fold.state.applied and not entries:
            # This account's own space, not shared: its registry judges every op.
            ops = [e for e in envs if not isinstance(e, MembershipEntry)]
            owner_state = await self.reg.covering(ops)
        else:
            await self.prepare(entries)
            accounts = {owner, self.ident.account.account_id, *fold.state.members,
                        *(e.member for e in entries)}
            decoded = [e for e in envs if isinstance(e, OpEnvelope)]
            regs = await self.refresh_all(accounts, force=self.behind(accounts, decoded))
            owner_state = regs[owner]
        return LogJudge(self, space_id, fold, owner_state, current_epoch, package_seqs)

    def remember(self, space_id: bytes, fold: Fold) -> None:
        """The fold after a pull stored its entries (``mlog`` rows)."""
        self._folds[space_id] = fold
        ahead = self._ahead.get(space_id)
        if ahead is None or len(ahead.state.applied) <= len(fold.state.applied):
            self._ahead.pop(space_id, None)
            self.listed.pop(space_id, None)

    def members(self, space_id: bytes, fold: Fold | None = None) -> SpaceMembers:
        """The membership with the member registries this device verified."""
        state = (fold or self.current(space_id)).state
        regs = {a: r for a in state.members if (r := self.registry_of(a)) is not None}
        return SpaceMembers(state, regs)

    async def prepare(self, entries: Iterable[MembershipEntry]) -> None:
        """Pin the keys that ``create``/``add`` entries introduce and refresh the
        registries of every account they name, so that a fold can judge them.

        Pinning here is safe before the fold: a key is only ever used to verify
        that account's own registry, and an entry the fold refuses makes nobody
        a member.
        """
        signers: set[bytes] = set()
        for e in entries:
            if e.member_key is not None and self.pinned(e.member) is None:
                self.pin(e.member_key)
            signers.add(e.signer)
        await self.refresh_all(signers)



class LogJudge:
    """Judges the leaves of one pulled page in log order (21.7): membership entries
    move the fold; each op gets the registry of its author's member account at
    its position (the owner's before the space's membership) and that account's
    epoch window."""

    def __init__(self, members: Members, space_id: bytes, fold: Fold,
                 owner_state: reg.RegistryState, current_epoch: int,
                 package_seqs: PackageSeqs) -> None:
        self.members = members
        self.space_id = space_id
        self.fold = fold
        self.owner_state = owner_state
        self.current_epoch = current_epoch
        self.package_seqs = package_seqs
        #: (offset, entry) of every membership leaf judged (stored with the page).
        self.new: list[tuple[int, bytes]] = []
        #: The entries that applied (the application hears of them once stored).
        self.applied: list[MembershipEntry] = []

    def entry(self, offset: int, e: MembershipEntry, report: SyncReport) -> None:
        """Fold the entry at ``offset``; a refused one changes nothing and is reported."""
        try:
            check_create_owner(e, self.owner_state.account_id)
            self.fold = self.fold.apply(e, self.members.registry_of)
            self.applied.append(e)
        except SddsfError as exc:
            report.skipped.append(SkippedOp(offset, e.signer, 0, exc.code.value,
                                            f"membership entry ({e.type.value}) refused: "
                                            f"{exc.message}"))
        self.new.append((offset, e.raw))

    def context(self, env: OpEnvelope | bytes) -> tuple[reg.RegistryState, EpochWindow]:
        """The registry and epoch window that judge ``env`` here.

        Raises:
            AuthorizationError: the author's account may not write here.
            ContextError: a member's registry is not at hand.
            ProofError: ``registry_withheld`` (the author's account registry is
                behind the op's ``reg`` even after a refresh).
        """
        if not self.fold.state.applied or not isinstance(env, OpEnvelope):
            account, state = self.owner_state.account_id, self.owner_state
        else:
            account, state = self.members.members(self.space_id, self.fold).writer(
                env.header.author)
        if isinstance(env, OpEnvelope) and env.header.reg is not None \
                and env.header.reg > state.seq:
            raise ProofError(f"an op was written after registry entry {env.header.reg} of its "
                             f"author's account, but the relay serves that registry only up to "
                             f"entry {state.seq}", Code.REGISTRY_WITHHELD)
        return state, EpochWindow(self.current_epoch, 0,
                                  self.package_seqs(self.space_id, account))
