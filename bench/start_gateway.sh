#!/usr/bin/env bash
# Start CoderClaw gateway as a column of the peer benchmark (../shared/bench/run_peers.sh):
#   bench/start_gateway.sh PORT UPSTREAM
# Writes a config in a throwaway state dir (baseUrl UPSTREAM/v1; primary and fallback
# huggingface/org/model-a; retries 0; discovery off so the catalog request does not count),
# then execs the gateway in the foreground on 127.0.0.1:PORT from the README's ./.venv.
set -euo pipefail
port=${1:?usage: start_gateway.sh PORT UPSTREAM}
upstream=${2:?usage: start_gateway.sh PORT UPSTREAM}
root=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$root/.venv/bin/coderclaw" ] || "$root/scripts/bootstrap" >&2
state=$(mktemp -d "${TMPDIR:-/tmp}/coderclaw-bench.XXXXXX")
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
  gateway: { retries: 0, bind: "loopback", port: ${port} },
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
exec "$root/.venv/bin/coderclaw" gateway run --port "$port"
