"""Run one fuzz target under atheris (libFuzzer) in this process.

Usage::

    python fuzz/driver.py NAME [--corpus DIR] [--keep-going --crash-dir DIR] [--tmp-dir DIR]
                          -- [libFuzzer flags]
    python fuzz/driver.py --entry FILE.py:FUNCTION [...]     # any callable taking bytes

``--corpus`` writes the target's seeds into DIR (content-addressed, so again
and again is harmless) and fuzzes from it; libFuzzer adds what it finds there.
SDDSF's modules are instrumented for coverage; the harness is not.

Without ``--keep-going`` the first crash stops the run the libFuzzer way
(traceback, ``crash-<sha1>`` under ``-artifact_prefix``, non-zero exit). With it,
each crash is saved once per signature (see :func:`fuzz.contract.crash_signature`)
under ``--crash-dir`` and announced on stderr as ``CRASH <signature> <file>``,
and fuzzing goes on. Hangs and memory blow-ups always stop the run
(``-timeout``, ``-rss_limit_mb``).

libFuzzer ends the process without Python's exit handlers, so temporary files
a target makes (the HTTP target's database) stay behind: ``--tmp-dir`` puts
them in a directory the caller removes (``fuzz/run.py`` and the CI test do).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _entry(spec: str) -> Callable[[bytes], object]:
    path, _, name = spec.rpartition(":")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if module_spec is None or module_spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    fn: Callable[[bytes], object] = getattr(module, name)
    return fn


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ours, libfuzzer = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) \
        if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", help="a name from fuzz.targets.TARGETS")
    parser.add_argument("--entry", help="FILE.py:FUNCTION to fuzz instead of a named target")
    parser.add_argument("--corpus", type=Path, help="write the seeds here and fuzz from it")
    parser.add_argument("--keep-going", action="store_true",
                        help="save each distinct crash and go on")
    parser.add_argument("--crash-dir", type=Path, default=Path("."))
    parser.add_argument("--tmp-dir", type=Path, help="where targets make temporary files")
    args = parser.parse_args(ours)
    if (args.target is None) == (args.entry is None):
        parser.error("give a target name or --entry")
    return args, libfuzzer


def main(argv: list[str] | None = None) -> None:
    """Load the target with SDDSF instrumented, then hand over to libFuzzer."""
    args, libfuzzer = _parse(sys.argv[1:] if argv is None else argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if args.tmp_dir is not None:
        args.tmp_dir.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(args.tmp_dir)
    import atheris  # type: ignore[import-untyped]  # noqa: PLC0415 - before SDDSF, for coverage

    with atheris.instrument_imports(include=["sddsf"]):
        from fuzz.contract import crash_signature, input_name, within_contract  # noqa: PLC0415
        from fuzz.targets import load  # noqa: PLC0415

        tokens: tuple[bytes, ...] = ()
        if args.entry:
            run, max_len, seeds = _entry(args.entry), 4096, []
        else:
            target = load(args.target)
            target.prepare()
            run, max_len, seeds = target.run, target.max_len, list(target.seeds())
            tokens = target.dictionary
    if args.corpus is not None:
        args.corpus.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            (args.corpus / f"seed-{input_name(seed)}").write_bytes(seed)
        libfuzzer = [str(args.corpus), *libfuzzer]
    if tokens and args.corpus is not None:
        dictionary = args.corpus.parent / f"{args.corpus.name}.dict"
        dictionary.write_text("".join(
            '"' + "".join(f"\\x{b:02x}" for b in token) + '"\n' for token in tokens))
        libfuzzer.append(f"-dict={dictionary}")
    if not any(flag.startswith("-max_len=") for flag in libfuzzer):
        libfuzzer.append(f"-max_len={max(max_len, *map(len, seeds), 1)}")
    seen: set[str] = set()

    def one_input(data: bytes) -> None:
        try:
            within_contract(run, data)
        except Exception as exc:  # every untyped error is a crash to report
            if not args.keep_going:
                raise
            signature = crash_signature(exc)
            if signature in seen:
                return
            seen.add(signature)
            args.crash_dir.mkdir(parents=True, exist_ok=True)
            path = args.crash_dir / f"crash-{input_name(data)}"
            path.write_bytes(data)
            path.with_suffix(".txt").write_text(
                signature + "\n" + "".join(traceback.format_exception(exc)))
            print(f"CRASH {signature} {path}", file=sys.stderr, flush=True)

    atheris.Setup([sys.argv[0], *libfuzzer], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
