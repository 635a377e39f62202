"""The gate a new version passes before it is promoted: at least as good as the version in use."""

from __future__ import annotations

from core.train_runs import TrainRun


def gate(
    run: TrainRun, metrics: dict[str, float], baseline_version: str | None, baseline: float | None
) -> tuple[str, str]:
    """(gate, note): promote only a version at least as good as the promoted one (or when forced)."""
    if "all" not in metrics:
        if run.force:
            return "forced", f"No automatic evaluation for dataset '{run.dataset}'; promoted because forced."
        return "skipped", (
            f"No automatic evaluation for dataset '{run.dataset}', so it was registered but not promoted; "
            "promote it by hand with `imaginebot models promote VERSION`."
        )
    score = metrics["all"]
    if baseline is None:
        return "passed", (
            "No promoted version or default checkpoint with a score to beat."
            if baseline_version is None
            else f"{baseline_version} has no stored score to beat."
        )
    if score >= baseline:
        return "passed", f"Score {score:.3f} >= {baseline:.3f} of {baseline_version}."
    if run.force:
        return "forced", f"Score {score:.3f} < {baseline:.3f} of {baseline_version}; promoted because forced."
    return "failed", f"Score {score:.3f} < {baseline:.3f} of {baseline_version}; not promoted."
