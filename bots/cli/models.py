"""``imaginebot models list|promote|rollback``: the registered versions of DF-GAN and the diffusion
model, and which one the inference workers draw with."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer

from core.command_line import console, fail, shared_settings

if TYPE_CHECKING:
    from core.model_versions import ModelRegistry

app = typer.Typer(help="Model versions.", no_args_is_help=True)
models = typer.Typer(
    help="Trained versions of DF-GAN or the diffusion model: list, promote, roll back.", no_args_is_help=True
)
app.add_typer(models, name="models")
MODEL_OPTION = typer.Option("dfgan", "--model", help="dfgan or diffusion.")


def _registry(family: str = "dfgan") -> ModelRegistry:
    """The shared registry of ``family``'s versions; exits with the reason for an unknown family."""
    from core.model_versions import ModelRegistry, RegistryError
    from core.store import connect

    settings = shared_settings()
    try:
        return ModelRegistry(settings, connect(str(settings.redis_url)), family=family.lower())
    except RegistryError as exc:
        raise fail(str(exc)) from None


@models.command("list")
def models_list(model: str = MODEL_OPTION) -> None:
    """Registered versions (oldest first) with their scores; * marks the promoted one."""
    from rich.table import Table

    registry = _registry(model)
    promoted = registry.promoted()
    table = Table("", "version", "dataset", "created (UTC)", "score (all)", "parent", "run")
    for entry in registry.list():
        score = entry.metrics.get("all")
        table.add_row(
            "*" if entry.version == promoted else "",
            entry.version,
            entry.dataset,
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.created_at)),
            "-" if score is None else f"{score:.3f}",
            entry.parent or "-",
            entry.run_id or "-",
        )
    console.print(table)
    console.print(f"promoted: {promoted or 'none (workers use the configured default checkpoint)'}")


@models.command("promote")
def models_promote(
    version: str = typer.Argument(..., help="A version from `imaginebot models list`."),
) -> None:
    """Make VERSION the one every inference worker draws with, from its next batch on."""
    from core.model_versions import RegistryError, family_of

    try:
        family = family_of(version)
        _registry(family).promote(version)
    except RegistryError as exc:
        raise fail(str(exc), 1) from None
    console.print(f"[green]promoted {version}[/green]")


@models.command("rollback")
def models_rollback(model: str = MODEL_OPTION) -> None:
    """Go back to the version promoted before the current one (or to the configured default)."""
    from core.model_versions import RegistryError

    registry = _registry(model)
    try:
        back_to = registry.rollback()
    except RegistryError as exc:
        raise fail(str(exc), 1) from None
    console.print(
        f"[green]promoted {back_to or 'nothing: workers use the configured default checkpoint'}[/green]"
    )


if __name__ == "__main__":
    app()
