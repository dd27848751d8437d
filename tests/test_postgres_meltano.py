"""Incremental end to end: PostgreSQL -> meltanolabs-tap-postgres -> Meltano -> each target
(target-graphitenote, target-datainsider, target-usmart: the same test, parametrized by
`Loader`).

A throwaway PostgreSQL cluster (port and socket of its own, 127.0.0.1 only, server time zone
Asia/Kolkata so the UTC conversion is really exercised) holds `orders`: 25,000 rows with
non-ASCII customers, numeric(12,2) amounts, NULL statuses and `updated_at` values that are a
permutation of the ids (so the bookmark order is not the id order). A temp Meltano project
installs the PyPI tap `meltanolabs-tap-postgres==0.10.0` and this checkout's loader, and loads
`public-orders` INCREMENTAL on `updated_at` into a sandbox in a process of its own.

- run 1 is SIGKILLed (the whole process group: meltano, tap, target) right after Meltano logged
  that it stored the first mid-run STATE. The tap (singer-sdk) emits STATE every 10,000
  records, a fixed `STATE_MSG_FREQUENCY` with no setting; hence 25,000 rows, and 700-row
  batches so STATE never falls on a batch boundary. The stored bookmark is below the maximum
  and every row at or below it is already in the dataset: the state is never ahead of the data.
- run 2 is a plain `meltano run` that resumes from that state. The killed run left its job
  RUNNING with a fresh heartbeat, so for 5 minutes `meltano run` refuses to start ("already
  running", checked) unless given `--force`; the test moves that heartbeat 6 minutes back in
  Meltano's system DB instead of waiting, and Meltano then fails the stale job itself. Run 2
  adds exactly the rows at or after the bookmark (the SDK re-reads the bookmark value itself,
  `>=`): in the end every source row is there, and only rows at or after the bookmark twice.
  Values: amount numeric, updated_at `YYYY-MM-DD HH:MM:SS` UTC, non-ASCII intact, NULL kept.
- 10 new rows with a later updated_at, run 3: only those (plus the re-read boundary row) land.

Needs PostgreSQL's server binaries (`make test` installs the Debian package when they are
missing; the test is skipped without them outside CI, and fails in CI) and `.venv-meltano`.
As root, the cluster runs as the `postgres` user (initdb refuses root).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
MELTANO = Path(os.environ.get("MELTANO_BIN", REPO / ".venv-meltano" / "bin" / "meltano"))
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
TAP_PIP_URL = "meltanolabs-tap-postgres==0.10.0"
STREAM = "public-orders"
DATASET = "sandbox-dataset"
ROWS = 25_000  # the tap emits STATE every 10,000 records: two mid-run STATEs
BATCH_ROWS = 700  # 10,000 is no multiple of it: a STATE always waits on a part-filled batch
PG_USER, PG_PASSWORD, PG_DB = "tapper", "tap-secret-Ü", "shop"
STATE_STORED = "Incremental state has been updated"  # Meltano logs it once the state is saved
CUSTOMERS = ["Zoë Ångström", "José Müller", "Łukasz Żółć", "Søren Kierkegård", "李雷",
             "Renée O'Hara"]  # fmt: skip


def _pg_bin() -> Path | None:
    """Debian's /usr/lib/postgresql/<version>/bin (newest), else initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(re.sub(r"\D", "", p.split("/")[4]) or 0))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


PG_BIN = _pg_bin()
if PG_BIN is None and not IN_CI:
    pytest.skip("PostgreSQL server binaries are missing (`make test` installs them)",
                allow_module_level=True)


def _require(condition: bool, message: str) -> None:
    if not condition:
        pytest.fail(message, pytrace=False)


