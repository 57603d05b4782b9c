"""``advseq list`` and ``advseq doctor``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from advseq.cli._common import console, styled


class Kind(StrEnum):
    detectors = "detectors"
    attacks = "attacks"


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_plugins(
        kind: Annotated[Kind, typer.Argument(help="What to list.")],
    ) -> None:
        """List the installed detectors or attacks (first- and third-party plugins)."""
        from advseq import registry

        reg = registry.detectors if kind is Kind.detectors else registry.attacks
        table = Table(title=f"{kind.value} (entry-point group {reg.group})", title_justify="left")
        table.add_column("name")
        table.add_column("description")
        for name in reg.names():
            table.add_row(name, reg.describe(name))
        console.print(table)

    @app.command()
    def doctor() -> None:
        """Check the offline resources (models carried by PyPI packages, NLTK data, WordNet) and say how to add what is missing."""
        from advseq import runtime

        table = Table(title="offline resources", title_justify="left")
        for col in ("resource", "status", "used by", "where / how to add"):
            table.add_column(col)
        for r in runtime.doctor():
            table.add_row(r.name, styled("ok", "green") if r.ok else styled("missing", "yellow"),
                          r.needed_by, r.detail)
        console.print(table)
