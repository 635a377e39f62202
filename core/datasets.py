"""Community datasets: named sets of captioned pictures that admins build from chat.

A dataset lives under ``<data_dir>/community/<name>/``: one ``<item id>.png`` per picture (ids the
server makes, 12 hex digits) and ``index.jsonl``, one ``{"id", "caption", "added_by", "added_at"}``
line per item in the order they were added. Names are checked by :func:`check_dataset_name`
(``[a-z0-9-]{1,32}``) before they touch the file system, so nothing a chat user types becomes a path.
Pictures arrive checked like any upload (:func:`core.uploads.check_upload`) and are stored at most
:data:`MAX_SIDE` pixels on their longer side. Writers (several bot processes may share a data dir)
take an exclusive ``flock`` on ``community/.lock``.

The training side reads the same layout (``training.data.community``).
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from core.errors import InputError
from core.uploads import check_upload

COMMUNITY_DIR = "community"
INDEX_FILE = "index.jsonl"
#: Dataset names: lower-case letters, digits and dashes.
NAME = re.compile(r"[a-z0-9-]{1,32}")
#: Item ids: 12 lower-case hex digits, made by the server.
ITEM_ID = re.compile(r"[0-9a-f]{12}")
#: How many items one dataset may hold.
MAX_ITEMS = 1000
#: How many community datasets there may be in all.
MAX_DATASETS = 50
#: The longest caption, in characters.
MAX_CAPTION_CHARS = 300
#: Stored pictures are scaled down to at most this many pixels on their longer side.
MAX_SIDE = 512
#: Names the built-in training datasets use (``training.data``); a community dataset cannot take one.
BUILTIN_NAMES = ("cache", "coco", "cub", "emoji", "flickr8k", "scenes", "shapes")

NAME_RULE_TEXT = "A dataset name is 1-32 lower-case letters, digits or dashes, e.g. my-cats."


@dataclass(frozen=True)
class DatasetItem:
    """One captioned picture: ``id`` (the file is ``<id>.png``), who added it and when."""

    id: str
    caption: str
    added_by: str = ""
    added_at: float = 0.0


def check_dataset_name(name: str) -> str:
    """``name`` (trimmed, lower case) if it is a dataset name; else InputError ``bad_dataset_name``."""
    cleaned = name.strip().lower()
    if NAME.fullmatch(cleaned) is None:
        shown = f"'{cleaned[:32]}' is not a valid dataset name. " if cleaned else "No dataset name given. "
        raise InputError("bad_dataset_name", shown + NAME_RULE_TEXT)
    return cleaned


def check_item_id(item: str) -> str:
    """``item`` (trimmed, lower case) when it is an item id; else InputError ``bad_item_id``."""
    cleaned = item.strip().lower()
    if ITEM_ID.fullmatch(cleaned) is None:
        raise InputError(
            "bad_item_id", "An item id is 12 hex digits, as /dataset show lists them, e.g. 0123456789ab."
        )
    return cleaned


def check_caption(caption: str) -> str:
    """``caption`` on one line with single spaces, when it is 1..:data:`MAX_CAPTION_CHARS` characters."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in caption).split())
    if not cleaned:
        raise InputError("caption_empty", "Give the picture a caption: what it shows, in words.")
    if len(cleaned) > MAX_CAPTION_CHARS:
        raise InputError(
            "caption_too_long", f"The caption is {len(cleaned)} characters; the limit is {MAX_CAPTION_CHARS}."
        )
    return cleaned


def stored_png(data: bytes) -> bytes:
    """``data`` checked like an upload and scaled to at most :data:`MAX_SIDE` on its longer side, as PNG."""
    png = check_upload(data)
    with Image.open(io.BytesIO(png)) as image:
        if max(image.size) <= MAX_SIDE:
            return png
        small = image.convert("RGB")
        small.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, format="PNG")
    return out.getvalue()


