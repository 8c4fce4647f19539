"""The API reference builds without warnings and the checked public modules keep
their Google-style docstrings (scripts/api_reference.py)."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "api_reference.py"


@pytest.fixture(scope="module")
def api_reference() -> ModuleType:
    # A script, not a package module: loaded from its path.
    spec = importlib.util.spec_from_file_location("api_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_modules_have_complete_docstrings(api_reference: ModuleType) -> None:
    checked = api_reference.CHECKED_MODULES
    assert set(checked) <= set(api_reference.PUBLIC_MODULES)
    # Every public module is held to the rules, the device facade and the
    # transport contract included.
    assert set(checked) == set(api_reference.PUBLIC_MODULES)
    assert api_reference.check_docstrings(_importable(checked)) == []


def _importable(modules: tuple[str, ...]) -> list[str]:
    # The p2p extra (libp2p, trio) cannot be installed at the floors of the
    # minimum-versions run (.ci/run says why), which sets SDDSF_REQUIRE_P2P=0:
    # there the peer-to-peer modules are left out. Everywhere else, and always
    # under SDDSF_REQUIRE_P2P=1, every checked module is imported and checked.
    if os.environ.get("SDDSF_REQUIRE_P2P") == "1" or importlib.util.find_spec("libp2p"):
        return list(modules)
    return [m for m in modules if not m.startswith("sddsf.p2p.")]


def test_public_modules_come_in_reading_order(api_reference: ModuleType) -> None:
    # The index lists them in this order: the facade, the application API (device,
    # live documents, events, the blocking API), background sync, the transports it
    # runs over and the relay's typed answers, documents, storage, the bridge, and
    # the exception tree last; sharing spaces with people comes after the vault, and
    # peer-to-peer sync after the bridge.
    assert api_reference.PUBLIC_MODULES == (
        "sddsf", "sddsf.client.device", "sddsf.client.live", "sddsf.client.events",
        "sddsf.sync_api", "sddsf.client.runner", "sddsf.client.transport.base",
        "sddsf.client.transport.relay", "sddsf.client.results", "sddsf.client.retry",
        "sddsf.client.kv", "sddsf.client.vault", "sddsf.client.sharing", "sddsf.client.store",
        "sddsf.client.sqlite_store",
        "sddsf.client.memory_store", "sddsf.client.keystore", "sddsf.client.bridge",
        "sddsf.p2p.sync", "sddsf.p2p.hybrid", "sddsf.errors")


def test_reference_renders_every_public_module_without_warnings(
        api_reference: ModuleType, tmp_path: Path) -> None:
    # The reference documents sddsf.client.bridge, whose annotations name the
    # `bridge` extra's YRoom: rendered where the test extra is installed (the main
    # CI run); the minimum-versions run installs only the floors of the core
    # (pycrdt 0.12, below what the bridge extra needs) and skips the rendering.
    pytest.importorskip("pycrdt.websocket", reason="the bridge extra is not installed")
    out = tmp_path / "api"
    assert api_reference.build(out) == []
    index = (out / "index.html").read_text()
    linked = re.findall(r'<a href="([^"]+)\.html">([^<]+)</a>', index)
    modules = api_reference.PUBLIC_MODULES
    for name in modules:
        assert (name.replace(".", "/"), name) in linked, f"the index does not list {name}"
        page = out / f"{name.replace('.', '/')}.html"
        assert page.is_file(), f"{name} was not rendered"
    assert [title for _, title in linked if title in modules] == list(modules), \
        "the index lists the modules in another order than PUBLIC_MODULES"
    vault = (out / "sddsf/client/vault.html").read_text()
    assert "VaultConflictError" in vault and "Raises" in vault


def test_main_exits_zero_and_names_the_index(api_reference: ModuleType, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # main() renders the whole reference, the bridge module included (see above).
    pytest.importorskip("pycrdt.websocket", reason="the bridge extra is not installed")
    assert api_reference.main(["--out", str(tmp_path / "api")]) == 0
    assert f"{tmp_path / 'api'}/index.html" in capsys.readouterr().out



def test_a_function_valued_field_is_not_taken_for_a_method(
        api_reference: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    # As Runner.sleep (a dataclass field whose default is asyncio.sleep): the
    # default's docstring belongs to another API; the class's own methods count.
    probe = ModuleType("apiref_probe", "A module the check reads.")
    monkeypatch.setitem(sys.modules, "apiref_probe", probe)  # dataclass looks it up
    exec(textwrap.dedent("""
        import asyncio
        from dataclasses import dataclass

        __all__ = ["Probe"]

        @dataclass
        class Probe:
            \"\"\"A class with a function-valued field.\"\"\"

            wait: object = asyncio.sleep

            def run(self) -> int:
                \"\"\"Undocumented sections.\"\"\"
                return 1
        """), probe.__dict__)  # noqa: S102 - a fixed probe module
    problems = api_reference.check_docstrings(("apiref_probe",))
    assert problems == ["apiref_probe.Probe.run: docstring lacks 'Returns:'",
                        "apiref_probe.Probe.run: docstring lacks 'Raises:'"]


def test_a_lambda_valued_field_is_not_taken_for_a_method(
        api_reference: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    # As Bridge.on_event (a dataclass field whose default is a lambda written in
    # the class body, so its qualname is "Bridge.<lambda>"): a field, documented
    # with the class; the class's own methods count.
    probe = ModuleType("apiref_probe_lambda", "A module the check reads.")
    monkeypatch.setitem(sys.modules, "apiref_probe_lambda", probe)
    exec(textwrap.dedent("""
        from collections.abc import Callable
        from dataclasses import dataclass

        __all__ = ["Probe"]

        @dataclass
        class Probe:
            \"\"\"A class with a lambda-valued field.\"\"\"

            on_event: Callable[[str], None] = lambda line: None

            def run(self) -> int:
                \"\"\"Undocumented sections.\"\"\"
                return 1
        """), probe.__dict__)  # noqa: S102 - a fixed probe module
    problems = api_reference.check_docstrings(("apiref_probe_lambda",))
    assert problems == ["apiref_probe_lambda.Probe.run: docstring lacks 'Returns:'",
                        "apiref_probe_lambda.Probe.run: docstring lacks 'Raises:'"]


def test_a_name_re_exported_from_a_private_module_is_checked_where_it_is_public(
        api_reference: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    # As sddsf.client.device.doc_id_for (defined in sddsf.client.engine.common, which
    # has no page of its own): its only page is the re-exporting module's, so its
    # docstring is checked there. A name re-exported from a public module (checked
    # on its own page) is not checked twice.
    probe = ModuleType("apiref_probe_reexport", "A module the check reads.")
    monkeypatch.setitem(sys.modules, "apiref_probe_reexport", probe)

    def helper(value: int) -> int:
        """Undocumented sections."""
        return value

    def public(value: int) -> int:
        """Undocumented sections, checked on its own page."""
        return value

    helper.__module__ = "sddsf.client.engine.common"
    public.__module__ = "sddsf.errors"
    probe.helper, probe.public = helper, public  # type: ignore[attr-defined]
    probe.__all__ = ["helper", "public"]  # type: ignore[attr-defined]
    problems = api_reference.check_docstrings(("apiref_probe_reexport",))
    assert problems == ["apiref_probe_reexport.helper: docstring lacks 'Args:'",
                        "apiref_probe_reexport.helper: docstring lacks 'Returns:'",
                        "apiref_probe_reexport.helper: docstring lacks 'Raises:'"]
