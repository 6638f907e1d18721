"""`make gpu-check`: every check that needs a CUDA GPU, in one command, summed up in one JSON file.

1. the gpu-marked tests (``pytest -m gpu``), each test's outcome;
2. the throughput suite (``benchmarks/step_cost.py --gpu-suite --device cuda --dtype bfloat16``): img/s and peak
   memory per batch size for the plain step, the perceptual step (T = 100) and the diffusers step;
3. the demo (``scripts/demo.sh``), which trains, generates and evaluates on the GPU, and its wall time.

Then ``gpu-check.json`` (``--out``): torch, CUDA, the GPU's name, the tests' outcomes, the suite's table, the demo's
time and exit status. Without CUDA it prints one line saying so and exits 2 (no traceback). Exit 1 when a part
failed (the JSON is written all the same), 0 when all passed.

    make gpu-check                                  # everything (tens of minutes on an H100)
    .venv/bin/python scripts/gpu_check.py --skip demo --suite-batches 8   # a shorter pass
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("tests", "suite", "demo")


def cuda_or_exit() -> dict:
    """torch's and CUDA's versions and the GPU's name; without a usable GPU, one line and exit 2."""
    try:
        import torch
    except ImportError:
        print("gpu-check: torch is not installed here (run `make install`)", file=sys.stderr)
        sys.exit(2)
    if not torch.cuda.is_available():
        seen = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={seen!r})" if seen is not None else ""
        print(
            f"gpu-check needs a CUDA GPU: torch {torch.__version__} (CUDA build {torch.version.cuda}) "
            f"sees none{where}; nothing was run",
            file=sys.stderr,
        )
        sys.exit(2)
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0),
        "gpu_count": torch.cuda.device_count(),
    }


def run_tests(python: str, log: Path) -> dict:
    """``pytest -m gpu``: each test's outcome (passed, failed, error, skipped) from its JUnit XML."""
    xml = log.with_suffix(".xml")
    start = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.call(
            [python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    outcomes = {}
    if xml.is_file():
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
            kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
            outcomes[name] = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(
                kinds[0] if kinds else "", "passed"
            )
    return {"exit_code": rc, "seconds": round(time.perf_counter() - start, 1), "outcomes": outcomes, "log": str(log)}


def run_suite(python: str, log: Path, batches: list[int]) -> dict:
    """The throughput table: the last line that ``step_cost.py --gpu-suite`` prints is its JSON."""
    cmd = [python, "benchmarks/step_cost.py", "--gpu-suite", "--device", "cuda", "--dtype", "bfloat16"]
    cmd += ["--suite-batches", *map(str, batches)]
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    log.write_text(r.stderr + r.stdout)
    result: dict = {"exit_code": r.returncode, "seconds": round(time.perf_counter() - start, 1), "command": cmd}
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode == 0 and lines:
        result.update(json.loads(lines[-1]))
    result["log"] = str(log)
    return result


def run_demo(log: Path, work: Path) -> dict:
    start = time.perf_counter()
    env = {**os.environ, "DEMO_OUT": str(work / "demo-output")}
    with log.open("w") as out:
        rc = subprocess.call(["bash", "scripts/demo.sh"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    return {"exit_code": rc, "seconds": round(time.perf_counter() - start, 1), "log": str(log)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "gpu-check.json", help="the summary (default gpu-check.json)")
    ap.add_argument("--skip", action="append", default=[], choices=PARTS, help="leave a part out (repeatable)")
    ap.add_argument("--suite-batches", type=int, nargs="+", default=[8, 16, 32])
    args = ap.parse_args()

    summary: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **cuda_or_exit()}
    python = sys.executable
    logs = Path(tempfile.mkdtemp(prefix="humanfix-gpu-check-"))
    print(f"gpu-check on {summary['gpu']} (torch {summary['torch']}, CUDA {summary['cuda']}); logs in {logs}")
    steps = {
        "tests": lambda: run_tests(python, logs / "tests.log"),
        "suite": lambda: run_suite(python, logs / "suite.log", args.suite_batches),
        "demo": lambda: run_demo(logs / "demo.log", logs),
    }
    for part, step in steps.items():
        if part in args.skip:
            summary[part] = {"skipped": True}
            continue
        print(f"gpu-check: {part} …", flush=True)
        summary[part] = step()
        print(f"gpu-check: {part}: exit {summary[part]['exit_code']} in {summary[part]['seconds']} s", flush=True)
    tests = summary["tests"].get("outcomes", {})
    summary["tests_passed"] = sum(v == "passed" for v in tests.values())
    summary["tests_failed"] = sum(v in ("failed", "error") for v in tests.values())
    if isinstance(summary["suite"].get("suite"), list):
        summary["suite_table"] = [
            {k: row[k] for k in row if k == "batch" or k.endswith(("_img_per_s", "_peak_gb"))}
            for row in summary["suite"]["suite"]
        ]
    if "demo" not in args.skip:
        summary["demo_seconds"] = summary["demo"]["seconds"]
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    failed = [p for p in PARTS if summary[p].get("exit_code", 0) != 0]
    print(f"gpu-check: wrote {args.out}; " + (f"FAILED: {', '.join(failed)}" if failed else "all parts passed"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
