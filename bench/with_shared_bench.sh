#!/usr/bin/env bash
# target-graphitenote next to the peers of ../shared/bench/BASELINES.md, with the shared
# driver and stream: raw orjson parse, target-graphitenote (sandbox in its own process),
# meltanolabs-target-csv; ROUNDS interleaved rounds, then the shared report table.
#   bash bench/with_shared_bench.sh [RECORDS=200000] [ROUNDS=3]
# Needs ../shared/bench beside the repository and the peer venv that
# ../shared/bench/run_baselines.sh builds (/tmp/singer-bench/venv-csv; bench/run.py builds
# it too).
set -euo pipefail
N=${1:-200000}
ROUNDS=${2:-3}
REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$REPO/../shared/bench}
PY=$REPO/.venv/bin/python
CSV=${PEER_DIR:-/tmp/singer-bench}/venv-csv/bin/target-csv
RESULTS=$(mktemp -d)/results.jsonl
DATA=$(mktemp -d)

"$REPO/.venv/bin/target-sandbox" serve --data-dir "$DATA" --port 0 > "$DATA.log" 2>&1 &
SANDBOX=$!
trap 'kill $SANDBOX 2>/dev/null; wait $SANDBOX 2>/dev/null; rm -rf "$DATA" "$DATA.log"' EXIT
for _ in $(seq 100); do grep -q '^sandbox listening on' "$DATA.log" && break; sleep 0.1; done
URL=$(head -1 "$DATA.log" | awk '{print $NF}')
CONFIG='{"api_token": "gn-sandbox-token", "user_code": "gn-sandbox-user",
 "api_url": "'$URL'/graphitenote/api", "dataset_code": "sandbox-dataset",
 "rate_limit_per_minute": 0}'

RUN="$PY $SHARED/bench.py run --records $N --runs 1 --results $RESULTS"
for round in $(seq "$ROUNDS"); do
  echo "== round $round" >&2
  $RUN --label raw-orjson -- "$PY" "$SHARED/bounds/parse_bound.py" --parser orjson
  $RUN --label target-graphitenote --config-json "$CONFIG" \
    -- "$REPO/.venv/bin/target-graphitenote" --config {config}
  if [ -x "$CSV" ]; then
    $RUN --label target-csv --config-json '{"output_path": "{tmpdir}"}' -- "$CSV" --config {config}
  fi
done
"$PY" "$SHARED/bench.py" report "$RESULTS" --bound raw-orjson
