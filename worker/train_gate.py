"""The gate a new version passes before it is promoted: at least as good as the version in use, on
the model family's own answer key.

Every run is scored on an answer key, whatever it trained on: a dataset that has one (DF-GAN:
``shapes``; diffusion: ``shapes`` or ``scenes``) is scored on its own, any other (a community dataset
built in chat, ``emoji``) on the family's key (:data:`FAMILY_KEY`, what the shipped models learnt). So
a fine-tune on a community dataset is promoted only if it did not get worse where it is measurable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.model_versions import ModelRegistry, RegistryError
from core.train_runs import TrainRun

#: The datasets each model family has an exact answer key for.
SCORED_DATASETS = {"dfgan": ("shapes",), "diffusion": ("shapes", "scenes")}
#: The key a run on a dataset without its own is scored on (the shipped models were trained on it).
FAMILY_KEY = {"dfgan": "shapes", "diffusion": "shapes"}


def answer_key(family: str, dataset: str) -> str:
    """The answer key a ``family`` version trained on ``dataset`` is scored on."""
    return dataset if dataset in SCORED_DATASETS.get(family, ()) else FAMILY_KEY.get(family, "shapes")


def stored_score_applies(family: str, run_dataset: str, baseline_dataset: str) -> bool:
    """Whether a baseline's stored score may stand for it: the run's dataset is an answer key itself
    (as before community datasets) and the baseline was scored on that same key. Otherwise (a run
    on a community dataset) the baseline is scored again, now, on the same captions as the run."""
    key = answer_key(family, run_dataset)
    return run_dataset in SCORED_DATASETS.get(family, ()) and answer_key(family, baseline_dataset) == key


@dataclass(frozen=True)
class Baseline:
    """What a run must match: ``version`` (None: the default model) with its stored ``score``, or
    ``folder`` set when that model is to be scored now on the run's captions."""

    version: str | None
    score: float | None = None
    folder: Path | None = None


def baseline_of(registry: ModelRegistry, run: TrainRun, default: Path | None) -> Baseline:
    """The promoted version with its stored score when that applies (:func:`stored_score_applies`),
    else its folder to score now (fetched from Redis if need be; its stored score if its files are
    gone); with nothing promoted, the ``default`` folder the workers use (None: nothing to beat)."""
    promoted = registry.promoted_entry()
    if promoted is None:
        return Baseline(None, folder=default)
    if stored_score_applies(run.model, run.dataset, promoted.dataset):
        return Baseline(promoted.version, promoted.metrics.get("all"))
    try:
        return Baseline(promoted.version, folder=registry.materialize(promoted.version)[0])
    except RegistryError:
        return Baseline(promoted.version, promoted.metrics.get("all"))


def gate(
    run: TrainRun, metrics: dict[str, float], baseline_version: str | None, baseline: float | None
) -> tuple[str, str]:
    """(gate, note): promote only a version at least as good as the promoted one (or when forced)."""
    if "all" not in metrics:
        if run.force:
            return "forced", f"No automatic evaluation for dataset '{run.dataset}'; promoted because forced."
        return "skipped", (
            f"No automatic evaluation for dataset '{run.dataset}', so it was registered but not promoted; "
            "promote it by hand with `imaginebot models promote VERSION` (or /model promote VERSION)."
        )
    score = f"Score {metrics['all']:.3f} on the {answer_key(run.model, run.dataset)} answer key"
    if baseline is None:
        return "passed", (
            f"{score}; no promoted version or default checkpoint with a score to beat; promoted."
            if baseline_version is None
            else f"{score}; {baseline_version} has no stored score to beat; promoted."
        )
    versus = f"{score} vs {baseline:.3f} of {baseline_version}"
    if metrics["all"] >= baseline:
        return "passed", f"{versus}; promoted."
    if run.force:
        return "forced", f"{versus}; promoted because forced."
    return "failed", f"{versus}; not promoted."