# -- PostgreSQL -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Postgres:
    port: int
    socket_dir: Path

    def psql(self, sql: str, *, database: str = PG_DB) -> str:
        """Run SQL over TCP with the password (as the tap connects); unaligned output."""
        assert PG_BIN is not None
        result = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, "-d", database],
            input=sql, capture_output=True, text=True, timeout=60, check=False,
            env={**_clean_env(), "PGPASSWORD": PG_PASSWORD, "PGCLIENTENCODING": "UTF8"},
        )
        assert result.returncode == 0, f"psql failed:\n{sql[:500]}\n{result.stderr}"
        return result.stdout

    def orders(self) -> dict[int, dict[str, Any]]:
        out = self.psql(
            "SELECT id, customer, amount, coalesce(status, '\\N'),"
            " to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
            " FROM orders ORDER BY id"
        )
        rows = {}
        for line in out.splitlines():
            id_, customer, amount, status, updated = line.split("\t")
            rows[int(id_)] = {"customer": customer, "amount": Decimal(amount),
                              "status": None if status == "\\N" else status,
                              "updated_at": updated}
        return rows


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    _require(PG_BIN is not None, "CI is set and PostgreSQL's server binaries are missing: "
             "`make test` installs them (apt-get install postgresql)")
    assert PG_BIN is not None
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the `postgres` user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root and there is no `postgres` user to run the cluster",
                        pytrace=False)
        as_user = ["runuser", "-u", "postgres", "--"]
    # not under tmp_path: pytest's base dir is 0700 root, so `postgres` could not reach it
    base = Path(tempfile.mkdtemp(prefix="pg-meltano-"))
    data, log = base / "data", base / "server.log"
    pwfile = base / "pwfile"
    pwfile.write_text(PG_PASSWORD + "\n", encoding="utf-8")
    if owner is not None:
        for path in (base, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    started = False
    try:
        initdb = subprocess.run(
            [*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-E", "UTF8", "--no-locale",
             "-U", PG_USER, f"--pwfile={pwfile}", "--auth-local=trust",
             "--auth-host=scram-sha-256", "--no-sync"],
            capture_output=True, text=True, timeout=120, check=False, env=_clean_env(),
        )
        assert initdb.returncode == 0, f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}"
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c timezone=Asia/Kolkata"
                   " -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        start = subprocess.run(
            [*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
             "-t", "60", "-o", options, "start"],
            capture_output=True, text=True, timeout=90, check=False, env=_clean_env(),
        )
        started = start.returncode == 0
        assert started, (f"pg_ctl start failed:\n{start.stdout}\n{start.stderr}\n"
                         f"{log.read_text(errors='replace') if log.exists() else ''}")
        yield Postgres(port=port, socket_dir=base)
    finally:
        if started:
            subprocess.run([*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                            "-w", "-t", "60", "stop"],
                           capture_output=True, timeout=90, check=False, env=_clean_env())
        shutil.rmtree(base, ignore_errors=True)


def _seed(pg: Postgres) -> None:
    names = ", ".join("'" + name.replace("'", "''") + "'" for name in CUSTOMERS)
    pg.psql(f"CREATE DATABASE {PG_DB}", database="postgres")
    pg.psql(f"""
        CREATE TABLE orders (
            id serial PRIMARY KEY,
            customer text NOT NULL,
            amount numeric(12,2) NOT NULL,
            status text,
            updated_at timestamptz NOT NULL
        );
        -- updated_at: one second apart, in an order unrelated to id (7919 is prime)
        INSERT INTO orders (customer, amount, status, updated_at)
        SELECT (ARRAY[{names}])[1 + g % {len(CUSTOMERS)}] || ' #' || g,
               ((g * 7907) % 10000000) / 100.0,
               CASE WHEN g % 7 = 0 THEN NULL ELSE (ARRAY['new','paid','shipped'])[1 + g % 3] END,
               timestamptz '2024-01-01 00:00:00+00' + ((g * 7919) % {ROWS}) * interval '1 second'
        FROM generate_series(1, {ROWS}) AS g;
        ANALYZE orders;
    """)


# -- sandbox ----------------------------------------------------------------------------------


def _shown(sandbox_url: str) -> dict[str, Any]:
    response = requests.get(f"{sandbox_url}/_sandbox/state", timeout=60)
    response.raise_for_status()
    return response.json()


