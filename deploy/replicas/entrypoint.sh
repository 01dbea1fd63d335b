#!/bin/sh
# Put the mounted config (/etc/coderclaw/coderclaw.json) into the state dir, owned by this user
# with mode 0600: the gateway refuses a config that another user owns or others may write, which
# is what a bind mount or a Kubernetes ConfigMap gives. Then run the command.
set -eu
state="${CODERCLAW_STATE_DIR:-$HOME/.coderclaw}"
mkdir -p -m 0700 "$state"
mounted="${CODERCLAW_MOUNTED_CONFIG:-/etc/coderclaw/coderclaw.json}"
if [ -f "$mounted" ]; then
  cp "$mounted" "$state/coderclaw.json.new"
  chmod 0600 "$state/coderclaw.json.new"
  mv "$state/coderclaw.json.new" "$state/coderclaw.json"
fi
exec "$@"
