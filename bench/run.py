"""Benchmark: a generated Singer stream into target-graphitenote, with the sandbox in
another process, side by side with a peer target and the raw parse bound, in one run.

    .venv/bin/python bench/run.py                       # 200k records, 3 rounds, with peers
    .venv/bin/python bench/run.py --records 200000 2000000 --rounds 1 --peer-max 200000

Subjects, run in interleaved rounds so drift on a noisy machine hits all alike:
- `raw-orjson`: parse every line with orjson and drop it (the floor no target reaches).
- `target-graphitenote`: validation on (the default), gzip, the sandbox on loopback in
  its own process; client-side rate limit off (the sandbox has none either).
- `target-usmart`: validation on, the stream spooled as one CSV, then the signed PUT,
  file:create and the pipeline refresh; correct when uSmart's parser (the emulator) reads
  every row back from the uploaded file, no key header reached the storage.
- `target-csv`: meltanolabs-target-csv 0.5.0, installed into `--peer-dir` on first use
  (skipped above `--peer-max` records: it keeps the whole stream in memory).
- `target-datatile`: one SPSS file per stream (the default `file_format`, or each of
  `--datatile-formats`), uploaded to the DataTile emulator, which reads it back with
  pyreadstat; correct only if the database then holds every record. The sandbox is started
  with `--max-body-bytes 2 GiB` so a 2M-record file fits.
- `target-datainsider` (warehouse mode: positional batches) and `target-datainsider-lake`
  (lake mode: Parquet files, one IncrementalSync), append-only, into the same sandbox;
  checked by the table's and the lake directory's row counts.
`--subjects` runs only the subjects named.
Each run's wall time, peak RSS (GNU time, the target process alone) and correctness (the
last STATE matches the stream's; the sandbox holds every record) go to a JSON-lines file;
a markdown table of medians is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
TIME = shutil.which("time", path="/usr/bin:/bin")
DATATILE_MAX_BODY = 2 * 1024 * 1024 * 1024  # a 2M-record .sav is several hundred MB
RAW = [sys.executable, "-c",
       "import sys, orjson\nfor line in sys.stdin.buffer: orjson.loads(line)"]


def stream_file(cache: Path, records: int) -> Path:
    path = cache / f"customers-{records}.jsonl"
    if not path.exists():
        with path.with_suffix(".part").open("wb") as out:
            subprocess.run([sys.executable, str(HERE / "generate.py"), "--records", str(records)],
                           stdout=out, check=True)
        path.with_suffix(".part").rename(path)
    return path


def last_line(path: Path) -> str:
    with path.open("rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        return f.read().decode(errors="replace").strip().splitlines()[-1]


class Sandbox:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "target-sandbox"), "serve", "--data-dir", str(data_dir), "--port", "0",
             "--max-body-bytes", str(DATATILE_MAX_BODY)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.proc.stdout.readline().split()[-1]  # type: ignore[union-attr]

    def control(self, method: str, route: str) -> dict:
        # 600 s: the uSmart and DataTile emulators read uploaded rows when the state is
        # first asked for (after the timed run); at 2M records that takes tens of seconds
        return requests.request(method, f"{self.url}/_sandbox/{route}", timeout=600).json()

    def row_count(self, label: str = "target-graphitenote") -> int:
        state = self.control("GET", "state?max_rows=0")
        if label.startswith("target-datatile"):
            return state["datatile"]["databases"]["sandbox-database"]["row_count"]
        return state["graphitenote"]["datasets"]["sandbox-dataset"]["row_count"]

    def usmart_rows(self) -> int:
        """Rows uSmart parsed in the latest revision of every file (0 if a key header
        reached the storage, or a blank row cut a file short)."""
        state = self.control("GET", "state?max_rows=0")["usmart"]
        files = state["datasets"]["sandbox-dataset"]["files"].values()
        latest = [file["revisions"][-1] for file in files]
        if any(u["key_headers_sent"] for u in state["uploads"].values()) or any(
                r["stopped_at_blank_row"] is not None or r["type_conflicts"] for r in latest):
            return 0
        return sum(r["rows"] for r in latest)

    def di_row_count(self) -> int:
        state = self.control("GET", "state?max_rows=0")["datainsider"]
        table = state["databases"].get("bench", {}).get("tables", {}).get("customers", {})
        return table.get("row_count", 0)

    def lake_row_count(self) -> int:
        lake = self.control("GET", "state?max_rows=0")["datainsider"]["lake"]
        return lake["directories"].get("/bench/customers", {}).get("row_count", 0)

    def stop(self) -> None:
        """Stop the server and remove its data (hundreds of MB after a 2M-record run)."""
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def ensure_peer(peer_dir: Path) -> Path | None:
    exe = peer_dir / "venv-csv" / "bin" / "target-csv"
    if not exe.exists():
        print("installing meltanolabs-target-csv==0.5.0 into", exe.parent.parent, file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(exe.parent.parent)], check=True)
        done = subprocess.run([str(exe.parent / "pip"), "install", "-q",
                               "meltanolabs-target-csv==0.5.0"], check=False)
        if done.returncode != 0:
            return None
    return exe


def timed(cmd: list[str], stream: Path, workdir: Path) -> tuple[float, float, int, list[str]]:
    """(wall s, peak RSS MB, exit code, stdout lines) of one run."""
    timing = workdir / "time.txt"
    out = workdir / "stdout"
    full = [TIME, "-q", "-f", "%x %M", "-o", str(timing), *cmd] if TIME else cmd
    with stream.open("rb") as stdin, out.open("wb") as stdout:
        started = time.perf_counter()
        proc = subprocess.run(full, stdin=stdin, stdout=stdout, stderr=subprocess.DEVNULL,
                              cwd=workdir, check=False)
        wall = time.perf_counter() - started
    rss, code = 0.0, proc.returncode
    if TIME and timing.exists():
        exit_code, max_kb = timing.read_text().split()[-2:]
        code, rss = int(exit_code), int(max_kb) / 1024
    lines = out.read_text(errors="replace").strip().splitlines()
    return wall, rss, code, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="+", default=[200_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peer-max", type=int, default=200_000,
                        help="largest stream the peer target-csv is run on")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--subjects", nargs="+", help="run only these subjects")
    parser.add_argument("--peer-dir", type=Path, default=Path("/tmp/singer-bench"))
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gn-bench")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "results.jsonl")
    parser.add_argument("--datatile-formats", nargs="*", default=[None],
                        help="file_format values for target-datatile (default: its default); "
                             "none: leave target-datatile out")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    peer = None if args.no_peers else ensure_peer(args.peer_dir)
    sandbox = Sandbox(Path(tempfile.mkdtemp(prefix="sandbox-", dir=args.cache)))
    config = {"api_token": "gn-sandbox-token", "user_code": "gn-sandbox-user",
              "api_url": sandbox.url + "/graphitenote/api", "dataset_code": "sandbox-dataset",
              "rate_limit_per_minute": 0}  # append-only: STATE after every fill
    us_config = {"org_guid": "sandbox-org", "api_key_id": "us-sandbox-key-id",
                 "api_key_secret": "us-sandbox-key-secret", "api_url": sandbox.url + "/usmart",
                 "dataset_guid": "sandbox-dataset"}  # one CSV, uploaded at the end
    di_config = {"api_url": sandbox.url + "/datainsider/api", "api_key": "di-sandbox-key",
                 "database": "bench"}
    di_lake_config = {**di_config, "mode": "lake", "lake_path_prefix": "/bench"}
    checks = {"target-graphitenote": sandbox.row_count,
              "target-usmart": sandbox.usmart_rows,
              "target-datainsider": sandbox.di_row_count,
              "target-datainsider-lake": sandbox.lake_row_count}
    rows = []
    try:
        for records in args.records:
            stream = stream_file(args.cache, records)
            expected = json.loads(last_line(stream))["value"]
            subjects = {
                "raw-orjson": (RAW, None),
                "target-graphitenote": ([str(VENV_BIN / "target-graphitenote"), "--config",
                                         "{config}"], config),
                "target-usmart": ([str(VENV_BIN / "target-usmart"), "--config", "{config}"],
                                  us_config),
            }
            if peer and records <= args.peer_max:
                subjects["target-csv"] = ([str(peer), "--config", "{config}"],
                                          {"output_path": "{workdir}"})
            for file_format in args.datatile_formats:
                label = "target-datatile" + (f" ({file_format})" if file_format else "")
                subjects[label] = ([str(VENV_BIN / "target-datatile"), "--config", "{config}"],
                                   datatile_config(sandbox.url, file_format))
                checks[label] = lambda label=label: sandbox.row_count(label)
            di_cmd = [str(VENV_BIN / "target-datainsider"), "--config", "{config}"]
            subjects["target-datainsider"] = (di_cmd, di_config)
            subjects["target-datainsider-lake"] = (di_cmd, di_lake_config)
            if args.subjects:
                subjects = {k: v for k, v in subjects.items() if k in args.subjects}
            for round_no in range(1, args.rounds + 1):
                for label, (cmd, cfg) in subjects.items():
                    workdir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=args.cache))
                    config_path = workdir / "config.json"
                    if cfg is not None:
                        config_path.write_text(json.dumps(cfg).replace("{workdir}", str(workdir)))
                    if label in checks:
                        sandbox.control("POST", "reset")
                    wall, rss, code, out = timed(
                        [c.replace("{config}", str(config_path)) for c in cmd], stream, workdir)
                    ok, states = code == 0, len(out)
                    if cfg is not None:
                        ok = ok and json.loads(out[-1] if out else "null") == expected
                    if label in checks:
                        ok = ok and checks[label]() == records
                    row = {"label": label, "records": records, "round": round_no,
                           "wall_s": round(wall, 3), "rec_per_s": round(records / wall),
                           "peak_rss_mb": round(rss, 1), "states_out": states, "ok": ok}
                    print(json.dumps(row), file=sys.stderr)
                    rows.append(row)
                    with args.results.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    shutil.rmtree(workdir, ignore_errors=True)
    finally:
        sandbox.stop()
    print(report(rows))
    return 0 if all(r["ok"] for r in rows) else 1


def datatile_config(url: str, file_format: str | None) -> dict:
    """target-datatile into the emulator's sandbox database (append-only: STATE at the end,
    once the processing job, which reads the whole file back, has finished)."""
    config = {"api_url": url + "/datatile/api/v2", "token": "dt-sandbox-token",
              "database_map": {"customers": "sandbox-database"}, "poll_interval": 0.5,
              "created_databases_file": "{workdir}/created.json"}
    return {**config, "file_format": file_format} if file_format else config


def report(rows: list[dict]) -> str:
    groups: dict[tuple[int, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["records"], row["label"]), []).append(row)
    median = {key: statistics.median(r["rec_per_s"] for r in runs)
              for key, runs in groups.items()}
    lines = ["| records | subject | runs | records/s (median) | peak RSS MB | "
             "x target-csv | / raw-orjson | STATE lines out | all correct |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for (records, label), runs in sorted(groups.items()):
        csv, raw = median.get((records, "target-csv")), median.get((records, "raw-orjson"))
        rate = median[(records, label)]
        lines.append(
            f"| {records:,} | {label} | {len(runs)} | {rate:,.0f} | "
            f"{statistics.median(r['peak_rss_mb'] for r in runs):,.0f} | "
            f"{f'{rate / csv:.1f}' if csv else '-'} | {f'{rate / raw:.2f}' if raw else '-'} | "
            f"{runs[-1]['states_out'] if label != 'raw-orjson' else '-'} | "
            f"{'yes' if all(r['ok'] for r in runs) else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