@dataclass(frozen=True)
class Loader:
    """What the test needs to know of one target: its config and where its rows land."""

    name: str
    config: Callable[[str], dict[str, Any]]
    """sandbox URL -> the loader's config in the temp project."""
    batch_route: str
    table: Callable[[dict[str, Any]], dict[str, Any]]
    """`/_sandbox/state` -> the dataset or table the orders land in."""
    column_types: dict[str, str]
    """Column -> its platform type (GN subtype, DataInsider class_name)."""

    @property
    def state_id(self) -> str:
        return f"dev:tap-postgres-to-{self.name}"

    def landed(self, sandbox_url: str) -> list[dict[str, Any]]:
        return self.table(_shown(sandbox_url))["rows"]

    def types(self, sandbox_url: str) -> dict[str, str]:
        columns = self.table(_shown(sandbox_url))["columns"]
        return {c["name"]: c.get("subtype") or c["class_name"] for c in columns}


LOADERS = [
    Loader("target-graphitenote",
           lambda url: {"api_url": f"{url}/graphitenote/api", "api_token": "gn-sandbox-token",
                        "user_code": "gn-sandbox-user", "dataset_code": DATASET},
           "/graphitenote/api/dataset-fill",
           lambda shown: shown["graphitenote"]["datasets"][DATASET],
           {"amount": "numeric", "updated_at": "datetime"}),
    Loader("target-datainsider",
           lambda url: {"api_url": f"{url}/datainsider/api", "api_key": "di-sandbox-key",
                        "database": "shop"},
           "/datainsider/api/ingestion/batch",
           lambda shown: shown["datainsider"]["databases"]["shop"]["tables"]["public_orders"],
           {"id": "int64", "amount": "double", "updated_at": "datetime64"}),
    Loader("target-usmart",
           # files of ~100 kB, each registered and refreshed alone: STATE moves mid-run
           lambda url: {"api_url": f"{url}/usmart", "org_guid": "sandbox-org",
                        "api_key_id": "us-sandbox-key-id",
                        "api_key_secret": "us-sandbox-key-secret", "dataset_guid": DATASET,
                        "max_file_bytes": 100_000},
           "/usmart/s3/*",
           lambda shown: _usmart_table(shown["usmart"]["datasets"][DATASET]),
           {"id": "number", "amount": "number", "updated_at": "datetime"}),
]


def _usmart_table(dataset: dict[str, Any]) -> dict[str, Any]:
    """A uSmart dataset's files (latest revisions, in creation order) as one table; its
    ISO 8601 UTC date-times (`...Z`) shown as `YYYY-MM-DD HH:MM:SS`, the instant checked."""
    rows, columns = [], []
    for file in dataset["files"].values():
        revision = file["revisions"][-1]
        columns = [{"name": c["name"], "class_name": c["type"]} for c in revision["columns"]]
        for row in revision["data"]:
            assert row["updated_at"].endswith("Z"), row
            rows.append({**row, "updated_at": _utc(row["updated_at"].replace("Z", "+00:00"))})
    return {"rows": rows, "columns": columns}


# -- Meltano ----------------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    drop = ("TARGET_GRAPHITENOTE_", "TARGET_USMART_", "TARGET_DATATILE_", "TAP_POSTGRES_",
            "MELTANO_", "VIRTUAL_ENV", "PG")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _meltano_env() -> dict[str, str]:
    return {
        **_clean_env(),
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "MELTANO_CLI_DISABLE_VERSION_CHECK": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "TAP_POSTGRES_PASSWORD": PG_PASSWORD,  # sensitive: not in meltano.yml
    }


def _setting(name: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, **extra}


