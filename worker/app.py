"""The Celery app: all worker-side Celery configuration lives here.

Run a worker with ``imaginebot worker --queues gpu,delivery,train`` (or
``celery -A worker.app worker -Q gpu``). Settings come from :class:`core.settings.Settings`.
"""

from __future__ import annotations

from celery import Celery

from core.log_redaction import install_redaction
from core.settings import Settings
from core.task_contract import base_celery_config

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


def create_app(settings: Settings | None = None) -> Celery:
    """A configured Celery app for ``settings`` with the imaginebot tasks registered."""
    settings = settings or Settings()
    install_redaction(settings)  # also for `celery -A worker.app worker`, which skips our CLI
    app = Celery("imaginebot", set_as_current=False)
    app.conf.update(base_celery_config(settings.redis_url or DEFAULT_BROKER))
    app.conf.update(
        # A job is acknowledged only once it has finished, and given back if the worker dies,
        # so no job is lost to a crash; tasks are idempotent per job id.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Redis hands an unacknowledged message to another worker after the visibility timeout:
        # that is how a job of a worker that died is recovered. A job still running past it is
        # not drawn twice: the job record's lease tells the second worker to wait (see generate.py).
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_s,
            # Sweep for abandoned messages at a pace that matches the timeout.
            "unacked_restore_interval": max(1, min(10, settings.broker_visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1 if settings.broker_visibility_timeout_s < 60 else 10,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_ignore_result=True,
    )
    app.imaginebot_settings = settings  # type: ignore[attr-defined]
    # Import registers the tasks (shared_task) with every app, this one included.
    import worker.tasks  # noqa: F401
    from worker.heartbeat import install as install_heartbeat

    install_heartbeat(app)  # liveness in Redis: which engines this worker serves (core/heartbeats.py)
    from worker.metrics import install as install_metrics

    install_metrics()  # Celery signals feed the Prometheus metrics (worker/metrics.py)

    return app


app = create_app()
