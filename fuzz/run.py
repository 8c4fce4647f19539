"""Long fuzzing runs: each target in turn (never in parallel), with figures.

Usage::

    python fuzz/run.py --all --seconds 60
    python fuzz/run.py --target envelope --target snapshot_sealed --runs 200000
    python fuzz/run.py --all --seconds 600 --markdown      # the table for docs/reliability.md

Each target runs in its own process (``fuzz/driver.py``) from a persistent
corpus (``--corpus-root``, default ``$TMPDIR/sddsf-fuzz-corpus/<target>``, so a
second run resumes), seeded with the target's real objects. Every distinct
crash (exception type and innermost SDDSF line), hang or memory blow-up is
saved as ``fuzz/regressions/<target>/<sha1>``, which the CI test replays. A
run that stops on a hang or an out-of-memory is restarted on its corpus
until its time is up. Exit status: 1 if any target crashed or failed to run.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "fuzz" / "driver.py"
REGRESSIONS = ROOT / "fuzz" / "regressions"
_ARTIFACTS = ("crash-", "timeout-", "oom-", "leak-")
_MAX_RESTARTS = 5


@dataclass
class Result:
    """What one target's run did."""

    target: str
    executions: int = 0
    seconds: float = 0.0  # fuzzing time as libFuzzer counts it (start-up excluded)
    new_units: int = 0
    crashes: dict[str, Path] = field(default_factory=dict)  # signature -> saved input
    error: str = ""

    @property
    def exec_per_s(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0


def _stat(output: str, name: str) -> int:
    found = re.findall(rf"stat::{name}:\s+(\d+)", output)
    return int(found[-1]) if found else 0


def _saved_signatures(target: str) -> dict[str, Path]:
    """The crash signature of every input already in ``fuzz/regressions/<target>/``."""
    from fuzz.contract import crash_signature, within_contract  # noqa: PLC0415
    from fuzz.targets import load  # noqa: PLC0415

    t = load(target)
    t.prepare()
    found: dict[str, Path] = {}
    for path in sorted((REGRESSIONS / target).glob("*")):
        try:
            within_contract(t.run, path.read_bytes())
        except Exception as exc:  # a crash that is still open
            found.setdefault(crash_signature(exc), path)
    return found


def _save(data: bytes, target: str, signature: str) -> Path:
    """Keep a crashing input, unless one with the same signature is kept already."""
    from fuzz.contract import input_name  # noqa: PLC0415

    if signature in (saved := _saved_signatures(target)):
        return saved[signature]
    directory = REGRESSIONS / target
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / input_name(data)
    path.write_bytes(data)
    return path


def _libfuzzer_failure(output: str, artifact: Path) -> str:
    kind = artifact.name.split("-", 1)[0]
    match = re.search(r"=== Uncaught Python exception: ===\n(.+)", output)
    return f"{kind}: {match.group(1)}" if kind == "crash" and match else kind


def run_target(target: str, *, seconds: int, runs: int | None, corpus: Path, timeout_s: int,
               rss_limit_mb: int, keep_going: bool) -> Result:
    """Fuzz one target for ``seconds`` (or ``runs`` executions), restarting after a hang."""
    result = Result(target)
    deadline = time.monotonic() + seconds
    with tempfile.TemporaryDirectory(prefix=f"sddsf-fuzz-{target}-") as tmp:
        work = Path(tmp)
        for _ in range(_MAX_RESTARTS + 1):
            left = max(1, int(deadline - time.monotonic()))
            flags = [f"-max_total_time={left}", "-print_final_stats=1",
                     f"-timeout={timeout_s}", f"-rss_limit_mb={rss_limit_mb}",
                     f"-artifact_prefix={work}/"]
            if runs is not None:
                flags.append(f"-runs={runs - result.executions}")
            cmd = [sys.executable, str(DRIVER), target, "--corpus", str(corpus),
                   "--crash-dir", str(work / "saved"), "--tmp-dir", str(work / "tmp"),
                   *(["--keep-going"] if keep_going else []), "--", *flags]
            started = time.monotonic()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False,  # noqa: S603 - our own driver
                                  timeout=left + 10 * timeout_s + 120)
            output = proc.stdout + proc.stderr
            executed = _stat(output, "number_of_executed_units")
            rate = _stat(output, "average_exec_per_sec")
            result.seconds += executed / rate if rate else time.monotonic() - started
            result.executions += executed
            result.new_units += _stat(output, "new_units_added")
            for line in output.splitlines():
                if line.startswith("CRASH "):
                    _, signature, path = line.split(" ", 2)
                    if signature not in result.crashes:
                        result.crashes[signature] = _save(Path(path).read_bytes(), target,
                                                          signature)
            artifacts = [p for p in work.iterdir() if p.name.startswith(_ARTIFACTS)]
            for artifact in artifacts:
                signature = _libfuzzer_failure(output, artifact)
                if signature not in result.crashes:
                    result.crashes[signature] = _save(artifact.read_bytes(), target, signature)
                artifact.unlink()
            if proc.returncode != 0 and not artifacts:
                result.error = output[-2000:]
                break
            done = runs is not None and result.executions >= runs
            if proc.returncode == 0 or done or not keep_going \
                    or time.monotonic() >= deadline:
                break
    return result


def _table(results: list[Result], markdown: bool) -> str:
    rows = [("target", "executions", "exec/s", "new units", "crashes", "saved as")]
    for r in results:
        crashes = "ERROR (see above)" if r.error else str(len(r.crashes))
        saved = ", ".join(f"{sig} -> {path.relative_to(ROOT)}"
                          for sig, path in r.crashes.items()) or "-"
        rows.append((r.target, str(r.executions), f"{r.exec_per_s:.0f}", str(r.new_units),
                     crashes, saved))
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        lines.insert(1, "|" + "---|" * len(rows[0]))
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
                     + "  " + row[-1] for row in rows)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen targets one after the other and print the figures."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from fuzz.targets import TARGETS  # noqa: PLC0415 - after the path is set

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), default=[])
    parser.add_argument("--all", action="store_true", help="every target (the default)")
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--runs", type=int, help="stop a target after this many executions")
    parser.add_argument("--corpus-root", type=Path,
                        default=Path(tempfile.gettempdir()) / "sddsf-fuzz-corpus")
    parser.add_argument("--fresh", action="store_true", help="start from the seeds only")
    parser.add_argument("--timeout", type=int, default=10, help="seconds per input (a hang)")
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    parser.add_argument("--stop-on-crash", action="store_true",
                        help="stop each target at its first crash (libFuzzer's default)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    targets = sorted(TARGETS) if args.all or not args.target else args.target
    results = []
    for name in targets:
        corpus = args.corpus_root / name
        if args.fresh:
            shutil.rmtree(corpus, ignore_errors=True)
        print(f"fuzzing {name} for {args.seconds} s ...", file=sys.stderr, flush=True)
        r = run_target(name, seconds=args.seconds, runs=args.runs, corpus=corpus,
                       timeout_s=args.timeout, rss_limit_mb=args.rss_limit_mb,
                       keep_going=not args.stop_on_crash)
        if r.error:
            print(f"{name}: the run failed:\n{r.error}", file=sys.stderr)
        results.append(r)
    print(_table(results, args.markdown))
    return 1 if any(r.crashes or r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