def _write_project(root: Path, pg: Postgres, sandbox_url: str, target: Loader) -> None:
    """meltano.yml: the repo's loader (from this checkout) and a custom tap-postgres."""
    repo_project = yaml.safe_load((REPO / "meltano.yml").read_text(encoding="utf-8"))
    (loader,) = [p for p in repo_project["plugins"]["loaders"] if p["name"] == target.name]
    loader["pip_url"] = f"-e {REPO}"
    loader["config"] = {
        **target.config(sandbox_url),  # the sandbox's fixed credentials
        "load_method": "append-only",
        "rate_limit_per_minute": 0,
        "batch_size_rows": BATCH_ROWS,
    }
    extractor = {
        "name": "tap-postgres",
        "namespace": "tap_postgres",
        "pip_url": TAP_PIP_URL,
        "executable": "tap-postgres",
        "capabilities": ["catalog", "discover", "state", "about", "stream-maps",
                         "schema-flattening", "activate-version", "structured-logging"],
        "settings_group_validation": [["host", "port", "user", "password", "database"]],
        "settings": [  # names as `tap-postgres --about` lists them
            _setting("host"),
            _setting("port", "integer"),
            _setting("user"),
            _setting("password", sensitive=True),
            _setting("database"),
            _setting("sqlalchemy_url", sensitive=True),
            _setting("filter_schemas", "array"),
            _setting("dates_as_string", "boolean"),
            _setting("json_as_object", "boolean"),
            _setting("default_replication_method"),
            _setting("max_record_count", "integer"),
            _setting("stream_options", "object"),
            _setting("ssl_enable", "boolean"),
            _setting("ssl_mode"),
            _setting("stream_maps", "object"),
            _setting("flattening_enabled", "boolean"),
        ],
        "config": {"host": "127.0.0.1", "port": pg.port, "user": PG_USER, "database": PG_DB,
                   "filter_schemas": ["public"]},
        "select": [f"{STREAM}.*"],
        "metadata": {STREAM: {"replication-method": "INCREMENTAL",
                              "replication-key": "updated_at"}},
    }
    project = {
        "requires_meltano": ">=4.4,<5",
        "project_id": "0d6c1f0e-2b7a-4f3e-9a51-7c4e2f8b9d10",
        "send_anonymous_usage_stats": False,
        "cli": {"disable_version_check": True},
        "default_environment": "dev",
        "environments": [{"name": "dev"}],
        "plugins": {"extractors": [extractor], "loaders": [loader]},
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "meltano.yml").write_text(yaml.safe_dump(project, sort_keys=False,
                                                     allow_unicode=True), encoding="utf-8")


def _meltano(project: Path, *args: str, timeout: float = 120,
             expect: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(MELTANO), *args], cwd=project, env=_meltano_env(),
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == expect, (
        f"meltano {' '.join(args)} exited {result.returncode} (expected {expect})\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-6000:]}"
    )
    return result


def _stored_bookmark(project: Path, state_id: str) -> str | None:
    """The bookmark in Meltano's system DB, read directly (fast enough to poll mid-run)."""
    db = project / ".meltano" / "meltano.db"
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
        row = con.execute("SELECT partial_state, completed_state FROM state WHERE state_id = ?",
                          (state_id,)).fetchone()
    for blob in row or ():
        if blob:
            value = json.loads(blob).get("singer_state", {}).get("bookmarks", {}).get(STREAM, {})
            if value.get("replication_key_value"):
                return value["replication_key_value"]
    return None


def _system_db(project: Path) -> sqlite3.Connection:
    return sqlite3.connect(project / ".meltano" / "meltano.db", timeout=10)


def _age_running_jobs(project: Path, state_id: str) -> None:
    """Move the heartbeat of RUNNING jobs 6 minutes back, as if the next run came that much
    later (Meltano 4.4 fails a RUNNING job as stale after 5 minutes without a heartbeat)."""
    with contextlib.closing(_system_db(project)) as con, con:
        aged = con.execute(
            "UPDATE runs SET last_heartbeat_at = datetime(last_heartbeat_at, '-6 minutes')"
            " WHERE job_name = ? AND state = 'RUNNING'", (state_id,)).rowcount
    assert aged == 1, "expected exactly one RUNNING job: the killed run"


def _job_states(project: Path, state_id: str) -> list[str]:
    with contextlib.closing(_system_db(project)) as con:
        return [state for (state,) in con.execute(
            "SELECT state FROM runs WHERE job_name = ? ORDER BY id", (state_id,))]


def _state_get(project: Path, state_id: str) -> dict[str, Any]:
    """The state the next run will pass to the tap (`meltano state get`)."""
    out = _meltano(project, "state", "get", state_id).stdout
    return json.loads(out)["singer_state"]["bookmarks"][STREAM]


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies waiting for a reaper do not)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
                return True
    return False


