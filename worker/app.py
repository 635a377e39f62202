"""The Celery app: all worker-side Celery configuration lives here.

Run a worker with ``imaginebot worker --queues gpu,delivery,train`` (or
``celery -A worker.app worker -Q gpu``). Settings come from :class:`core.settings.Settings`.
"""

from __future__ import annotations

from celery import Celery

from core.settings import Settings
from core.taskqueue import base_celery_config

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


def create_app(settings: Settings | None = None) -> Celery:
    """A configured Celery app for ``settings`` with the imaginebot tasks registered."""
    settings = settings or Settings()
    app = Celery("imaginebot", set_as_current=False)
    app.conf.update(base_celery_config(settings.redis_url or DEFAULT_BROKER))
    app.conf.update(
        # A job is acknowledged only once it has finished, and given back if the worker dies,
        # so no job is lost to a crash; tasks are idempotent per job id.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Training runs for hours: the Redis visibility timeout must exceed the longest task, or
        # Redis hands the message to a second worker while the first still runs it.
        broker_transport_options={"visibility_timeout": 12 * 3600},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_ignore_result=True,
    )
    app.imaginebot_settings = settings  # type: ignore[attr-defined]
    # Import registers the tasks (shared_task) with every app, this one included.
    import worker.tasks  # noqa: F401

    return app


app = create_app()
