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


class _DatamixGroup(TyperGroup):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DatamixError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            typer.echo(f"error: {lines[0]}", err=True)
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
