"""The model registry: which trained versions of each model family (``dfgan``, ``diffusion``) exist,
and which one the workers draw with. The keys below are DF-GAN's; a diffusion version's are the same
with ``diffusion`` in place of ``dfgan``.

Versions live in two places:

- files: ``settings.data_dir/models/dfgan/<version>/`` holds ``config.json`` + ``generator.safetensors``
  (a checkpoint folder :func:`training.dfgan.checkpoint.load_generator` reads) and ``model.json``
  (the metadata below), on the machine that registered it and on every worker that has loaded it;
- Redis (no expiry): ``ib:models:dfgan:blob:<version>:<file>`` (the bytes of those two files, 5-10 MB:
  how a version reaches workers on other machines, with no shared volume; each file's sha256 is in the
  metadata and checked before a worker uses a copy — :meth:`ModelRegistry.materialize`),
  ``ib:models:dfgan:version:<version>`` (the metadata as JSON),
  ``ib:models:dfgan:versions`` (sorted set of versions by creation time),
  ``ib:models:dfgan:promoted`` (the version inference workers use; absent: the configured default) and
  ``ib:models:dfgan:promoted:previous`` (a stack of earlier promoted versions, for rollback).

Version names are made here (``dfgan-<dataset>-<UTC timestamp>``) and checked against a strict pattern
before they become a folder name, so nothing typed in chat can name a path. This module imports no torch:
the CLI and the bots may use it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

from core.settings import Settings

#: The model families the registry keeps. A version's name starts with its family.
FAMILIES = ("dfgan", "diffusion")
PREFIX = "ib:models:dfgan"
PROMOTED_KEY = f"{PREFIX}:promoted"
PREVIOUS_KEY = f"{PREFIX}:promoted:previous"
VERSIONS_KEY = f"{PREFIX}:versions"
#: The only version names the registry accepts (and so the only folder names it creates).
VERSION_PATTERN = re.compile(r"(dfgan|diffusion)-[a-z0-9_]{1,32}-\d{8}T\d{6}Z(-\d{1,3})?")
#: Files copied from a DF-GAN training checkpoint folder into the registry (weights and config).
CHECKPOINT_FILES = ("config.json", "generator.safetensors")
#: The file of each family's folder that carries the version label (engines report it).
LABEL_FILES = {"dfgan": "config.json", "diffusion": "imaginebot.json"}
TITLES = {"dfgan": "DF-GAN", "diffusion": "diffusion"}
METADATA_FILE = "model.json"
PREVIOUS_KEPT = 50


class RegistryError(Exception):
    """A registry request that cannot be honoured (unknown version, bad name, nothing to roll back)."""


@dataclass
class ModelVersion:
    """One registered DF-GAN version."""

    version: str
    folder: str
    dataset: str
    created_at: float
    metrics: dict[str, float] = field(default_factory=dict)
    parent: str | None = None  # the version promoted when the run that made this one started
    run_id: str | None = None
    note: str = ""
    #: file name -> sha256 of the copy in Redis (empty for versions registered before weights travelled)
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """The metadata as JSON (what Redis and ``model.json`` hold)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> ModelVersion:
        """Parse :meth:`to_json`."""
        return cls(**json.loads(raw))


def check_version(version: str) -> str:
    """``version`` when it is a well-formed version name; raises :class:`RegistryError` otherwise."""
    if not VERSION_PATTERN.fullmatch(version):
        raise RegistryError(
            f"'{version[:60]}' is not a model version name (dfgan-<dataset>-<timestamp> or diffusion-…)."
        )
    return version


def family_of(version: str) -> str:
    """The model family a (checked) version name belongs to."""
    return check_version(version).split("-", 1)[0]


def models_root(settings: Settings, family: str = "dfgan") -> Path:
    """``data_dir/models/<family>``: where registered versions' folders live."""
    return Path(settings.data_dir) / "models" / family


def version_folder(settings: Settings, version: str) -> Path:
    """The folder of ``version`` (name checked first, so it is always inside :func:`models_root`)."""
    return models_root(settings, family_of(version)) / version


