"""The ``humanfix`` command line. Each command builds a typed config and calls one function.

Errors a user can cause are :class:`humanfix.errors.UserError`: one line on stderr, exit code 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from humanfix.errors import UserError

app = typer.Typer(
    name="humanfix",
    help="Teach Stable Diffusion 1.5 to draw people: prepare data, train a ControlNet branch under a "
    "mask-aware perceptual loss, generate, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False, console=_stderr_console())],
        force=True,
    )
    logging.getLogger("humanfix").setLevel(logging.INFO)
    for noisy in ("diffusers", "transformers", "accelerate", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False) -> None:
    _setup_logging(verbose)


@app.command()
def doctor(
    model: Annotated[str, typer.Option(help="The SD 1.5 model to look for (hub id or folder).")] = (
        "stable-diffusion-v1-5/stable-diffusion-v1-5"
    ),
) -> None:
    """Show Python, torch and the device, and for each pretrained asset whether it is present or where it goes."""
    from rich.console import Console
    from rich.table import Table

    from humanfix.doctor import run_checks

    table = Table(title="humanfix doctor")
    table.add_column("check")
    table.add_column("status")
    table.add_column("where / detail", overflow="fold")
    for c in run_checks(model):
        table.add_row(c.name, "[green]ok[/green]" if c.ok else "[red]missing[/red]", c.detail)
    Console().print(table)


# -- commands added by later issues go below this line (keep each one thin) --


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except UserError as e:
        print(f"humanfix: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("humanfix: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
