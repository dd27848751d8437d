"""Prints what landed in the sandbox, for people: `make demo` runs it after `meltano run`.

    target-sandbox show --data-dir .sandbox/demo --max-rows 3 | python demo/summary.py
    python demo/summary.py --data-dir .sandbox/demo [--dataset sandbox-dataset] [--rows 3]

With --data-dir it runs `target-sandbox show` itself (the one next to this Python).
Prints every platform's datasets or tables with rows; exits 1 when one of the platforms
holds none.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def _show(data_dir: str, rows: int) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("target-sandbox")
    command = str(exe) if exe.exists() else shutil.which("target-sandbox") or "target-sandbox"
    out = subprocess.run(
        [command, "show", "--data-dir", data_dir, "--max-rows", str(rows)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def _cell(value: Any, width: int = 40) -> str:
    text = "null" if value is None else value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _rows(lines: list[str], rows: list[dict[str, Any]], limit: int) -> None:
    shown = rows[:limit]
    if shown:
        lines.append(f"  first {len(shown)} rows:")
    for number, row in enumerate(shown, 1):
        cells = "  ".join(f"{key}={_cell(value)}" for key, value in row.items())
        lines.append(f"   {number}. {cells}")


def graphite_note(snapshot: dict[str, Any], only: str | None, rows: int) -> list[str]:
    datasets = snapshot.get("graphitenote", {}).get("datasets", {})
    lines: list[str] = []
    for code, dataset in datasets.items():
        if (only and code != only) or (not only and not dataset.get("row_count")):
            continue
        lines.append(
            f"Graphite Note dataset {code!r} ({dataset.get('name')}): "
            f"{dataset.get('row_count')} rows, {len(dataset.get('columns', []))} columns, "
            f"{dataset.get('fills')} fills, {dataset.get('completes')} completes"
        )
        columns = ", ".join(
            f"{c['name']} ({c.get('type')}/{c.get('subtype')})" for c in dataset.get("columns", [])
        )
        lines.append(f"  columns: {columns}")
        _rows(lines, dataset.get("rows", []), rows)
    return lines


def datainsider(snapshot: dict[str, Any], rows: int) -> list[str]:
    databases = snapshot.get("datainsider", {}).get("databases", {})
    lines: list[str] = []
    for db, database in databases.items():
        for name, table in database.get("tables", {}).items():
            if not table.get("row_count"):
                continue
            lines.append(
                f"DataInsider table {db}.{name} ({table.get('table_type')}): "
                f"{table.get('row_count')} rows, {len(table.get('columns', []))} columns, "
                f"{table.get('batch_calls')} batch + {table.get('csv_calls')} CSV inserts, "
                f"{table.get('truncates')} truncates"
            )
            columns = ", ".join(f"{c['name']} ({c['class_name']})" for c in table["columns"])
            lines.append(f"  columns: {columns}")
            _rows(lines, table.get("rows", []), rows)
    return lines


def usmart(snapshot: dict[str, Any], rows: int) -> list[str]:
    datasets = snapshot.get("usmart", {}).get("datasets", {})
    lines: list[str] = []
    for guid, dataset in datasets.items():
        for file_guid, file in dataset.get("files", {}).items():
            latest = file["revisions"][-1]
            lines.append(
                f"uSmart dataset {guid!r}, file {file['fileName']!r} ({file_guid}): "
                f"revision {latest['revision']}, {latest['rows']} rows, "
                f"{len(latest['columns'])} columns"
            )
            columns = ", ".join(f"{c['name']} ({c['type']})" for c in latest["columns"])
            lines.append(f"  columns: {columns}")
            _rows(lines, latest.get("data", []), rows)
        for pipeline, container in dataset.get("resourceContainers", {}).items():
            if container.get("refreshes"):
                lines.append(f"  output pipeline {pipeline!r}: {len(container['refreshes'])} "
                             "refreshes")
    return lines


def datatile(snapshot: dict[str, Any], rows: int) -> list[str]:
    databases = snapshot.get("datatile", {}).get("databases", {})
    lines: list[str] = []
    for key, database in databases.items():
        if not database.get("row_count"):
            continue
        jobs = [j for j in snapshot["datatile"].get("jobs", []) if j.get("database") == key]
        last = f"; last job: {jobs[-1]['action']} {jobs[-1]['status']}" if jobs else ""
        lines.append(
            f"DataTile database {key!r} ({database.get('name')}): "
            f"{database.get('row_count')} rows, {len(database.get('variables', []))} "
            f"variables, {database.get('loads')} loads{last}")
        variables = ", ".join(f"{v['name']} ({v['format']})" for v in database["variables"])
        lines.append(f"  variables: {variables}")
        _rows(lines, database.get("rows", []), rows)
    return lines


def summarise(snapshot: dict[str, Any], only: str | None, rows: int) -> tuple[str, bool]:
    lines: list[str] = []
    loaded = True
    for platform, found in (("Graphite Note", graphite_note(snapshot, only, rows)),
                            ("DataInsider", datainsider(snapshot, rows)),
                            ("uSmart", usmart(snapshot, rows)),
                            ("DataTile", datatile(snapshot, rows))):
        if not found:
            found = [f"No {platform} dataset or table holds any rows."]
            loaded = False
        lines += [*found, ""]
    return "\n".join(lines).rstrip(), loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="sandbox data dir (default: read JSON on stdin)")
    parser.add_argument("--dataset", help="only this dataset code (default: every non-empty)")
    parser.add_argument("--rows", type=int, default=3, help="rows to print per dataset")
    args = parser.parse_args(argv)
    snapshot = _show(args.data_dir, args.rows) if args.data_dir else json.load(sys.stdin)
    text, loaded = summarise(snapshot, args.dataset, args.rows)
    print(text)
    return 0 if loaded else 1


if __name__ == "__main__":
    sys.exit(main())
