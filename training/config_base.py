"""One base for the trainers' configs (DF-GAN, diffusion, DAMSM): JSON in and out, and one policy for
keys a config does not know.

The policy: an unknown key is an error that names it (a typo such as ``lr_typo`` must not silently
train with the default), except the ``"training"`` section that checkpoint folders store beside the
config (step, images seen...), which is run information, not a setting.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Self

#: Keys a saved config may carry that are not settings (see the module docstring).
RUN_INFO_KEYS = frozenset({"training"})


class TrainingConfig:
    """Mixin for a ``@dataclass`` of settings: :meth:`to_dict` / :meth:`from_dict`, JSON files, and
    :meth:`resumed_from`. Fields whose default is a tuple get JSON lists back as tuples."""

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain, JSON-ready dict."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        """The config as pretty-printed JSON."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from a plain dict (e.g. a ``config.json``); missing keys take their defaults.

        Raises:
            ValueError: ``data`` has a key that is neither a field nor run information.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields) - RUN_INFO_KEYS)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
        values = {k: v for k, v in data.items() if k in fields}
        for name, value in values.items():
            if isinstance(fields[name].default, tuple) and isinstance(value, list):
                values[name] = tuple(value)
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Parse :meth:`to_json` output (see :meth:`from_dict`)."""
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a config file written by :meth:`save` (or a checkpoint's ``config.json``)."""
        return cls.from_json(Path(path).read_text())

    def resumed_from(self, path: str | Path, keep: tuple[str, ...]) -> Self:
        """The config saved at ``path`` (a run being resumed), with ``keep``'s fields taken from this
        one (what a resumed run may change: its length, version label, speed switches)."""
        saved = type(self).load(path)
        for name in keep:
            setattr(saved, name, getattr(self, name))
        return saved
