"""The ``coderclaw`` command: parse arguments, make one call into the library, report errors.

Each noun group lives in its own module, imported when its command runs (``coderclaw gateway
run``, the daemon, loads none of the others' libraries); this module holds the root group and
error handling.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from gateway import __version__
from gateway.errors import GatewayError

# command name -> (module, attribute): the commands, imported on first use.
COMMANDS = {
    "config": ("gateway.cli.config_cmd", "config"),
    "connect": ("gateway.cli.connect_cmd", "connect_group"),
    "doctor": ("gateway.cli.doctor_cmd", "doctor"),
    "gateway": ("gateway.cli.gateway_cmd", "gateway"),
    "models": ("gateway.cli.models_cmd", "models"),
    "onboard": ("gateway.cli.onboard_cmd", "onboard"),
    "status": ("gateway.cli.status_cmd", "status"),
    "usage": ("gateway.cli.usage_cmd", "usage"),
}


class _Root(click.Group):
    """Turns every ``GatewayError`` into a message on stderr and the error's exit status;
    imports a command's module when the command is asked for (``COMMANDS``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        command = getattr(importlib.import_module(spec[0]), spec[1])
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GatewayError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="coderclaw")
def main() -> None:
    """CoderClaw gateway: a local OpenAI-compatible endpoint with failover across
    Hugging Face models.

    \b
    Start here:  coderclaw onboard --auth-choice huggingface-api-key
    Then:        coderclaw gateway        (serves http://127.0.0.1:18789/v1)
    """
