"""``/dataset`` in the conversation: the actions admins use to build community datasets, their
replies (every text written here, once) and their handlers (:class:`DatasetActions`, which
:class:`core.conversation.service.ConversationService` registers).

- ``/dataset add NAME caption…`` with a picture (``image_key``: an upload stored by
  :class:`core.uploads.UploadStore`) → :class:`DatasetAdded`
- ``/dataset list`` → :class:`DatasetsListed`
- ``/dataset show NAME`` → :class:`DatasetShown` (count, a contact sheet PNG, a few captions)
- ``/dataset remove NAME ITEM`` → :class:`DatasetItemRemoved`
- ``/dataset add NAME`` alone → :class:`DatasetCollecting`: the caller's next pictures in that chat
  (each with its caption) go into NAME (:class:`Collecting`); ``/dataset done`` stops it

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
    "Usage: /dataset add NAME caption (with a picture), /dataset add NAME (then send captioned pictures), "
    "/dataset done, /dataset list, /dataset show NAME, /dataset remove NAME ITEM."
)
NO_PICTURE_TEXT = (
    "Which picture? Send /dataset add NAME caption with the picture attached (or as a reply to it)."
)
#: How many captions /dataset show lists.
SHOWN_CAPTIONS = 5
#: How long ``/dataset add NAME`` (no caption, no picture) keeps collecting the caller's pictures.
COLLECT_S = 10 * 60
_COLLECT_KEY = "ib:dataset-collect:"


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


@dataclass(frozen=True)
class DatasetCollect:
    """Admins: the next pictures the caller sends in this chat (each with its caption) go into
    dataset ``name`` for :data:`COLLECT_S` seconds; ``name`` None stops that."""

    name: str | None
    refusal: ClassVar[str | None] = NOT_ADMIN_DATASET


DatasetAction = DatasetAdd | DatasetList | DatasetShow | DatasetRemove | DatasetCollect


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
        if verb == "add" and len(words) == 2 and self.image_key is None:
            return DatasetCollect(words[1])
        if verb == "add" and len(words) >= 2:
            return DatasetAdd(words[1], " ".join(words[2:]), self.image_key)
        if verb == "done" and len(words) == 1:
            return DatasetCollect(None)
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


@dataclass(frozen=True)
class DatasetCollecting:
    """The caller's next pictures go into dataset ``name`` (None: collecting stopped; ``was``: the
    dataset it stopped for, if any)."""

    name: str | None
    was: str | None = None
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """What to send next, or that it stopped."""
        if self.name is not None:
            return (
                f"Send the pictures for dataset '{self.name}' now, each with its caption "
                f"(for {COLLECT_S // 60} minutes; /dataset done to stop)."
            )
        return f"Stopped adding pictures to '{self.was}'." if self.was else "You were not adding pictures."


DatasetReply = DatasetAdded | DatasetsListed | DatasetShown | DatasetItemRemoved | DatasetCollecting


class Collecting:
    """Which dataset each caller is adding pictures to, per chat, in Redis (expires after
    :data:`COLLECT_S` of no new picture)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    @staticmethod
    def _key(user: str, chat_id: str) -> str:
        return f"{_COLLECT_KEY}{user}:{chat_id}"

    def start(self, user: str, chat_id: str, name: str) -> None:
        """Collect ``user``'s pictures in ``chat_id`` into dataset ``name``."""
        self.redis.set(self._key(user, chat_id), name, ex=COLLECT_S)

    def stop(self, user: str, chat_id: str) -> str | None:
        """Stop collecting; returns the dataset it was for, if any."""
        name = self.redis.getdel(self._key(user, chat_id))
        return name.decode() if isinstance(name, bytes) else None

    def current(self, user: str, chat_id: str) -> str | None:
        """The dataset ``user``'s next picture in ``chat_id`` goes into (its time starts again)."""
        key = self._key(user, chat_id)
        name = self.redis.get(key)
        if not isinstance(name, bytes):
            return None
        self.redis.expire(key, COLLECT_S)
        return name.decode()


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
        self.collecting = Collecting(client)

    @property
    def store(self) -> DatasetStore:
        """The store (built per call: the data dir's datasets may change under another process)."""
        return dataset_store(self.settings)

    def handlers(self) -> dict[type, Callable[[Any, Any], DatasetReply]]:
        """Action class -> handler ``(caller, action) -> reply``, for the conversation service."""
        return {
            DatasetCommand: lambda caller, action: self.command(caller, action.parse()),
            DatasetAdd: lambda caller, action: self.run(caller.user, action),
            DatasetList: lambda caller, action: self.run(caller.user, action),
            DatasetShow: lambda caller, action: self.run(caller.user, action),
            DatasetRemove: lambda caller, action: self.run(caller.user, action),
            DatasetCollect: self.collect,
        }

    def collect(self, caller: Any, action: DatasetCollect) -> DatasetCollecting:
        """Start (a checked, free name) or stop collecting the caller's pictures in their chat."""
        chat_id = caller.conversation.chat_id
        if action.name is None:
            return DatasetCollecting(None, self.collecting.stop(caller.user, chat_id))
        name = check_dataset_name(action.name)
        self.store.check_new_name(name)
        self.collecting.start(caller.user, chat_id, name)
        return DatasetCollecting(name)

    def command(self, caller: Any, action: DatasetAction) -> DatasetReply:
        """The action a ``/dataset`` text named, for ``caller``."""
        if isinstance(action, DatasetCollect):
            return self.collect(caller, action)
        return self.run(caller.user, action)

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
        assert isinstance(action, DatasetRemove), action
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
