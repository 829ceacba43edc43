"""The ``datamix`` command: a thin Typer layer over the library.

Every command module imports torch and friends inside its function, so
``datamix --help`` stays instant. User errors (:class:`DatamixError`) are
caught here, in one place, printed as one line, and exit with code 2.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from datamix_cli import __version__
from datamix_cli.errors import EXIT_USER_ERROR, DatamixError


# click's UsageError, found through typer (which vendors click from 0.2x): BadParameter, NoSuchOption, MissingParameter.
_USAGE_ERROR = typer.BadParameter.__mro__[1]


class _DatamixGroup(TyperGroup):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DatamixError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            _fail(str(exc) or type(exc).__name__)
        except _USAGE_ERROR as exc:  # a bad or missing option of a subcommand: the same one line, the same code
            command = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            _fail(f"{exc.format_message()} (see: {command} --help)")


def _fail(message: str):
    typer.echo(f"error: {message.strip().splitlines()[0] if message.strip() else message}", err=True)
    raise typer.Exit(EXIT_USER_ERROR) from None


app = typer.Typer(
    cls=_DatamixGroup,
    name="datamix",
    help="Privacy-preserving edge-cloud inference with DataMix: profile, split, serve and audit a PyTorch model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"datamix {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    ctx.obj = {"debug": debug}


def _register() -> None:
    from datamix_cli.commands import audit, export, profile, serve, split

    app.command("profile")(profile.profile)
    app.command("split")(split.split)
    app.command("serve")(serve.serve)
    app.command("infer")(serve.infer)
    app.command("serve-local")(serve.serve_local)
    app.command("audit")(audit.audit)
    app.add_typer(export.app, name="export")


_register()


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
