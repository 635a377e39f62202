"""The options and checks the training and evaluation commands share, written once: the same name
means the same option (and help) in ``train``, ``train-diffusion``, ``train-damsm``, ``eval`` and
``eval-diffusion``.

Nothing here imports torch at import time: ``imaginebot --help`` lists these commands without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

Dataset = Annotated[str, typer.Option(help="Dataset name, e.g. shapes.")]
DataDir = Annotated[Path | None, typer.Option(help="Where file-based datasets live.")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda")]
Threads = Annotated[int, typer.Option(help="CPU threads for torch (0 = torch's default).")]
Tensorboard = Annotated[
    Path | None, typer.Option(help="Also write TensorBoard event files here (needs tensorboard).")
]
Bf16 = Annotated[
    bool | None,
    typer.Option(
        "--bf16/--no-bf16",
        help="bf16 autocast on a CPU with native bf16 (AVX512-BF16/AMX; float32 elsewhere). "
        "Default: the config's. A resumed run takes it from the command line.",
    ),
]
#: The evaluation commands' answer key.
AnswerKey = Annotated[str, typer.Option(help="Answer key: shapes (one shape) or scenes (one or two shapes).")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the figures here.")]
ANSWER_KEYS = ("shapes", "scenes")


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in torch (0 keeps torch's default)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def load_dataset(name: str, data_dir: Path | None, **options: Any) -> Any:
    """The dataset called ``name`` built with ``options``; an unknown name is a bad ``--dataset``."""
    from training.data import get_dataset

    try:
        return get_dataset(name, data_dir, **options)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--dataset") from err


def check_answer_key(dataset: str) -> None:
    """Only datasets with an exact checker can score a model."""
    if dataset not in ANSWER_KEYS:
        raise typer.BadParameter("only shapes and scenes have an exact answer key", param_hint="--dataset")


def answer_key_prompts(dataset: str) -> list[str]:
    """The fixed prompts of ``dataset``'s sample grids."""
    from training.data.scenes import ScenesDataset
    from training.data.shapes import ShapesDataset

    return list((ScenesDataset if dataset == "scenes" else ShapesDataset).sample_prompts)
