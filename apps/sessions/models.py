import datetime as dt
from typing import Any

from django.db import models
from django.db.models import Q

from apps.sessions.choices import (
    ControllerStateValue,
    LogLevel,
    Role,
    RoundStatus,
    SessionStatus,
    SessionStep,
    StatusType,
)
from controlplane.querysets import NaturalKeyQuerySet
from fedplane.roundreport import ReportStatus


class SessionQuerySet(NaturalKeyQuerySet["Session"]):
    natural_keys = ("session_id",)


class RoundQuerySet(NaturalKeyQuerySet["Round"]):
    # FEDn's round_id is the round's number as a string; the pk is tried after it.
    natural_keys = ("round_id",)


class Session(models.Model):
    """A training session; every key of FEDn's session_config is a typed field."""

    session_id = models.CharField(max_length=128, unique=True)
    status = models.CharField(
        max_length=16, choices=SessionStatus.choices, default=SessionStatus.CREATED, db_index=True
    )
    status_reason = models.TextField(blank=True, default="")

    aggregator = models.CharField(max_length=64, default="fedavg", db_index=True)
    aggregator_kwargs = models.JSONField(blank=True, null=True)
    round_timeout = models.PositiveIntegerField(default=180)
    buffer_size = models.IntegerField(default=-1, help_text="-1: wait for every selected client.")
    model_id = models.CharField(max_length=64, blank=True, null=True, help_text="Seed model of the session.")
    rounds = models.PositiveIntegerField(default=5)
    delete_models_storage = models.BooleanField(default=True)
    clients_required = models.PositiveIntegerField(default=1)
    clients_requested = models.PositiveIntegerField(default=8)
    round_retries = models.PositiveIntegerField(
        default=1,
        help_text="How often a round that lost its combiners is started again before the session fails.",
    )
    validate = models.BooleanField(default=True)
    helper_type = models.CharField(max_length=64, default="numpyhelper")
    task = models.CharField(max_length=32, blank=True, default="")
    # Keys of a v1 session_config outside FEDn's documented set, kept as given.
    extra_config = models.JSONField(blank=True, default=dict)

    committed_at = models.DateTimeField(auto_now_add=True, db_index=True)
    start_requested_at = models.DateTimeField(blank=True, null=True)
    started_at = models.DateTimeField(blank=True, null=True)
    finished_at = models.DateTimeField(blank=True, null=True)
    rounds_completed = models.PositiveIntegerField(default=0)
    stop_requested = models.BooleanField(default=False)

    # Orchestration: the step the state machine is at, and who is working on it until when.
    step = models.CharField(max_length=16, choices=SessionStep.choices, default=SessionStep.PENDING)
    step_deadline = models.DateTimeField(blank=True, null=True)
    current_round = models.ForeignKey(
        "Round", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    lease_token = models.CharField(max_length=32, blank=True, default="")
    lease_until = models.DateTimeField(blank=True, null=True)
    next_run_at = models.DateTimeField(blank=True, null=True, db_index=True)
    # The one chain of step tasks that may run: each task carries the token it was enqueued with,
    # and a task whose token is no longer this one is a stale duplicate and does nothing.
    wake_token = models.CharField(max_length=32, blank=True, default="")
    # What a step waits for happened while a step held the lease: the next step runs at once.
    wake_pending = models.BooleanField(default=False)

    objects = SessionQuerySet.as_manager()

    class Meta:
        ordering = ["-committed_at", "-id"]

    def __str__(self) -> str:
        return self.session_id


class Round(models.Model):
    """One round of a session; round_id is FEDn's global counter ("1", "2", ...)."""

    number = models.PositiveIntegerField(unique=True)
    round_id = models.CharField(max_length=32, unique=True)
    session = models.ForeignKey(
        Session, on_delete=models.CASCADE, related_name="round_set", null=True, blank=True
    )
    status = models.CharField(
        max_length=16, choices=RoundStatus.choices, default=RoundStatus.PENDING, db_index=True
    )
    status_reason = models.TextField(blank=True, default="")
    round_config = models.JSONField(blank=True, default=dict)
    round_data = models.JSONField(blank=True, default=dict)
    model_id = models.CharField(
        max_length=64, blank=True, null=True, help_text="Global model this round made."
    )
    # 0 for the first attempt; each retry (same number, fresh deadline) adds one.
    attempt = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    # When the combiners first accepted the round, and when it ended: its model committed, or it
    # failed or was stopped. Retries fall between the two; validation comes after.
    started_at = models.DateTimeField(blank=True, null=True)
    finished_at = models.DateTimeField(blank=True, null=True)

    objects = RoundQuerySet.as_manager()

    class Meta:
        ordering = ["-number"]

    def __str__(self) -> str:
        return f"round {self.round_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # auto_now sets updated_at only when it is among the fields saved: every save moves it.
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            kwargs["update_fields"] = {*update_fields, "updated_at"}
        super().save(*args, **kwargs)

    @property
    def duration(self) -> dt.timedelta | None:
        """From the first start to the commit (or failure, or stop); None while either is unknown."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class CombinerReport(models.Model):
    """What one combiner reported for one round (an entry of FEDn's round `combiners` list)."""

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="reports")
    combiner = models.CharField(max_length=128)
    status = models.CharField(max_length=16, default=ReportStatus.SUCCESS.value)
    model_id = models.CharField(max_length=64, blank=True, null=True)
    num_examples = models.BigIntegerField(default=0)
    report = models.JSONField(default=dict)
    # The attempt of the round it answers: a retried round ignores the reports of earlier attempts.
    attempt = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["received_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["round", "combiner", "attempt"], name="one_report_per_combiner_attempt"
            )
        ]

    def __str__(self) -> str:
        return f"{self.combiner} @ round {self.round_id}"


