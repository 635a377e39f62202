"""``/dataset`` in the conversation: the actions admins use to build community datasets, their
replies (every text written here, once) and their handlers (:class:`DatasetActions`, which
:class:`core.conversation.service.ConversationService` registers).

- ``/dataset add NAME caption…`` with a picture (``image_key``: an upload stored by
  :class:`core.uploads.UploadStore`) → :class:`DatasetAdded`
- ``/dataset list`` → :class:`DatasetsListed`
- ``/dataset show NAME`` → :class:`DatasetShown` (count, a contact sheet PNG, a few captions)
- ``/dataset remove NAME ITEM`` → :class:`DatasetItemRemoved`

Text platforms pass :class:`DatasetCommand` (the text and the picture's upload key, if any): the
service checks that the caller is an admin before the text is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import redis

from core.datasets import DatasetItem, DatasetStore, check_caption, check_dataset_name
from core.datasets_sheet import MAX_THUMBS, contact_sheet
from core.errors import InputError
from core.settings import Settings
from core.uploads import UploadStore, is_upload_key

NOT_ADMIN_DATASET = "Only admins can build and see datasets."
DATASET_USAGE = (
    "Usage: /dataset add NAME caption (with a picture), /dataset list, /dataset show NAME, "
    "/dataset remove NAME ITEM."
)
NO_PICTURE_TEXT = (
    "Which picture? Send /dataset add NAME caption with the picture attached (or as a reply to it)."
)
#: How many captions /dataset show lists.
SHOWN_CAPTIONS = 5


@dataclass(frozen=True)
class DatasetAdd:
    """Admins: add the uploaded picture ``image_key`` with ``caption`` to dataset ``name`` (made if new)."""

    name: str
    caption: str
    image_key: str | None = None
    refusal: ClassVar[str | None] = NOT_ADMIN_DATASET


@dataclass(frozen=True)
class DatasetList:
    """Admins: the datasets made in chat and their sizes."""

    refusal: ClassVar[str | None] = NOT_ADMIN_DATASET


@dataclass(frozen=True)
class DatasetShow:
    """Admins: dataset ``name``'s size, a contact sheet of its pictures and a few captions."""

    name: str
    refusal: ClassVar[str | None] = NOT_ADMIN_DATASET


@dataclass(frozen=True)
class DatasetRemove:
    """Admins: remove item ``item`` (its id, as show lists it) from dataset ``name``."""

    name: str
    item: str
    refusal: ClassVar[str | None] = NOT_ADMIN_DATASET


DatasetAction = DatasetAdd | DatasetList | DatasetShow | DatasetRemove


@dataclass(frozen=True)
class DatasetCommand:
    """Admins: ``/dataset …`` as typed (``image_key``: the picture sent with it, for ``add``)."""

    text: str
    image_key: str | None = None
    refusal: ClassVar[str | None] = NOT_ADMIN_DATASET

    def parse(self) -> DatasetAction:
        """The action the text names. Raises InputError ``dataset_usage`` with the usage."""
        words = self.text.split()
        if words and words[0].lower().split("@")[0] == "/dataset":
            words = words[1:]
        verb = words[0].lower() if words else ""
        if verb == "add" and len(words) >= 2:
            return DatasetAdd(words[1], " ".join(words[2:]), self.image_key)
        if verb == "list" and len(words) == 1:
            return DatasetList()
        if verb == "show" and len(words) == 2:
            return DatasetShow(words[1])
        if verb == "remove" and len(words) == 3:
            return DatasetRemove(words[1], words[2])
        raise InputError("dataset_usage", DATASET_USAGE)


def is_dataset_command(text: str) -> bool:
    """Whether ``text`` starts with ``/dataset`` (``/dataset@bot`` too)."""
    words = text.split()
    return bool(words) and words[0].lower().split("@")[0] == "/dataset"


# --- replies ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetAdded:
    """A picture was added: the ``item`` and the dataset's new size."""

    name: str
    item: DatasetItem
    count: int
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """What the admin is told."""
        return (
            f"Added {self.item.id} “{self.item.caption}” to dataset '{self.name}' "
            f"({_pictures(self.count)}). Train on it: /retrain dataset:{self.name}"
        )


