"""``coderclaw gateway install|uninstall|start|stop|restart|status``: the gateway as a service.

Install needs a valid config (the service would only exit 78 otherwise); the other commands
work with a broken one, so a broken service can still be stopped, inspected and removed.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from gateway.cli.common import echo_json, settings_or_exit
from gateway.errors import ConfigError
from gateway.service import manager
from gateway.settings import current_environ

# `status` exit codes, as `systemctl status` and LSB init scripts use them.
_EXIT_NOT_RUNNING = 3
_EXIT_UNKNOWN = 4


def _service_settings() -> manager.ServiceSettings:
    try:
        return settings_or_exit()
    except ConfigError as exc:
        click.echo(f"warning: the config cannot be loaded ({exc.message}); going on", err=True)
        return manager.bare_settings(current_environ())


def add_service_commands(group: click.Group) -> None:
    """Attach the service commands to the ``gateway`` group."""

    @group.command("install")
    @click.option(
        "--port",
        type=click.IntRange(1, 65535),
        help="Port the service listens on (default: the config's, fixed at each start).",
    )
    @click.option("--force", is_flag=True, help="Replace a different unit/plist already there.")
    @click.pass_context
    def install(ctx: click.Context, port: int | None, force: bool) -> None:
        """Install the gateway as a user service (systemd or launchd) and start it."""
        if port is None and isinstance(ctx.obj, dict):
            port = ctx.obj.get("port")
        click.echo(manager.install_service(settings_or_exit(), port=port, force=force))

    @group.command("uninstall")
    @click.option("--force", is_flag=True, help="Remove the unit/plist even if not ours.")
    def uninstall(force: bool) -> None:
        """Stop the service and remove exactly what install wrote."""
        click.echo(manager.uninstall_service(_service_settings(), force=force))

    @group.command("start")
    def start() -> None:
        """Start the installed service."""
        click.echo(manager.start_service(_service_settings()))

    @group.command("stop")
    def stop() -> None:
        """Stop the service (it lets streams in flight finish first)."""
        click.echo(manager.stop_service(_service_settings()))

    @group.command("restart")
    def restart() -> None:
        """Restart the service (e.g. after a new token in $STATE/.env)."""
        click.echo(manager.restart_service(_service_settings()))

    @group.command("status")
    @click.option("--json", "as_json", is_flag=True, help="Print a machine-readable status.")
    def status(as_json: bool) -> None:
        """Show the service manager's view and probe /healthz.

        Exit status: 0 running, 3 not installed or not running, 4 unknown.
        """
        result = manager.service_status(_service_settings())
        if as_json:
            echo_json(result)
        else:
            click.echo(format_status(result))
        if result["running"] is None:
            sys.exit(_EXIT_UNKNOWN)
        if not (result["installed"] and result["running"]):
            sys.exit(_EXIT_NOT_RUNNING)


def format_status(status: dict[str, Any]) -> str:
    health = status["health"]
    lines = [
        f"service:  {status['name']} ({status['manager']})",
        f"file:     {status['path']}" + ("" if status["installed"] else " (not installed)"),
        f"state:    {status['detail']}",
    ]
    if health["ok"]:
        lines.append(f"health:   ok ({health['url']})")
    else:
        lines.append(f"health:   no answer from {health['url']}: {health['error']}")
    if not status["installed"]:
        lines.append("→ install it with: coderclaw gateway install")
    elif status["running"] is False:
        lines.append("→ start it with: coderclaw gateway start")
    elif status["running"] and not health["ok"]:
        lines.append(f"→ it runs but does not answer yet; see its logs: {_logs_hint(status)}")
    return "\n".join(lines)


def _logs_hint(status: dict[str, Any]) -> str:
    if status["manager"] == "systemd":
        return f"journalctl --user -u {status['name']}"
    return str(status.get("logs", "$STATE/logs/gateway.err.log"))
