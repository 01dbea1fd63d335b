"""The gateway as a long-running service: daemon lifecycle and systemd/launchd install."""