@dataclass(frozen=True)
class DatasetsListed:
    """The datasets made in chat, as (name, size)."""

    datasets: list[tuple[str, int]]
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """One line per dataset, or how to start one."""
        if not self.datasets:
            return "No datasets made in chat yet. Start one: /dataset add NAME caption, with a picture."
        lines = [f"• {name} — {_pictures(count)}" for name, count in self.datasets]
        return "Datasets made in chat:\n" + "\n".join(lines)


@dataclass(frozen=True)
class DatasetShown:
    """Dataset ``name``: its size, its first items and a contact sheet (PNG) of their pictures."""

    name: str
    count: int
    items: list[DatasetItem]
    sheet_png: bytes
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """The size and the first captions with their item ids (the caption of the sheet)."""
        lines = [f"Dataset '{self.name}': {_pictures(self.count)}."]
        lines += [f"• {item.id} “{item.caption}”" for item in self.items[:SHOWN_CAPTIONS]]
        if self.count > SHOWN_CAPTIONS:
            lines.append(f"… and {self.count - SHOWN_CAPTIONS} more.")
        return "\n".join(lines)


@dataclass(frozen=True)
class DatasetItemRemoved:
    """An item was removed; ``left`` items remain (0: the dataset is gone)."""

    name: str
    item: DatasetItem
    left: int
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """What the admin is told."""
        done = f"Removed {self.item.id} “{self.item.caption}” from dataset '{self.name}'"
        if self.left == 0:
            return f"{done}; it was the last picture, so the dataset is gone."
        return f"{done}; {_pictures(self.left)} left."


DatasetReply = DatasetAdded | DatasetsListed | DatasetShown | DatasetItemRemoved


def _pictures(count: int) -> str:
    return f"{count} picture" + ("" if count == 1 else "s")


def dataset_store(settings: Settings) -> DatasetStore:
    """The community datasets of ``settings.data_dir`` (the configured dataset names are reserved)."""
    return DatasetStore(settings.data_dir, reserved=settings.dataset_names)


# --- handlers --------------------------------------------------------------------------------------
class DatasetActions:
    """Runs the dataset actions (the caller is already known to be an admin). Raises InputError."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.uploads = UploadStore(client, settings.result_ttl_s)

    @property
    def store(self) -> DatasetStore:
        """The store (built per call: the data dir's datasets may change under another process)."""
        return dataset_store(self.settings)

    def handlers(self) -> dict[type, Callable[[Any, Any], DatasetReply]]:
        """Action class -> handler ``(caller, action) -> reply``, for the conversation service."""
        return {
            DatasetCommand: lambda caller, action: self.run(caller.user, action.parse()),
            DatasetAdd: lambda caller, action: self.run(caller.user, action),
            DatasetList: lambda caller, action: self.run(caller.user, action),
            DatasetShow: lambda caller, action: self.run(caller.user, action),
            DatasetRemove: lambda caller, action: self.run(caller.user, action),
        }

    def run(self, user: str, action: DatasetAction) -> DatasetReply:
        """Do ``action`` for admin ``user`` (``platform:id``)."""
        store = self.store
        if isinstance(action, DatasetAdd):
            name, caption = check_dataset_name(action.name), check_caption(action.caption)
            item, count = store.add(name, caption, self._picture(action.image_key), user)
            return DatasetAdded(name, item, count)
        if isinstance(action, DatasetList):
            return DatasetsListed([(name, len(store.items(name))) for name in store.names()])
        if isinstance(action, DatasetShow):
            items = store.items(action.name)
            name = action.name.strip().lower()
            sheet = contact_sheet([store.image_path(name, i.id) for i in items[:MAX_THUMBS]])
            return DatasetShown(name, len(items), items, sheet)
        item, left = store.remove(action.name, action.item)
        return DatasetItemRemoved(action.name.strip().lower(), item, left)

    def _picture(self, image_key: str | None) -> bytes:
        if image_key is None:
            raise InputError("no_picture", NO_PICTURE_TEXT)
        if not is_upload_key(image_key):
            raise InputError("no_picture", NO_PICTURE_TEXT)
        png = self.uploads.get(image_key)
        if png is None:
            raise InputError("image_expired", "The picture has expired; send it again.")
        return png
