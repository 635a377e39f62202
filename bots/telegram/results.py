"""What the bot process posts itself for a result's buttons and ``/show`` (the delivery worker posts
the results): a picked picture full size (U-n, no drawing), a job's result again (``/show``), and
the ✏️ Remix question, a message with a forced reply whose answer becomes the remix.

A remix question is remembered in Redis (chat and message id -> job and picture) for as long as
results are kept, so its answer still works after a restart of the bot.
"""

from __future__ import annotations

import asyncio

import redis
from telegram import Bot, ForceReply, Message

from bots.telegram.api import replying_to
from bots.telegram.buttons import picked_keyboard, result_keyboard
from bots.telegram.send import TEXT_MAX, post_picture
from core.compose import ENGINE_TITLES
from core.conversation import Picked, RemixAsk, RemixPrompt, ResultShown
from core.nsfw import behind_spoiler
from core.store import ImageStore

#: Telegram shows at most this much of a forced reply's placeholder.
PLACEHOLDER_MAX = 64
REMIX_KEY = "ib:telegram:remix:{chat}:{message}"


async def post_picked(bot: Bot, images: ImageStore, picked: Picked, answer_to: Message) -> bool:
    """Post picture ``picked.index`` of each engine full size as an answer to ``answer_to``, one
    message per picture; the last carries the caption naming them all and the picked picture's
    buttons. False (nothing posted) when the pictures have expired."""
    found = [(p, await asyncio.to_thread(images.get, p.image_key)) for p in picked.pictures]
    if not found or any(png is None for _, png in found):
        return False
    for number, (picture, png) in enumerate(found, start=1):
        last = number == len(found)
        title = f"{ENGINE_TITLES.get(picture.engine, picture.engine)} {picture.version}"
        await post_picture(
            bot,
            answer_to.chat_id,
            png or b"",
            picked.text if last else title,
            picked_keyboard(picked.record, picked.index) if last else None,
            spoiler=picture.spoiler,
            **replying_to(answer_to),
        )
    return True


async def post_shown(bot: Bot, images: ImageStore, shown: ResultShown, answer_to: Message) -> bool:
    """Post the job's paired image again with its result buttons, as an answer to ``answer_to``;
    False when it has expired."""
    record = shown.record
    png = await asyncio.to_thread(images.get, record.pair_key) if record.pair_key else None
    if png is None:
        return False
    spoiler = behind_spoiler(record.results)
    await post_picture(
        bot,
        answer_to.chat_id,
        png,
        shown.text,
        result_keyboard(record),
        spoiler=spoiler,
        **replying_to(answer_to),
    )
    return True


async def ask_remix(
    bot: Bot, client: redis.Redis, asked: RemixPrompt, answer_to: Message, ttl_s: int
) -> None:
    """Ask for the new prompt of the picture to remix: a forced reply (its placeholder shows the
    old prompt), remembered so that the answer becomes the remix."""
    question = await bot.send_message(
        answer_to.chat_id,
        asked.text[:TEXT_MAX],
        reply_markup=ForceReply(selective=True, input_field_placeholder=asked.prompt[:PLACEHOLDER_MAX]),
        **replying_to(answer_to),
    )
    key = REMIX_KEY.format(chat=question.chat_id, message=question.message_id)
    client.set(key, f"{asked.record.id}:{asked.index}", ex=max(ttl_s, 60))


def asked_remix(client: redis.Redis, message: Message | None) -> RemixAsk | None:
    """The remix a reply to ``message`` answers, when ``message`` is one of our remix questions."""
    if message is None:
        return None
    value = client.get(REMIX_KEY.format(chat=message.chat_id, message=message.message_id))
    if value is None:
        return None
    job_id, _, index = value.decode().partition(":")
    return RemixAsk(job_id, int(index))
