"""``coderclaw doctor``: check the setup, one line each, with what to do."""

from __future__ import annotations

import sys

import click

from gateway.cli.common import echo_json
from gateway.doctor import (
    check_files,
    config_failure,
    exit_code,
    format_check,
    run_checks,
    skipped_after_config,
)
from gateway.errors import ConfigError
from gateway.settings import current_paths, load_settings


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(as_json: bool) -> None:
    """Check the config, the token (with Hugging Face), the router, the model cache, the port
    and the service; say how to fix each problem. Exit 0 when nothing failed, 1 otherwise.
    """
    try:
        # The file checks are reported one by one below, not as the load's first error.
        settings = load_settings(check_files=False)
    except ConfigError as exc:
        checks = [*check_files(current_paths()), config_failure(exc), *skipped_after_config()]
    else:
        checks = run_checks(settings)
    if as_json:
        echo_json({"ok": exit_code(checks) == 0, "checks": [c.as_dict() for c in checks]})
    else:
        for check in checks:
            click.echo(format_check(check))
    sys.exit(exit_code(checks))