class Status(models.Model):
    """An event (FEDn's `control.status`)."""

    sender_name = models.CharField(max_length=128, blank=True, default="")
    sender_role = models.CharField(max_length=16, choices=Role.choices, default=Role.WORKER, db_index=True)
    status = models.TextField(blank=True, default="")
    log_level = models.CharField(
        max_length=16, choices=LogLevel.choices, default=LogLevel.INFO, db_index=True
    )
    data = models.TextField(blank=True, default="")
    correlation_id = models.CharField(max_length=128, blank=True, default="", db_index=True)
    timestamp = models.DateTimeField()
    type = models.CharField(max_length=32, choices=StatusType.choices, default=StatusType.LOG)
    extra = models.TextField(blank=True, default="")
    session_id = models.CharField(max_length=128, blank=True, default="")

    objects = NaturalKeyQuerySet["Status"].as_manager()

    class Meta:
        ordering = ["-timestamp", "-id"]
        verbose_name_plural = "statuses"
        # Each filter FEDn's clients and the admin use, ending in the sort key, so a filtered page
        # is read in order from one index (no sort of the matches) and a count scans only the index.
        indexes = [
            models.Index(fields=["timestamp", "id"], name="status_time"),
            models.Index(fields=["session_id", "timestamp", "id"], name="status_session_time"),
            models.Index(fields=["type", "timestamp", "id"], name="status_type_time"),
            models.Index(fields=["sender_name", "type", "timestamp", "id"], name="status_sender_type_time"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.sender_name}: {self.status[:60]}"


class Validation(models.Model):
    """A client's validation of a model (FEDn's `control.validations`)."""

    sender_name = models.CharField(max_length=128, blank=True, default="")
    sender_role = models.CharField(max_length=16, choices=Role.choices, default=Role.WORKER, db_index=True)
    receiver_name = models.CharField(max_length=128, blank=True, default="", db_index=True)
    receiver_role = models.CharField(
        max_length=16, choices=Role.choices, default=Role.COMBINER, db_index=True
    )
    model_id = models.CharField(max_length=64, blank=True, default="")
    data = models.TextField(blank=True, default="", help_text="JSON of the metrics.")
    correlation_id = models.CharField(max_length=128, blank=True, default="", db_index=True)
    timestamp = models.DateTimeField()
    meta = models.TextField(blank=True, default="")
    session_id = models.CharField(max_length=128, blank=True, default="")

    objects = NaturalKeyQuerySet["Validation"].as_manager()

    class Meta:
        ordering = ["-timestamp", "-id"]
        # As for statuses: the filters in use, each ending in the sort key.
        indexes = [
            models.Index(fields=["timestamp", "id"], name="validation_time"),
            models.Index(fields=["model_id", "timestamp", "id"], name="validation_model_time"),
            models.Index(fields=["session_id", "timestamp", "id"], name="validation_session_time"),
            models.Index(fields=["sender_name", "timestamp", "id"], name="validation_sender_time"),
        ]
        # A combiner resends a batch whose answer it lost: a client's answer to one validation
        # request (its correlation id) is stored once, however often it arrives.
        constraints = [
            models.UniqueConstraint(
                fields=["sender_name", "model_id", "correlation_id"],
                condition=~Q(correlation_id=""),
                name="validation_once_per_request",
            )
        ]

    def __str__(self) -> str:
        return f"{self.sender_name} on {self.model_id}"


class ForwardedBatch(models.Model):
    """A batch of statuses or validations a combiner forwarded, by the key it sent it with.

    A combiner that lost the controller's answer sends the same batch again under the same key;
    the receipt, written in the same transaction as the batch's rows, makes that resend store nothing.
    """

    sender = models.CharField(max_length=128, blank=True, default="", help_text="The token's subject.")
    key = models.CharField(max_length=64)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sender", "key"], name="forwarded_batch_once")]

    def __str__(self) -> str:
        return f"{self.sender or '-'}:{self.key}"


class ControllerState(models.Model):
    """The controller's state, one row, in the database so every process sees the same."""

    singleton = models.BooleanField(default=True, unique=True, editable=False)
    state = models.CharField(
        max_length=16, choices=ControllerStateValue.choices, default=ControllerStateValue.IDLE
    )
    session = models.ForeignKey(Session, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(singleton=True), name="controller_state_singleton")]

    def __str__(self) -> str:
        return self.state


class ScheduledStart(models.Model):
    """One firing of a beat schedule that starts a session: started, or skipped with the reason."""

    schedule_name = models.CharField(max_length=200, db_index=True)
    fired_at = models.DateTimeField(auto_now_add=True, db_index=True)
    outcome = models.CharField(max_length=16, choices=[("started", "Started"), ("skipped", "Skipped")])
    reason = models.TextField(blank=True, default="")
    session = models.ForeignKey(Session, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-fired_at", "-id"]

    def __str__(self) -> str:
        return f"{self.schedule_name} {self.outcome} at {self.fired_at:%Y-%m-%d %H:%M}"