class DatasetStore:
    """The community datasets under ``data_dir``. ``reserved``: names no community dataset may take
    (the configured datasets; :data:`BUILTIN_NAMES` always)."""

    def __init__(
        self,
        data_dir: Path,
        reserved: Iterable[str] = (),
        max_items: int = MAX_ITEMS,
        max_datasets: int = MAX_DATASETS,
    ) -> None:
        self.root = Path(data_dir) / COMMUNITY_DIR
        self.reserved = set(BUILTIN_NAMES) | {r.strip().lower() for r in reserved}
        self.max_items = max_items
        self.max_datasets = max_datasets

    # --- reading ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """The community datasets, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if NAME.fullmatch(p.name) and (p / INDEX_FILE).is_file()
        )

    def exists(self, name: str) -> bool:
        """Whether ``name`` (any text) is an existing community dataset."""
        cleaned = name.strip().lower()
        return NAME.fullmatch(cleaned) is not None and (self.root / cleaned / INDEX_FILE).is_file()

    def items(self, name: str) -> list[DatasetItem]:
        """The items of dataset ``name`` in the order they were added; InputError ``unknown_dataset``."""
        folder = self._existing(name)
        return read_index(folder)

    def image_path(self, name: str, item_id: str) -> Path:
        """Where item ``item_id``'s picture of dataset ``name`` is stored."""
        return self.root / check_dataset_name(name) / f"{check_item_id(item_id)}.png"

    # --- writing ---------------------------------------------------------------------------------
    def add(self, name: str, caption: str, picture: bytes, added_by: str = "") -> tuple[DatasetItem, int]:
        """Add ``picture`` (checked like an upload) with ``caption`` to dataset ``name``, creating it
        when it is new; returns the item and the dataset's new size. Raises InputError."""
        name = check_dataset_name(name)
        caption = check_caption(caption)
        self.check_new_name(name)
        png = stored_png(picture)
        with self._locked():
            folder = self.root / name
            self.check_new_name(name)  # again under the lock: another process may have made one
            items = read_index(folder) if (folder / INDEX_FILE).is_file() else []
            if len(items) >= self.max_items:
                raise InputError(
                    "dataset_full", f"Dataset '{name}' already holds {self.max_items} pictures, the limit."
                )
            folder.mkdir(parents=True, exist_ok=True)
            item = DatasetItem(uuid.uuid4().hex[:12], caption, added_by, round(time.time(), 3))
            _write_atomic(folder / f"{item.id}.png", png)
            with (folder / INDEX_FILE).open("a", encoding="utf-8") as index:
                index.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
        return item, len(items) + 1

    def remove(self, name: str, item_id: str) -> tuple[DatasetItem, int]:
        """Remove item ``item_id`` from dataset ``name``; returns it and how many are left. A dataset
        left empty is removed. Raises InputError (``unknown_dataset``, ``bad_item_id``, ``no_such_item``)."""
        item_id = check_item_id(item_id)
        with self._locked():
            folder = self._existing(name)
            items = read_index(folder)
            gone = next((i for i in items if i.id == item_id), None)
            if gone is None:
                raise InputError("no_such_item", f"Dataset '{folder.name}' has no item {item_id}.")
            left = [i for i in items if i.id != item_id]
            lines = "".join(json.dumps(asdict(i), ensure_ascii=False) + "\n" for i in left)
            _write_atomic(folder / INDEX_FILE, lines.encode("utf-8"))
            (folder / f"{item_id}.png").unlink(missing_ok=True)
            if not left:
                (folder / INDEX_FILE).unlink()
                if not any(folder.iterdir()):
                    folder.rmdir()
        return gone, len(left)

    def check_new_name(self, name: str) -> None:
        """Refuse ``name`` (a checked name) when it is a built-in or configured dataset's
        (``dataset_reserved``), or new when there are :attr:`max_datasets` already (``too_many_datasets``)."""
        if name in self.reserved:
            raise InputError(
                "dataset_reserved", f"'{name}' is a built-in dataset; choose another name for yours."
            )
        if not self.exists(name) and len(self.names()) >= self.max_datasets:
            raise InputError(
                "too_many_datasets",
                f"There are already {self.max_datasets} datasets, the limit; remove one's items first.",
            )

    # --- helpers ---------------------------------------------------------------------------------
    def _existing(self, name: str) -> Path:
        cleaned = check_dataset_name(name)
        folder = self.root / cleaned
        if not (folder / INDEX_FILE).is_file():
            known = ", ".join(self.names()) or "none yet"
            raise InputError("unknown_dataset", f"No dataset '{cleaned}'. Datasets made in chat: {known}.")
        return folder

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def read_index(folder: Path) -> list[DatasetItem]:
    """The items listed in ``folder``'s index whose id is well formed (others are skipped)."""
    items = []
    for line in (folder / INDEX_FILE).read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
            by, at = str(data.get("added_by", "")), float(data.get("added_at", 0))
            item = DatasetItem(str(data["id"]), str(data["caption"]), by, at)
        except (ValueError, KeyError, TypeError):
            continue
        if ITEM_ID.fullmatch(item.id):
            items.append(item)
    return items


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, path)
