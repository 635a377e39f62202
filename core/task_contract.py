"""The Celery contract between front-ends and workers: queue and task names, and a producer.

Front-ends send tasks by name so they never import the worker (and with it, torch). The worker's
full configuration lives in :mod:`worker.app`, which starts from :func:`base_celery_config`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

QUEUE_GPU = "gpu"
QUEUE_DELIVERY = "delivery"
QUEUE_TRAIN = "train"
ALL_QUEUES = (QUEUE_GPU, QUEUE_DELIVERY, QUEUE_TRAIN)


def model_queue(model: str | None) -> str:
    """The queue (and fair-queue route) of a job for diffusion model ``model``: ``gpu`` for the
    default model (and DF-GAN-only jobs), ``gpu.<model>`` for another: only workers that serve that
    model consume it."""
    return QUEUE_GPU if not model or model == "default" else f"{QUEUE_GPU}.{model}"


GENERATE_TASK = "imaginebot.generate"
DELIVER_TASK = "imaginebot.deliver"
TRAIN_TASK = "imaginebot.train"
#: A no-op that only writes when it ran: the floor of a Celery round trip (benchmarks, health checks).
PING_TASK = "imaginebot.ping"
#: The keys a ping may write (it never writes anything else).
PING_PREFIX = "ib:ping:"


def base_celery_config(broker_url: str) -> dict[str, Any]:
    """Settings both sides must agree on: broker and JSON-only serialisation (never pickle)."""
    return {
        "broker_url": broker_url,
        "result_backend": None,  # results live in our own job records, not Celery's backend
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_default_queue": QUEUE_GPU,
        "broker_connection_retry_on_startup": True,
        "task_routes": {
            GENERATE_TASK: {"queue": QUEUE_GPU},
            DELIVER_TASK: {"queue": QUEUE_DELIVERY},
            TRAIN_TASK: {"queue": QUEUE_TRAIN},
        },
    }


def make_producer(broker_url: str) -> Celery:
    """A Celery app that only sends tasks (used by the bots and the CLI)."""
    app = Celery("imaginebot-producer", set_as_current=False)
    app.conf.update(base_celery_config(broker_url))
    return app
