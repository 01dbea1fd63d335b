#!/usr/bin/env bash
# One-command install of the CoderClaw gateway on a fresh machine (Linux with systemd, or macOS).
#
#   HF_TOKEN=hf_... deploy/install.sh [--port N] [--no-service] [--no-link] [SOURCE]
#
# 1. creates a virtualenv in $STATE/venv ($STATE = CODERCLAW_STATE_DIR, else
#    ${CODERCLAW_HOME:-$HOME}/.coderclaw), with ${PYTHON:-python3} (3.11 or newer);
# 2. pip-installs SOURCE into it: a path or a pip requirement, by default the checkout this
#    script sits in; extra pip options can come in CODERCLAW_PIP_ARGS;
# 3. links ~/.local/bin/coderclaw to the venv's command (unless --no-link);
# 4. when HF_TOKEN is set: `coderclaw onboard --non-interactive --mode local
#    --auth-choice huggingface-api-key` (validates the token, saves it to $STATE/.env, 0600);
# 5. unless --no-service: `coderclaw gateway install [--port N]` (systemd user unit / launchd
#    agent, enabled and started).
# Safe to run again: it reuses the venv and upgrades the install. The token is passed to
# onboarding through the environment, never on a command line.
set -euo pipefail

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}

service=1
link=1
port=""
source=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-service) service=0 ;;
    --no-link) link=0 ;;
    --port) [ $# -ge 2 ] || die "--port needs a number"; port="$2"; shift ;;
    --port=*) port="${1#*=}" ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *)
      [ -z "$source" ] || { echo "install.sh: one SOURCE only (got $source and $1)" >&2; exit 2; }
      source="$1"
      ;;
  esac
  shift
done
if [ -n "$port" ] && ! [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1 && "$port" -le 65535 ]]; then
  echo "install.sh: --port $port is not a port number (1-65535)" >&2
  exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -z "$source" ]; then
  source="$(dirname "$here")"
  [ -f "$source/pyproject.toml" ] || die "no checkout around $here: pass SOURCE (a path or requirement)"
fi

home="${CODERCLAW_HOME:-$HOME}"
state="${CODERCLAW_STATE_DIR:-$home/.coderclaw}"
venv="$state/venv"
py="${PYTHON:-python3}"

command -v "$py" >/dev/null 2>&1 || die "$py not found: install Python 3.11+ or set PYTHON=/path/to/python3"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$py is Python $("$py" -c 'import sys; print(*sys.version_info[:2], sep=".")'); CoderClaw needs 3.11+ (set PYTHON=...)"

umask 077
mkdir -p "$state"
chmod 700 "$state"

if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv"
  "$py" -m venv "$venv" || die "'$py -m venv' failed; on Debian/Ubuntu: sudo apt-get install python3-venv"
fi
echo "==> installing $source"
target="$source"
if [ -d "$source" ]; then
  # Build from a clean copy: an in-tree build would leave build/ in the checkout and could
  # package stale modules from an earlier build/lib.
  copy="$(mktemp -d)"
  trap 'rm -rf "$copy"' EXIT
  tar -C "$source" -cf - --exclude=./.git --exclude=./.venv --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache --exclude=.mypy_cache \
    --exclude=.ruff_cache . | tar -C "$copy" -xf -
  target="$copy"
fi
# shellcheck disable=SC2086 # CODERCLAW_PIP_ARGS is a list of options
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade \
  ${CODERCLAW_PIP_ARGS:-} "$target"
"$venv/bin/coderclaw" --version

cmd="$venv/bin/coderclaw"
if [ "$link" = 1 ]; then
  bin="$home/.local/bin"
  mkdir -p "$bin"
  if [ -e "$bin/coderclaw" ] && [ "$(readlink "$bin/coderclaw" || true)" != "$cmd" ]; then
    echo "note: $bin/coderclaw exists and is not ours; left alone (use $cmd)"
  else
    ln -sfn "$cmd" "$bin/coderclaw"
    cmd="coderclaw"
    case ":$PATH:" in
      *":$bin:"*) ;;
      *) echo "note: add $bin to your PATH to run 'coderclaw' (or use $venv/bin/coderclaw)"; cmd="$bin/coderclaw" ;;
    esac
  fi
fi

if [ -n "${HF_TOKEN:-}" ]; then
  echo "==> onboarding with the token in HF_TOKEN"
  "$venv/bin/coderclaw" onboard --non-interactive --mode local \
    --auth-choice huggingface-api-key
else
  echo "note: HF_TOKEN is not set; set up the token later with: $cmd onboard --auth-choice huggingface-api-key"
fi

if [ "$service" = 1 ]; then
  echo "==> installing the service"
  "$venv/bin/coderclaw" gateway install ${port:+--port "$port"} \
    || die "the service did not install (see above); the gateway also runs in the foreground: $cmd gateway"
else
  echo "service not installed (--no-service): run '$cmd gateway' in the foreground, or '$cmd gateway install'"
fi
echo "done: $cmd gateway status"
