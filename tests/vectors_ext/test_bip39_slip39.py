"""Recovery material against the reference vectors, through OUR wrappers
(sddsf.recovery): BIP39 (trezor/python-mnemonic ``vectors.json``) and SLIP-39
(trezor/python-shamir-mnemonic ``vectors.json``).

BIP39: every English vector's entropy gives its phrase and back (the 32-byte
ones are account-secret phrases of 24 words); the seed with passphrase
"TREZOR" is checked through the ``mnemonic`` library (SDDSF uses the phrase as
an encoding of the secret, not the BIP39 seed). SLIP-39: every valid set
recovers its master secret with passphrase "TREZOR", as the file specifies;
every invalid set is refused with UsageError.
"""

from __future__ import annotations

from collections import Counter

import pytest
from mnemonic import Mnemonic

from sddsf import recovery
from sddsf.errors import UsageError
from vectorkit import load, require_vectors

BIP39_ENGLISH = 24
SLIP39_VECTORS = 45
SLIP39_VALID = 15
PASSPHRASE = "TREZOR"  # noqa: S105 - the passphrase both vector files use


def test_bip39_english_vectors() -> None:
    require_vectors("bip39")
    vectors = load("bip39/vectors.json")["english"]
    assert len(vectors) == BIP39_ENGLISH
    m = Mnemonic("english")
    sizes: Counter[int] = Counter()
    for entropy_hex, phrase, seed_hex, _xprv in vectors:
        entropy = bytes.fromhex(entropy_hex)
        assert recovery.phrase_from_secret(entropy) == phrase, entropy_hex
        assert recovery.secret_from_phrase(phrase, words=None) == entropy, phrase
        assert recovery.secret_from_phrase(phrase.upper(), words=None) == entropy
        assert m.to_seed(phrase, passphrase=PASSPHRASE).hex() == seed_hex, phrase
        if len(entropy) == 32:  # the account secret's size: the default 24-word check
            assert recovery.secret_from_phrase(phrase) == entropy
        else:
            with pytest.raises(UsageError, match="has 24 words"):
                recovery.secret_from_phrase(phrase)
        sizes[len(entropy)] += 1
    assert sizes == {16: 8, 24: 8, 32: 8}


def test_slip39_vectors() -> None:
    require_vectors("slip39")
    vectors = load("slip39/vectors.json")
    assert len(vectors) == SLIP39_VECTORS
    outcomes: Counter[str] = Counter()
    for description, mnemonics, secret_hex, _xprv in vectors:
        if secret_hex:
            got = recovery.combine_shares(mnemonics, passphrase=PASSPHRASE)
            assert got.hex() == secret_hex, description
            outcomes["valid"] += 1
        else:
            with pytest.raises(UsageError):
                recovery.combine_shares(mnemonics, passphrase=PASSPHRASE)
            outcomes["invalid"] += 1
    assert outcomes == {"valid": SLIP39_VALID, "invalid": SLIP39_VECTORS - SLIP39_VALID}
