"""Celery application. Broker from CELERY_BROKER_URL (Redis in production and tests); without one, a
SQLite-backed broker in DATA_DIR that needs no server.

    celery -A edgeledger.worker worker -B      # worker with the beat scheduler
"""

from __future__ import annotations

from celery import Celery

from edgeledger.config import get_settings

settings = get_settings()
celery_app = Celery(
    "edgeledger",
    broker=settings.resolved_broker_url,
    include=[
        "edgeledger.assets.tasks",
        "edgeledger.deliveries.tasks",
        "edgeledger.settlement.tasks",
        "edgeledger.compliance.tasks",
        "edgeledger.indexer.tasks",
    ],
)
celery_app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,  # a worker killed mid-task leaves the task for another worker
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    beat_schedule={
        "reconcile-registrations": {"task": "edgeledger.assets.reconcile_registrations", "schedule": 60.0},
        "close-due-batches": {"task": "edgeledger.deliveries.close_due_batches", "schedule": 60.0},
        "anchor-pending": {"task": "edgeledger.deliveries.anchor_pending", "schedule": 15.0},
        "confirm-anchors": {"task": "edgeledger.deliveries.confirm_anchors", "schedule": 15.0},
        "settle": {"task": "edgeledger.settlement.run", "schedule": 60.0},
        "compliance": {"task": "edgeledger.compliance.run", "schedule": 60.0},
        "index-chain": {"task": "edgeledger.indexer.follow", "schedule": 15.0},
    },
    beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
)
app = celery_app
