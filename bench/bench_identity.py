"""Identity and CLI start-up figures (issue "Foundation").

Prints medians of: `saas-cli identity create` (whole command), `Keystore.create` and `Keystore.load` in-process,
`saas-cli --help` wall time, and `saas-cli identity list` with 20 keystores.

    .venv/bin/python bench/bench_identity.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from saas.core.keystore import Keystore

CLI = str(Path(sys.executable).parent / "saas-cli")


def measure(runs: int, action: Callable[[], object]) -> tuple[float, float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def run_cli(*args: str) -> None:
    subprocess.run([CLI, *args], check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def report(label: str, figures: tuple[float, float, float], goal: str) -> None:
    median, low, high = figures
    print(f"{label:<44} median {median:7.3f} s   (min {low:.3f}, max {high:.3f})   goal {goal}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    work = Path(tempfile.mkdtemp(prefix="saas-bench-"))
    try:
        ks = work / "create"
        report(
            "saas-cli identity create",
            measure(
                runs,
                lambda: run_cli(
                    "--keystore",
                    str(ks),
                    "--password",
                    "pw",
                    "identity",
                    "create",
                    "--name",
                    "bench",
                    "--email",
                    "bench@example.com",
                ),
            ),
            "<= 1.5 s",
        )
        report(
            "Keystore.create (in-process)",
            measure(runs, lambda: Keystore.create(work / "api", "bench", "bench@example.com", "pw")),
            "-",
        )
        first = next((work / "api").glob("*.json"))
        report("Keystore.load (in-process)", measure(runs, lambda: Keystore.load(first, "pw")), "-")
        report("saas-cli --help", measure(runs, lambda: run_cli("--help")), "<= 0.3 s")
        twenty = work / "twenty"
        twenty.mkdir()
        for path in list((work / "api").glob("*.json"))[:20]:
            shutil.copy(path, twenty / path.name)
        while len(list(twenty.glob("*.json"))) < 20:
            Keystore.create(twenty, "bench", "bench@example.com", "pw")
        report(
            "saas-cli identity list (20 keystores)",
            measure(runs, lambda: run_cli("--keystore", str(twenty), "identity", "list")),
            "<= 0.5 s",
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
