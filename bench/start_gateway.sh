#!/usr/bin/env bash
# Start CoderClaw gateway as a column of the peer benchmark (../shared/bench/run_peers.sh):
#   bench/start_gateway.sh PORT UPSTREAM
# Writes a config in a throwaway state dir (baseUrl UPSTREAM/v1; primary and fallback
# huggingface/org/model-a; retries 0; discovery off so the catalog request does not count),
# then execs the gateway in the foreground on 127.0.0.1:PORT.
# It runs from bench/.venv: the project with its runtime dependencies only, as a user installs
# it (./.venv also has the test tools, whose extra packages change what the gateway imports:
# rich, pulled in by schemathesis, makes structlog load ~3 MiB more). BENCH_VENV overrides it.
set -euo pipefail
port=${1:?usage: start_gateway.sh PORT UPSTREAM}
upstream=${2:?usage: start_gateway.sh PORT UPSTREAM}
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${BENCH_VENV:-$root/bench/.venv}
if [ ! -x "$venv/bin/coderclaw" ] || [ "$root/pyproject.toml" -nt "$venv/bin/coderclaw" ]; then
  "${PYTHON:-python3}" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root" >&2
fi
state=$(mktemp -d "${TMPDIR:-/tmp}/coderclaw-bench.XXXXXX")
# BENCH_REDIS_URL (e.g. redis://127.0.0.1:6390/0): the shared state of several replicas, with a
# daily budget that is never reached, so that every request is admitted by the shared budget
# script and adds its spend (the most Redis work a request does; issue 15).
shared=""
if [ -n "${BENCH_REDIS_URL:-}" ]; then
  shared="state: { redis: { url: \"${BENCH_REDIS_URL}\" } },"
  budget="budget: { dailyUsd: 1000000 },"
fi
cat > "$state/coderclaw.json" <<JSON
{
  agents: { defaults: { model: {
    primary: "huggingface/org/model-a",
    fallbacks: ["huggingface/org/model-a"],
  } } },
  models: { providers: { huggingface: {
    baseUrl: "${upstream%/}/v1",
    discovery: { enabled: false },
  } } },
  gateway: { retries: 0, bind: "loopback", port: ${port}, ${budget:-} },
  ${shared}
  logging: { level: "${BENCH_LOG_LEVEL:-info}", format: "json" },
}
JSON
# The harness sends 'Authorization: Bearer $BENCH_KEY': make it the gateway token when given.
if [ -n "${BENCH_KEY:-}" ]; then
  printf 'CODERCLAW_GATEWAY_TOKEN=%s\n' "$BENCH_KEY" > "$state/.env"
fi
printf 'HF_TOKEN=hf_benchmarkdummytoken000000\n' >> "$state/.env"
chmod 600 "$state/.env"
export CODERCLAW_STATE_DIR="$state"
# BENCH_WRAP: a command to run the gateway under (bench/instructions.py: valgrind).
# shellcheck disable=SC2086
exec ${BENCH_WRAP:-} "$venv/bin/coderclaw" gateway run --port "$port"