def checkpoint_files(family: str, source: Path) -> list[str]:
    """The files of a checkpoint folder that make a version (paths relative to it): DF-GAN's weights and
    config; for a diffusers folder, every file but pictures and hidden ones."""
    if family == "dfgan":
        return list(CHECKPOINT_FILES)
    return sorted(
        str(p.relative_to(source))
        for p in source.rglob("*")
        if p.is_file() and p.suffix != ".png" and not any(part.startswith(".") for part in p.parts)
    )


def blob_key(version: str, name: str) -> str:
    """Redis key of the bytes of ``version``'s file ``name`` (a path inside its folder)."""
    return f"ib:models:{family_of(version)}:blob:{version}:{name}"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def version_key(version: str) -> str:
    """Redis key of ``version``'s metadata."""
    return f"ib:models:{family_of(version)}:version:{version}"


def promoted_key(family: str) -> str:
    """Redis key naming the promoted version of ``family`` (absent: the configured default)."""
    return f"ib:models:{family}:promoted"


class ModelRegistry:
    """Register, list, promote and roll back the versions of one model family."""

    def __init__(self, settings: Settings, client: redis.Redis, family: str = "dfgan") -> None:
        if family not in FAMILIES:
            raise RegistryError(f"no model family {family!r}; families: {', '.join(FAMILIES)}")
        self.settings = settings
        self.redis = client
        self.family = family
        self._promoted_key = promoted_key(family)
        self._previous_key = f"{self._promoted_key}:previous"
        self._versions_key = f"ib:models:{family}:versions"

    # --- names ------------------------------------------------------------------------------------
    def new_version_name(self, dataset: str, when: float | None = None) -> str:
        """A fresh, unused name ``<family>-<dataset>-<UTC timestamp>`` (suffixed ``-2``… on a clash)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if when is None else when))
        base = f"{self.family}-{dataset}-{stamp}"
        for n in range(1, 1000):
            name = check_version(base if n == 1 else f"{base}-{n}")
            if not self.redis.exists(version_key(name)) and not version_folder(self.settings, name).exists():
                return name
        raise RegistryError(f"no free version name for {base}")

    # --- register / read --------------------------------------------------------------------------
    def register(
        self,
        version: str,
        checkpoint_dir: str | Path,
        dataset: str,
        metrics: dict[str, float] | None = None,
        parent: str | None = None,
        run_id: str | None = None,
        note: str = "",
    ) -> ModelVersion:
        """Copy a checkpoint's weights and config into the version's folder and record it.

        The copied ``config.json`` carries ``version``, so an engine loading the folder reports it.
        Idempotent: registering a version again (a retried task) rewrites the same files and entry.
        """
        target = version_folder(self.settings, self._own(version))
        source = Path(checkpoint_dir)
        names = checkpoint_files(self.family, source)
        missing = [name for name in names if not (source / name).is_file()]
        if missing or not names:
            raise RegistryError(f"checkpoint {source} lacks {', '.join(missing) or 'its files'}")
        existing = self.get(version)
        entry = ModelVersion(
            version=version,
            folder=str(target),
            dataset=dataset,
            created_at=existing.created_at if existing else time.time(),
            metrics=dict(metrics or {}),
            parent=parent,
            run_id=run_id,
            note=note,
        )
        # Build next to the target and rename, so a worker never loads a half-copied folder.
        staging = target.with_name(f".{version}.staging")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in names:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, staging / name)
        label = staging / LABEL_FILES[self.family]  # the engine reports the version it finds here
        meta = json.loads(label.read_text()) if label.is_file() else {}
        meta["version"] = version
        label.write_text(json.dumps(meta, indent=2) + "\n")
        names = sorted({*names, LABEL_FILES[self.family]})
        entry.files = {name: sha256_of(staging / name) for name in names}
        (staging / METADATA_FILE).write_text(entry.to_json() + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        pipe = self.redis.pipeline()
        # The bytes first: whoever reads the entry finds its files in Redis.
        for name in names:
            pipe.set(blob_key(version, name), (target / name).read_bytes())
        pipe.set(version_key(version), entry.to_json())
        pipe.zadd(self._versions_key, {version: entry.created_at})
        pipe.execute()
        return entry

    def get(self, version: str) -> ModelVersion | None:
        """The entry of ``version``, or None when it is not registered."""
        raw = self.redis.get(version_key(self._own(version)))
        return None if raw is None else ModelVersion.from_json(raw)

    def set_metrics(self, version: str, metrics: dict[str, float]) -> ModelVersion:
        """Replace ``version``'s stored evaluation figures (e.g. after a re-evaluation)."""
        entry = self._require(version)
        entry.metrics = dict(metrics)
        self.redis.set(version_key(version), entry.to_json())
        return entry

    def list(self) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        names = [raw.decode() for raw in self.redis.zrange(self._versions_key, 0, -1)]
        raws = self.redis.mget([version_key(n) for n in names]) if names else []
        return [ModelVersion.from_json(raw) for raw in raws if raw is not None]

    # --- promotion --------------------------------------------------------------------------------
    def promoted(self) -> str | None:
        """The promoted version's name (one GET), or None: workers then use the configured default."""
        raw = self.redis.get(self._promoted_key)
        return None if raw is None else raw.decode()

    def promoted_entry(self) -> ModelVersion | None:
        """The promoted version's entry, or None."""
        name = self.promoted()
        return None if name is None else self.get(name)

    def promote(self, version: str) -> ModelVersion:
        """Make ``version`` the one every inference worker draws with (from its next batch on)."""
        entry = self._require(version)
        in_redis = bool(entry.files) and all(self.redis.exists(blob_key(version, n)) for n in entry.files)
        if not in_redis and not (Path(entry.folder) / LABEL_FILES[self.family]).is_file():
            raise RegistryError(f"the files of {version} are neither in Redis nor in {entry.folder}")
        current = self.promoted()
        if current == version:
            return entry
        pipe = self.redis.pipeline()
        if current is not None:
            pipe.rpush(self._previous_key, current)
            pipe.ltrim(self._previous_key, -PREVIOUS_KEPT, -1)
        pipe.set(self._promoted_key, version)
        pipe.execute()
        return entry

    def rollback(self) -> str | None:
        """Go back to the version promoted before the current one. Returns it (None: the default).

        With no earlier promoted version, the promotion is cleared and workers use the configured
        default checkpoint again. Raises :class:`RegistryError` when nothing is promoted.
        """
        current = self.promoted()
        if current is None:
            title = TITLES[self.family]
            raise RegistryError(f"No {title} version is promoted; there is nothing to roll back.")
        while True:
            raw = self.redis.rpop(self._previous_key)
            if raw is None:
                self.redis.delete(self._promoted_key)
                return None
            previous = raw.decode()
            if previous != current and self.get(previous) is not None:
                self.redis.set(self._promoted_key, previous)
                return previous

    # --- weights that travel ------------------------------------------------------------------------
    def materialize(self, version: str) -> tuple[Path, bool]:
        """This machine's folder of ``version``, ready to load, and whether it was fetched just now: the
        local copy when its files match the registered sha256s, else a fresh copy fetched from Redis
        and verified (written next to the folder and renamed into place, so a loader never sees half
        a copy).

        Raises :class:`RegistryError` when the version's files are neither here nor in Redis, or a
        fetched file does not match its checksum: the caller keeps the model it has.
        """
        entry = self._require(version)
        target = version_folder(self.settings, version)
        if not entry.files:  # registered before weights travelled: the shared volume or nothing
            if (target / LABEL_FILES[self.family]).is_file():
                return target, False
            raise RegistryError(f"the files of {version} are not on this machine and not in Redis")
        if all((target / n).is_file() and sha256_of(target / n) == d for n, d in entry.files.items()):
            return target, False
        staging = target.with_name(f".{version}.fetching")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            for name, digest in entry.files.items():
                data = self.redis.get(blob_key(version, name))
                if data is None:
                    raise RegistryError(f"{version}: {name} is not in Redis")
                if hashlib.sha256(data).hexdigest() != digest:
                    raise RegistryError(f"{version}: {name} from Redis does not match its sha256")
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_bytes(data)
            (staging / METADATA_FILE).write_text(entry.to_json() + "\n")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target, True

    def _own(self, version: str) -> str:
        """``version`` when it is a well-formed name of this registry's family."""
        if family_of(version) != self.family:
            raise RegistryError(f"'{version[:60]}' is not a {TITLES[self.family]} version.")
        return version

    def _require(self, version: str) -> ModelVersion:
        entry = self.get(version)
        if entry is None:
            raise RegistryError(
                f"Unknown {TITLES[self.family]} version '{version[:60]}'. See `imaginebot models list`."
            )
        return entry
