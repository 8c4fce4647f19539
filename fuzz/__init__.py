"""Coverage-guided fuzzing of every SDDSF decoder that takes untrusted bytes.

Layout::

    fuzz/contract.py      the contract every target keeps, and crash signatures
    fuzz/world.py         real, verified objects (SDDSF's own vectors) the targets run against
    fuzz/relay.py         the relay app in process over SQLite, signing requests as a device
    fuzz/targets/         one module per decoder family; ``TARGETS`` names them all
    fuzz/driver.py        runs one target under atheris (libFuzzer) in this process
    fuzz/run.py           long runs: every target in turn, figures and saved crashes
    fuzz/regressions/     ``<target>/<sha1>``: inputs that once broke the contract

The contract: a target may raise only :class:`sddsf.errors.SddsfError` (typed,
with a :class:`~sddsf.errors.Code`). Any other exception, an oracle failure
(``AssertionError``), a hang or running out of memory is a crash.

Run ``python fuzz/run.py --all --seconds 60`` for figures (see its docstring);
``tests/adversarial/test_fuzz_smoke.py`` is the bounded run in CI.
"""