def _run_and_kill(project: Path, loader: Loader, sign: Callable[[str], bool],
                  missing: str) -> None:
    """`meltano run` in a session of its own, SIGKILLed (meltano, the tap and the target)
    right after a line of its log passes `sign`; fails saying `missing` if none does."""

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # meltano, the tap and the target

    proc = subprocess.Popen(
        [str(MELTANO), "run", "tap-postgres", loader.name], cwd=project,
        env=_meltano_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    watchdog = threading.Timer(120, kill)
    watchdog.start()
    log: list[str] = []
    seen = False
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            if sign(line):
                seen = True
                kill()
                break
    finally:
        watchdog.cancel()
        kill()
        proc.wait(timeout=30)
    if not seen:
        pytest.fail(f"meltano run ended ({proc.returncode}) {missing}:\n" + "".join(log[-60:]))
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid):
        assert time.monotonic() < deadline, "processes of the killed meltano run still run"
        time.sleep(0.05)


def _run_and_kill_after_first_state(project: Path, loader: Loader) -> str:
    """`meltano run`, SIGKILLed right after Meltano stored a state with a bookmark (it logs
    STATE_STORED once the state is saved). The bookmark."""
    found: list[str] = []

    def stored(line: str) -> bool:
        bookmark = STATE_STORED in line and _stored_bookmark(project, loader.state_id)
        if bookmark:
            found.append(bookmark)
        return bool(bookmark)

    _run_and_kill(project, loader, stored, "before it stored a STATE with a bookmark")
    return found[0]


def _utc(value: str) -> str:
    return dt.datetime.fromisoformat(value).astimezone(dt.UTC).strftime(
        "%Y-%m-%d %H:%M:%S")


def _check_values(landed: list[dict[str, Any]], source: dict[int, dict[str, Any]]) -> None:
    for row in landed:
        expected = source[row["id"]]
        where = f"order {row['id']}"
        assert row["customer"] == expected["customer"], where
        assert isinstance(row["amount"], (int, float)), where
        assert Decimal(str(row["amount"])) == expected["amount"], where
        assert row["status"] == expected["status"], where
        # DataInsider's DateTime64(3) shows milliseconds: postgres' are 0 here
        assert row["updated_at"] in (expected["updated_at"], expected["updated_at"] + ".000"), \
            where


# -- the test ---------------------------------------------------------------------------------


@pytest.mark.parametrize("loader", LOADERS, ids=[loader.name for loader in LOADERS])
def test_killed_incremental_run_resumes_from_meltano_state(
    postgres: Postgres, sandbox_url: str, tmp_path: Path, loader: Loader
) -> None:
    _require(MELTANO.exists(), f"{MELTANO} is missing: `make meltano-venv` installs it")
    _seed(postgres)
    source = postgres.orders()
    assert len(source) == ROWS
    assert any(not name.isascii() for name in (r["customer"] for r in source.values()))
    project = tmp_path / "project"
    _write_project(project, postgres, sandbox_url, loader)
    _meltano(project, "install", timeout=300)

    # run 1: killed right after Meltano stored the first mid-run STATE
    requests.post(f"{sandbox_url}/_sandbox/faults", timeout=10, json={
        "path": loader.batch_route, "delay": 0.05, "times": 10_000,
    }).raise_for_status()  # slower fills: the run is still going when the state is stored
    raw_bookmark = _run_and_kill_after_first_state(project, loader)
    requests.delete(f"{sandbox_url}/_sandbox/faults", timeout=10).raise_for_status()
    stored = _state_get(project, loader.state_id)
    assert stored["replication_key"] == "updated_at"
    assert stored["replication_key_value"] == raw_bookmark
    bookmark = _utc(raw_bookmark)
    last = max(row["updated_at"] for row in source.values())
    assert bookmark < last, "the kill came too late to test anything"
    up_to = {i for i, row in source.items() if row["updated_at"] <= bookmark}
    assert len(up_to) == 10_000  # the tap's first STATE comes after 10,000 records
    after_run1 = loader.landed(sandbox_url)
    landed_ids = {row["id"] for row in after_run1}
    assert up_to <= landed_ids, "Meltano stored a STATE ahead of the data in the dataset"
    assert len(after_run1) < ROWS

    # run 2: within 5 minutes of the kill a plain `meltano run` refuses (the killed job is
    # still RUNNING with a fresh heartbeat); once its heartbeat is older than that, a plain
    # `meltano run` marks it failed and resumes from the stored state
    refused = _meltano(project, "run", "tap-postgres", loader.name, expect=1)
    assert "is already running" in refused.stderr + refused.stdout
    assert len(loader.landed(sandbox_url)) == len(after_run1)
    _age_running_jobs(project, loader.state_id)  # instead of waiting 5 minutes
    _meltano(project, "run", "tap-postgres", loader.name)
    # the killed run: failed as stale
    assert _job_states(project, loader.state_id) == ["FAIL", "SUCCESS"]
    after_run2 = loader.landed(sandbox_url)
    added = Counter(row["id"] for row in after_run2[len(after_run1):])
    from_bookmark = {i for i, row in source.items() if row["updated_at"] >= bookmark}
    assert set(added) == from_bookmark, "run 2 did not start at the stored bookmark"
    assert max(added.values()) == 1
    ids = Counter(row["id"] for row in after_run2)
    assert set(ids) == set(source), "rows were lost"
    doubled = {i for i, n in ids.items() if n > 1}
    assert all(source[i]["updated_at"] >= bookmark for i in doubled), (
        "only rows at or after the bookmark may be loaded twice")
    _check_values(after_run2, source)
    types = loader.types(sandbox_url)
    assert {name: types[name] for name in loader.column_types} == loader.column_types
    final = _state_get(project, loader.state_id)
    assert _utc(final["replication_key_value"]) == last

    # run 3: 10 new rows with a later updated_at -> only they land (plus the boundary row the
    # SDK re-reads with `updated_at >= bookmark`)
    _run_incrementally(postgres, project, sandbox_url, loader, len(after_run2), last,
                       _check_values)


