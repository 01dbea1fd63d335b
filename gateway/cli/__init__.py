"""The ``coderclaw`` command: parse arguments, make one call into the library, report errors.

Each noun group lives in its own module; this module holds the root group and error handling.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from gateway import __version__
from gateway.errors import GatewayError


class _Root(click.Group):
    """Turns every ``GatewayError`` into a message on stderr and the error's exit status."""

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


def _register() -> None:
    from gateway.cli import config_cmd, doctor_cmd, gateway_cmd, models_cmd, onboard_cmd, usage_cmd
    from gateway.cli.connect_cmd import connect_group
    from gateway.cli.status_cmd import status

    main.add_command(models_cmd.models)
    main.add_command(config_cmd.config)
    main.add_command(connect_group)
    main.add_command(usage_cmd.usage)
    main.add_command(status)
    for module in (gateway_cmd, onboard_cmd, doctor_cmd):
        module.register(main)


_register()
