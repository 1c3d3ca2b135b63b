"""Celery tasks of the client registry: thin wrappers around its services."""

from celery import shared_task
from celery.utils.log import get_task_logger

from apps.clients.presence import combiners_expire_silent

logger = get_task_logger(__name__)


# The name predates this module; beat schedules saved under it keep working.
@shared_task(name="combiners.expire_silent", ignore_result=True)
def expire_silent_combiners() -> int:
    """Clients of combiners that stopped sending presence snapshots go offline."""
    expired = combiners_expire_silent()
    if expired:
        logger.info("%d client(s) of silent combiners marked offline", expired)
    return expired