def _run_incrementally(postgres: Postgres, project: Path, sandbox_url: str, loader: Loader,
                       landed_before: int, last: str,
                       check: Callable[[list[dict[str, Any]], dict[int, dict[str, Any]]], None],
                       ) -> None:
    """10 new rows with a later updated_at, one more `meltano run`: only they land (plus
    the boundary row the SDK re-reads with `updated_at >= bookmark`), values checked."""
    postgres.psql(
        "INSERT INTO orders (customer, amount, status, updated_at) "
        "SELECT 'Nüwe Kunde ' || g, g * 1.25, NULL, "
        "timestamptz '2024-02-01 12:00:00+01' + g * interval '1 minute' "
        "FROM generate_series(1, 10) AS g"
    )
    source = postgres.orders()
    new_ids = set(sorted(source)[-10:])
    _meltano(project, "run", "tap-postgres", loader.name)
    after = loader.landed(sandbox_url)
    added = Counter(row["id"] for row in after[landed_before:])
    boundary = {i for i, row in source.items() if row["updated_at"] == last}
    assert new_ids <= set(added) <= new_ids | boundary, added
    assert max(added.values()) == 1
    check(after[landed_before:], source)
    newest = max(source[i]["updated_at"] for i in new_ids)
    assert _utc(_state_get(project, loader.state_id)["replication_key_value"]) == newest


# -- file targets: a stream's file is confirmed at the end of the run ------------------------

@dataclass(frozen=True)
class FileLoader(Loader):
    """A file target: how its landed values look (`check`) and its columns' types."""

    check: Callable[[list[dict[str, Any]], dict[int, dict[str, Any]]], None] = \
        lambda landed, source: _check_file_values(landed, source)
    file_types: Callable[[dict[str, Any]], dict[str, str]] = \
        lambda table: {v["name"]: v["type"] for v in table["variables"]}
    """The loader's table (as `table` gives it) -> column -> its platform type."""


FILE_LOADERS = [
    FileLoader("target-datatile",
           lambda url: {"api_url": f"{url}/datatile/api/v2", "token": "dt-sandbox-token",
                        "database_map": {STREAM: "sandbox-database"}, "poll_interval": 0.1},
           "/datatile/api/v2/upload/*",
           lambda shown: shown["datatile"]["databases"]["sandbox-database"],
           {"id": "numeric", "amount": "numeric", "updated_at": "datetime"}),
    FileLoader("target-datainsider",  # mode lake
               lambda url: {"api_url": f"{url}/datainsider/api", "api_key": "di-sandbox-key",
                            "mode": "lake"},
               "/datainsider/api/lake/file/upload",
               lambda shown: _lake_directory(shown["datainsider"]["lake"]),
               {"id": "int64", "amount": "double", "updated_at": "timestamp[us, tz=UTC]"},
               check=lambda landed, source: _check_parquet_values(landed, source),
               file_types=lambda table: {name: kind for file in table["files"]
                                         for name, kind in file["columns"].items()}),
]
FILE_STREAM_SEEN = "Stream 'public-orders' -> "  # the target's line at the stream's SCHEMA


