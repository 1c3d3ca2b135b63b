"""Celery tasks of the combiner registry: thin wrappers around its services."""

from celery import shared_task
from celery.utils.log import get_task_logger

from apps.combiners.services import combiners_expire_silent

logger = get_task_logger(__name__)


@shared_task(name="combiners.expire_silent", ignore_result=True)
def expire_silent_combiners() -> int:
    """Clients of combiners that stopped sending presence snapshots go offline."""
    expired = combiners_expire_silent()
    if expired:
        logger.info("%d client(s) of silent combiners marked offline", expired)
    return expired
