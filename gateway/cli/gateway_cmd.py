"""``coderclaw gateway``: run in the foreground (``gateway run``), plus the service commands."""

from __future__ import annotations

import sys

import click


class _GatewayGroup(click.Group):
    """``run``, and the service commands (``service_cmd``), attached when one is asked for:
    ``gateway run`` does not import the service manager."""

    def _attach(self) -> None:
        if "install" not in self.commands:
            from gateway.cli.service_cmd import add_service_commands

            add_service_commands(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._attach()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            self._attach()
        return super().get_command(ctx, cmd_name)


@click.group(cls=_GatewayGroup, invoke_without_command=True)
@click.option("--port", type=click.IntRange(1, 65535), help="Port (wins over the config).")
@click.option(
    "--bind", type=click.Choice(["loopback", "lan", "custom"]), help="Interface to listen on."
)
@click.option("--host", help="Address to listen on (with --bind custom).")
@click.pass_context
def gateway(ctx: click.Context, port: int | None, bind: str | None, host: str | None) -> None:
    """Run the gateway in the foreground (same as `gateway run`), or manage its service."""
    ctx.ensure_object(dict)
    ctx.obj.update(port=port, bind=bind, host=host)
    if ctx.invoked_subcommand is None:
        _run(port, bind, host)


@gateway.command("run")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (wins over the config).")
@click.option(
    "--bind", type=click.Choice(["loopback", "lan", "custom"]), help="Interface to listen on."
)
@click.option("--host", help="Address to listen on (with --bind custom).")
@click.pass_context
def gateway_run(ctx: click.Context, port: int | None, bind: str | None, host: str | None) -> None:
    """Run the gateway in the foreground until SIGTERM/SIGINT."""
    parent = ctx.obj or {}
    _run(port or parent.get("port"), bind or parent.get("bind"), host or parent.get("host"))


def _run(port: int | None, bind: str | None, host: str | None) -> None:
    from gateway.service.daemon import Overrides, run_gateway

    if host and not bind:
        bind = "custom"
    sys.exit(run_gateway(Overrides(port=port, bind=bind, host=host)))