def _run_and_kill_mid_stream(project: Path, loader: Loader) -> None:
    """`meltano run`, SIGKILLed (the whole group) as soon as the target logged that the
    stream's rows are coming: mid-stream, long before its file could be finished."""
    _run_and_kill(project, loader, lambda line: FILE_STREAM_SEEN in line,
                  "before the target saw the stream")


def _check_file_values(landed: list[dict[str, Any]], source: dict[int, dict[str, Any]]) -> None:
    """SPSS: numbers are doubles, date-times ISO text in UTC, a NULL text is ""."""
    for row in landed:
        expected = source[row["id"]]
        where = f"order {row['id']}"
        assert row["customer"] == expected["customer"], where
        assert Decimal(str(row["amount"])) == expected["amount"], where
        assert row["status"] == (expected["status"] or ""), where
        assert row["updated_at"] == expected["updated_at"].replace(" ", "T") + ".000000", where


LAKE_DIRECTORY = "/data/singer/public_orders"  # lake_path_prefix + the sanitised stream


def _lake_directory(lake: dict[str, Any]) -> dict[str, Any]:
    """The orders' lake directory (all its Parquet files' rows), empty before any file."""
    return lake["directories"].get(LAKE_DIRECTORY, {"files": [], "row_count": 0, "rows": []})


def _check_parquet_values(landed: list[dict[str, Any]],
                          source: dict[int, dict[str, Any]]) -> None:
    """Parquet: numbers are doubles, date-times `timestamp[us, UTC]` (shown as text with
    microseconds and `Z`), NULL kept."""
    for row in landed:
        expected = source[row["id"]]
        where = f"order {row['id']}"
        assert row["customer"] == expected["customer"], where
        assert isinstance(row["amount"], float), where
        assert Decimal(str(row["amount"])) == expected["amount"], where
        assert row["status"] == expected["status"], where
        assert row["updated_at"] == expected["updated_at"] + ".000000Z", where


@pytest.mark.parametrize("loader", FILE_LOADERS, ids=[loader.name for loader in FILE_LOADERS])
def test_killed_file_load_resumes_with_nothing_lost_or_doubled(
    postgres: Postgres, sandbox_url: str, tmp_path: Path, loader: FileLoader
) -> None:
    """Run 1 is SIGKILLed mid-stream: no file was finished, so nothing landed and Meltano
    stored no state. Run 2 (the stale job aged as above) loads every row exactly once, with
    the values of the source. Run 3, incremental, adds only the new rows (plus the boundary
    row the tap re-reads)."""
    _require(MELTANO.exists(), f"{MELTANO} is missing: `make meltano-venv` installs it")
    _seed(postgres)
    source = postgres.orders()
    project = tmp_path / "project"
    _write_project(project, postgres, sandbox_url, loader)
    _meltano(project, "install", timeout=300)

    _run_and_kill_mid_stream(project, loader)
    assert _stored_bookmark(project, loader.state_id) is None
    shown = _shown(sandbox_url)
    assert loader.table(shown)["row_count"] == 0, "a partial file was loaded"

    _age_running_jobs(project, loader.state_id)
    _meltano(project, "run", "tap-postgres", loader.name)
    assert _job_states(project, loader.state_id) == ["FAIL", "SUCCESS"]
    landed = loader.landed(sandbox_url)
    assert sorted(row["id"] for row in landed) == sorted(source), "lost or doubled"
    loader.check(landed, source)
    types = loader.file_types(loader.table(_shown(sandbox_url)))
    assert {name: types[name] for name in loader.column_types} == loader.column_types
    last = max(row["updated_at"] for row in source.values())
    assert _utc(_state_get(project, loader.state_id)["replication_key_value"]) == last

    _run_incrementally(postgres, project, sandbox_url, loader, len(landed), last, loader.check)
