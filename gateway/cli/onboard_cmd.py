"""``coderclaw onboard``: the token and the default model, interactively or from flags."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import click

from gateway.cli.common import echo_json
from gateway.errors import ServiceError, TokenError
from gateway.onboard import (
    InteractiveOptions,
    ModelChoice,
    OnboardResult,
    clean_pasted_token,
    run_interactive,
    run_non_interactive,
    summary_lines,
    token_problem,
)
from gateway.settings import Settings, current_environ, load_settings

AUTH_CHOICES = ("huggingface-api-key",)
STDIN = "-"
MAX_STDIN_TOKEN = 64 * 1024


def read_token_from_stdin() -> str:
    """The token for ``--huggingface-api-key -``: asked hidden on a terminal, else read from
    the pipe or file (up to 64 KiB; the pasted-token cleaning applies later)."""
    if sys.stdin.isatty():
        return str(click.prompt("Hugging Face token", hide_input=True, err=True))
    text = sys.stdin.read(MAX_STDIN_TOKEN)
    if not text.strip():
        raise TokenError(
            "--huggingface-api-key - found no token on standard input",
            hint="pipe the token in, e.g. coderclaw onboard --non-interactive "
            "--huggingface-api-key - < token.txt, or set HF_TOKEN instead",
        )
    return text


class QuestionaryPrompter:
    """The interactive prompts, on the terminal, through questionary."""

    def say(self, text: str) -> None:
        click.echo(text)

    def warn(self, text: str) -> None:
        click.secho(f"! {text}", fg="yellow")

    def confirm(self, question: str, default: bool) -> bool:
        import questionary

        return bool(questionary.confirm(question, default=default).unsafe_ask())

    def secret(self, question: str) -> str:
        import questionary

        return str(questionary.password(question).unsafe_ask() or "")

    def select(self, question: str, choices: list[ModelChoice], default: str | None) -> str:
        import questionary

        items = [questionary.Choice(title=c.title, value=c.value) for c in choices]
        chosen = next((i for i in items if i.value == default), None)
        answer = questionary.select(
            question,
            choices=items,
            default=chosen,
            use_search_filter=True,
            use_jk_keys=False,
            instruction="(type to filter, ↑/↓ to move, Enter to choose)",
        ).unsafe_ask()
        return str(answer)

    def choose_provider(self) -> None:
        import questionary

        questionary.select(
            "Model provider",
            choices=[
                questionary.Choice(
                    "Hugging Face (Inference Providers, API key)", value="huggingface-api-key"
                )
            ],
        ).unsafe_ask()


def _install_daemon(settings: Settings) -> str:
    from gateway.service.manager import install_service

    return install_service(settings)


def _print(result: OnboardResult, as_json: bool) -> None:
    if as_json:
        for warning in result.warnings:
            click.echo(f"warning: {warning}", err=True)
        echo_json(result.as_dict())
        return
    for line in summary_lines(result):
        click.echo(line)


@click.command("onboard")
@click.option(
    "--auth-choice",
    type=click.Choice(AUTH_CHOICES),
    help="How to authenticate; huggingface-api-key is the one choice (asked when omitted).",
)
@click.option(
    "--huggingface-api-key",
    "api_key",
    metavar="TOKEN|-",
    help="The Hugging Face token; '-' reads it from standard input. Without the flag: "
    "HF_TOKEN and friends, or a prompt. A token on the command line is visible to every "
    "local user (ps) while onboarding runs: prefer the environment or '-'.",
)
@click.option("--non-interactive", is_flag=True, help="Ask nothing: use the flags and defaults.")
@click.option(
    "--mode",
    type=click.Choice(["local"]),
    default="local",
    show_default=True,
    help="Where the gateway runs; only local is supported.",
)
@click.option("--model", metavar="REF", help="The default model (skips the dropdown).")
@click.option(
    "--gateway-port", type=click.IntRange(1, 65535), metavar="N", help="Set gateway.port."
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("--install-daemon", is_flag=True, help="Also install and start the gateway service.")
def onboard(
    auth_choice: str | None,
    api_key: str | None,
    non_interactive: bool,
    mode: str,
    model: str | None,
    gateway_port: int | None,
    as_json: bool,
    install_daemon: bool,
) -> None:
    """Set up the Hugging Face token and the default model.

    \b
    Interactive:
      coderclaw onboard --auth-choice huggingface-api-key
    Non-interactive, the token from the environment (not on the command line):
      HF_TOKEN=… coderclaw onboard --non-interactive --mode local \\
        --auth-choice huggingface-api-key
    Non-interactive, the token from standard input:
      coderclaw onboard --non-interactive --mode local \\
        --auth-choice huggingface-api-key --huggingface-api-key - < token.txt
    Non-interactive, the token as an argument (visible in ps while it runs):
      coderclaw onboard --non-interactive --mode local \\
        --auth-choice huggingface-api-key --huggingface-api-key "$HF_TOKEN"

    The token is checked with Hugging Face and saved as HF_TOKEN in $STATE/.env (mode 0600);
    the model goes to agents.defaults.model.primary (plus an alias). The rest of the config is
    kept, but the file is rewritten as plain JSON (JSON5 comments are not kept). A rejected
    token writes nothing; a token that cannot be checked (Hub unreachable) is saved with a
    warning.
    """
    if api_key == STDIN:
        api_key = read_token_from_stdin()
    environ: dict[str, Any] = dict(current_environ())
    token_env = dict(environ)
    given = clean_pasted_token(api_key)
    if given and token_problem(given) is None:
        # A config that says apiKey: "${HF_TOKEN}" must load before the token is saved.
        token_env.setdefault("HF_TOKEN", given)
    settings = load_settings(token_env)

    def reload() -> Settings:
        return load_settings()

    if non_interactive:
        result = run_non_interactive(
            settings, token_flag=api_key, model=model, port=gateway_port, reload=reload
        )
    else:
        if not sys.stdin.isatty() or not sys.stdout.isatty():
            raise click.UsageError(
                "interactive onboarding needs a terminal; to run it from a script, add "
                "--non-interactive and set HF_TOKEN (or pass --huggingface-api-key - with "
                "the token on standard input)"
            )
        prompter = QuestionaryPrompter()
        try:
            if auth_choice is None:
                prompter.choose_provider()
            options = InteractiveOptions(
                model=model, port=gateway_port, environ=environ, token=api_key
            )
            result = run_interactive(settings, prompter, options, reload)
        except (KeyboardInterrupt, EOFError):
            click.echo("\nOnboarding cancelled: nothing was written.", err=True)
            sys.exit(130)
    if install_daemon:
        try:
            summary = _install_daemon(reload())
        except ServiceError as exc:
            click.echo(f"error: the config and token are saved, but {exc}", err=True)
            sys.exit(exc.exit_code)
        result = _with_service(result, summary)
    _print(result, as_json)


def _with_service(result: OnboardResult, summary: str) -> OnboardResult:
    return replace(result, service=summary.strip().splitlines()[0] if summary.strip() else "ok")
