"""Benchmark: how many calls, and how long, a big load takes under Graphite Note's rate limit.

    .venv/bin/python bench/calls.py                     # the issue-13 scenario, 1,000,000 records
    .venv/bin/python bench/calls.py --records 200000 --label after

The scenario: `../shared/bench/gen_singer.py --records N --columns 10 --seed 3` piped into
target-graphitenote with its default settings (only the connection and the dataset given),
against `target-sandbox serve --rate-limit-per-minute 10 --max-body-bytes 8388608` in its own
process. Here the calls are the cost, not the CPU: the sandbox admits 10 calls in any 60 s.

Printed: one markdown table row with rows landed, dataset-fill calls (2xx), all calls the
sandbox saw, 429 and 413 answers, wall time and peak RSS of the target process (GNU time).
Run it on unchanged code for a "before" row, on the new code for "after".
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
SHARED_GEN = HERE.parent.parent / "shared" / "bench" / "gen_singer.py"
TIME = shutil.which("time", path="/usr/bin:/bin")


def stream_file(cache: Path, generator: Path, records: int) -> Path:
    path = cache / f"gen-{records}-c10-s3.jsonl"
    if not path.exists():
        part = path.with_suffix(".part")
        with part.open("wb") as out:
            subprocess.run([sys.executable, str(generator), "--records", str(records),
                            "--columns", "10", "--seed", "3"], stdout=out, check=True)
        part.rename(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--label", default="this code")
    parser.add_argument("--generator", type=Path, default=SHARED_GEN)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gn-calls")
    parser.add_argument("--target", default=str(Path(sys.executable).parent /
                                                "target-graphitenote"))
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    stream = stream_file(args.cache, args.generator, args.records)
    workdir = Path(tempfile.mkdtemp(prefix="calls-", dir=args.cache))
    sandbox = subprocess.Popen(
        [str(Path(sys.executable).parent / "target-sandbox"), "serve", "--data-dir",
         str(workdir / "data"), "--port", "0", "--rate-limit-per-minute", "10",
         "--max-body-bytes", "8388608"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = sandbox.stdout.readline().split()[-1]  # type: ignore[union-attr]
        config = workdir / "config.json"
        config.write_text(json.dumps({
            "api_token": "gn-sandbox-token", "user_code": "gn-sandbox-user",
            "api_url": f"{url}/graphitenote/api", "dataset_code": "sandbox-dataset"}))
        timing = workdir / "time.txt"
        command = [args.target, "--config", str(config)]
        if TIME:
            command = [TIME, "-q", "-f", "%x %M", "-o", str(timing), *command]
        with stream.open("rb") as stdin, (workdir / "target.log").open("wb") as log:
            started = time.perf_counter()
            done = subprocess.run(command, stdin=stdin, stdout=subprocess.DEVNULL, stderr=log,
                                  check=False)
            wall = time.perf_counter() - started
        code, rss = done.returncode, float("nan")
        if TIME and timing.exists():
            exit_code, max_kb = timing.read_text().split()[-2:]
            code, rss = int(exit_code), int(max_kb) / 1024
        state = requests.get(f"{url}/_sandbox/state?max_rows=0", timeout=60).json()
        rows = state["graphitenote"]["datasets"].get("sandbox-dataset", {}).get("row_count", 0)
        log_entries = requests.get(f"{url}/_sandbox/requests", timeout=60).json()
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
    statuses = Counter(e["status"] for e in log_entries)
    fills = sum(1 for e in log_entries
                if e["path"].endswith("/dataset-fill") and e["status"] < 300)
    print("| code | exit | rows landed | dataset-fill calls | all calls | 429 | 413 | "
          "wall s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.label} | {code} | {rows:,} | {fills} | {len(log_entries)} | "
          f"{statuses.get(429, 0)} | {statuses.get(413, 0)} | {wall:.0f} | {rss:.0f} |")
    ok = code == 0 and rows == args.records
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"run failed or incomplete; its files are in {workdir}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
