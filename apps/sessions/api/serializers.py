from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.sessions.choices import RoundStatus, SessionStatus
from apps.sessions.models import CombinerReport, Round, Session, Status, Validation
from apps.sessions.privacy import session_privacy
from apps.sessions.records import SESSION_CONFIG_FIELDS, session_config
from controlplane.api.fields import as_http_date
from controlplane.api.parsers import loads_storable
from controlplane.api.serializers import (
    FreeFormObjectField,
    HttpDateField,
    ReadOnlyField,
    Rfc3339Field,
    StrictIntegerField,
    StrictSerializer,
)
from fedplane.roundreport import (
    EchoedConfigKey,
    ReportField,
    ReportStatus,
    RoundReport,
    RoundReportError,
    Timing,
)


def shown_session_config(instance: Session) -> dict[str, Any]:
    """The session_config FEDn shows: the config, the session's id and when it was committed."""
    config = session_config(instance)
    config["committed_at"] = as_http_date(instance.committed_at)
    return config


# The typed keys every session_config has; keys a session_config was created with beyond these
# are kept and shown as they were sent.
SESSION_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "aggregator": {"type": "string"},
        "aggregator_kwargs": {"type": "object", "additionalProperties": True, "nullable": True},
        "round_timeout": {"type": "integer"},
        "buffer_size": {"type": "integer", "description": "-1: wait for every selected client."},
        "model_id": {"type": "string", "nullable": True},
        "rounds": {"type": "integer"},
        "delete_models_storage": {"type": "boolean"},
        "clients_required": {"type": "integer"},
        "clients_requested": {"type": "integer"},
        "validate": {"type": "boolean"},
        "helper_type": {"type": "string"},
        "task": {"type": "string"},
        "round_retries": {"type": "integer"},
        "session_id": {"type": "string"},
        "committed_at": {"type": "string", "example": "Wed, 22 May 2024 14:49:40 GMT"},
    },
    "required": [*SESSION_CONFIG_FIELDS, "session_id", "committed_at"],
    "additionalProperties": True,
}


PRIVACY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "nullable": True,
    "properties": {
        "epsilon": {"type": "number", "nullable": True, "description": "ε spent at δ (null: unbounded)."},
        "delta": {"type": "number"},
        "target_epsilon": {"type": "number", "nullable": True},
        "noise_multiplier": {"type": "number"},
        "rounds": {"type": "integer", "description": "Rounds booked (each attempt that released a model)."},
    },
}


@extend_schema_field(SESSION_CONFIG_SCHEMA)
class SessionConfigField(ReadOnlyField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="*", **kwargs)

    def to_representation(self, value: Session) -> dict[str, Any]:
        return shown_session_config(value)


class SessionSerializer(serializers.Serializer):
    """FEDn's session doc: {id, session_id, status, session_config, committed_at}, and its progress."""

    id = serializers.CharField(source="pk", read_only=True)
    session_id = serializers.CharField(read_only=True)
    status = serializers.ChoiceField(choices=SessionStatus.choices, read_only=True)
    status_reason = serializers.CharField(read_only=True)
    session_config = SessionConfigField()
    committed_at = HttpDateField()
    rounds_completed = serializers.IntegerField(read_only=True)
    started_at = HttpDateField(allow_null=True)
    finished_at = HttpDateField(allow_null=True)
    privacy = serializers.SerializerMethodField(
        help_text="fedplane extension: for a session with session_config.dp, the ε spent at δ after its "
        "last committed round, its target and noise multiplier; null without dp."
    )

    @extend_schema_field(PRIVACY_SCHEMA)
    def get_privacy(self, instance: Session) -> dict[str, Any] | None:
        return session_privacy(instance)


def session_doc(instance: Session) -> dict[str, Any]:
    return dict(SessionSerializer(instance).data)


class CombinerReportDocSerializer(serializers.Serializer):
    """An entry of a round's `combiners`: a stored report (fedplane.roundreport) under FEDn's names."""

    name = serializers.CharField(source="combiner", read_only=True)
    status = serializers.ChoiceField(choices=[status.value for status in ReportStatus], read_only=True)
    model_id = serializers.CharField(read_only=True, allow_null=True)
    round_id = serializers.SerializerMethodField(
        help_text="The round id the combiner echoed in its config (as it sent it), else the round's."
    )
    num_examples = serializers.IntegerField(read_only=True)
    participants = serializers.SerializerMethodField()
    reason = serializers.SerializerMethodField()
    timings = serializers.SerializerMethodField(help_text="Seconds, by step.")
    data = serializers.SerializerMethodField()
    config = serializers.SerializerMethodField(help_text="The round config the combiner echoed.")
    time_exec_training = serializers.SerializerMethodField()

    @staticmethod
    def _body(report: CombinerReport) -> dict[str, Any]:
        return report.report or {}

    @extend_schema_field({})
    def get_round_id(self, report: CombinerReport) -> Any:
        return (
            self._body(report).get(ReportField.CONFIG, {}).get(EchoedConfigKey.ROUND_ID)
            or report.round.round_id
        )

    @extend_schema_field({"type": "array", "items": {"type": "string"}})
    def get_participants(self, report: CombinerReport) -> list[str]:
        return self._body(report).get(ReportField.PARTICIPANTS, [])

    def get_reason(self, report: CombinerReport) -> str:
        return self._body(report).get(ReportField.REASON, "")

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "number"}})
    def get_timings(self, report: CombinerReport) -> dict[str, Any]:
        return self._body(report).get(ReportField.TIMINGS, {})

    @extend_schema_field({"type": "object", "additionalProperties": True})
    def get_data(self, report: CombinerReport) -> dict[str, Any]:
        return self._body(report).get(ReportField.DATA, {})

    @extend_schema_field({"type": "object", "additionalProperties": True})
    def get_config(self, report: CombinerReport) -> dict[str, Any]:
        return self._body(report).get(ReportField.CONFIG, {})

    @extend_schema_field({"type": "number", "nullable": True})
    def get_time_exec_training(self, report: CombinerReport) -> float | None:
        return self._body(report).get(ReportField.TIMINGS, {}).get(Timing.TIME_COMBINATION)


def report_doc(report: CombinerReport) -> dict[str, Any]:
    return dict(CombinerReportDocSerializer(report).data)


class RoundSerializer(serializers.Serializer):
    """FEDn's round doc: {id, round_id, status, round_config, combiners, round_data}, and its outcome."""

    id = serializers.CharField(source="pk", read_only=True)
    round_id = serializers.CharField(read_only=True)
    status = serializers.ChoiceField(choices=RoundStatus.choices, read_only=True)
    status_reason = serializers.CharField(read_only=True)
    session_id = serializers.CharField(source="session.session_id", read_only=True, allow_null=True)
    model_id = serializers.CharField(read_only=True, allow_null=True)
    round_config = FreeFormObjectField(help_text="The config the combiners were sent.")
    combiners = serializers.SerializerMethodField(
        help_text="The reports of the attempt that counts; earlier attempts are in round_data.attempts."
    )
    round_data = FreeFormObjectField(
        help_text="What the controller recorded: participants, lost combiners, reduce and validation facts."
    )
    retries = serializers.IntegerField(source="attempt", read_only=True)

    @extend_schema_field(CombinerReportDocSerializer(many=True))
    def get_combiners(self, instance: Round) -> list[dict[str, Any]]:
        return [report_doc(report) for report in instance.reports.all() if report.attempt == instance.attempt]


class SenderSerializer(serializers.Serializer):
    name = serializers.CharField(source="sender_name", read_only=True)
    role = serializers.CharField(source="sender_role", read_only=True)


class ReceiverSerializer(serializers.Serializer):
    name = serializers.CharField(source="receiver_name", read_only=True)
    role = serializers.CharField(source="receiver_role", read_only=True)


class StatusRawSerializer(serializers.Serializer):
    """A status as the combiner forwarded it (camelCase), asked for with `X-Skip-Typing: true`."""

    id = serializers.CharField(source="pk", read_only=True)
    sender = SenderSerializer(source="*", read_only=True)
    status = serializers.CharField(read_only=True)
    logLevel = serializers.CharField(source="log_level", read_only=True)
    data = serializers.CharField(read_only=True)
    correlationId = serializers.CharField(source="correlation_id", read_only=True)
    timestamp = Rfc3339Field()
    type = serializers.CharField(read_only=True)
    extra = serializers.CharField(read_only=True)
    sessionId = serializers.CharField(source="session_id", read_only=True)


class ValidationRawSerializer(serializers.Serializer):
    """A validation as the combiner forwarded it (camelCase), asked for with `X-Skip-Typing: true`."""

    id = serializers.CharField(source="pk", read_only=True)
    sender = SenderSerializer(source="*", read_only=True)
    receiver = ReceiverSerializer(source="*", read_only=True)
    modelId = serializers.CharField(source="model_id", read_only=True)
    data = serializers.CharField(read_only=True, help_text="JSON text of the metrics.")
    correlationId = serializers.CharField(source="correlation_id", read_only=True)
    timestamp = Rfc3339Field()
    meta = serializers.CharField(read_only=True)
    sessionId = serializers.CharField(source="session_id", read_only=True)


class StatusSerializer(serializers.Serializer):
    """A status, typed (snake_case); the routes answer StatusRawSerializer's form to `X-Skip-Typing: true`."""

    id = serializers.CharField(source="pk", read_only=True)
    status = serializers.CharField(read_only=True)
    timestamp = Rfc3339Field()
    log_level = serializers.CharField(read_only=True)
    data = serializers.CharField(read_only=True)
    correlation_id = serializers.CharField(read_only=True)
    type = serializers.CharField(read_only=True)
    extra = serializers.CharField(read_only=True)
    session_id = serializers.CharField(read_only=True)
    sender = SenderSerializer(source="*", read_only=True)


class ValidationSerializer(serializers.Serializer):
    """A validation, typed (snake_case); the routes answer ValidationRawSerializer's form to `X-Skip-Typing: true`."""

    id = serializers.CharField(source="pk", read_only=True)
    model_id = serializers.CharField(read_only=True)
    data = serializers.CharField(read_only=True, help_text="JSON text of the metrics.")
    correlation_id = serializers.CharField(read_only=True)
    timestamp = Rfc3339Field()
    session_id = serializers.CharField(read_only=True)
    meta = serializers.CharField(read_only=True)
    sender = SenderSerializer(source="*", read_only=True)
    receiver = ReceiverSerializer(source="*", read_only=True)


def status_doc(instance: Status, typed: bool = True) -> dict[str, Any]:
    serializer = StatusSerializer if typed else StatusRawSerializer
    return dict(serializer(instance).data)


def validation_doc(instance: Validation, typed: bool = True) -> dict[str, Any]:
    serializer = ValidationSerializer if typed else ValidationRawSerializer
    return dict(serializer(instance).data)


@extend_schema_field({"type": "object", "additionalProperties": True})
class JsonObjectField(serializers.Field):
    """A JSON object; in form data, its JSON text. Anything else is refused rather than emptied."""

    default_error_messages = {"invalid": "must be a JSON object"}

    def get_value(self, dictionary: Any) -> Any:
        # DictField would gather `name.key` form fields and turn a plain string into {}.
        return dictionary.get(self.field_name, serializers.empty)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, str):
            try:
                data = loads_storable(data)  # the JSON parser's bounds, for JSON in a form field
            except ValueError:
                self.fail("invalid")
        if not isinstance(data, dict):
            self.fail("invalid")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class SessionCreateSerializer(StrictSerializer):
    session_id = serializers.CharField(required=False, allow_null=True, max_length=128)
    session_config = JsonObjectField()


class SessionStartSerializer(StrictSerializer):
    session_id = serializers.CharField(max_length=128)
    rounds = StrictIntegerField(min_value=1, required=False)


def _report_fields() -> dict[str, serializers.Field]:
    """The DRF fields of a round report, one per ReportField; the checks of the contract come after."""
    fields: dict[str, serializers.Field] = {
        ReportField.COMBINER: serializers.CharField(max_length=128),
        ReportField.STATUS: serializers.ChoiceField(choices=[status.value for status in ReportStatus]),
        ReportField.REASON: serializers.CharField(required=False, allow_blank=True, default=""),
        ReportField.MODEL_ID: serializers.CharField(
            required=False, allow_null=True, allow_blank=True, max_length=64
        ),
        ReportField.NUM_EXAMPLES: StrictIntegerField(required=False, min_value=0, default=0),
        ReportField.PARTICIPANTS: serializers.ListField(
            child=serializers.CharField(), required=False, default=list
        ),
        ReportField.TIMINGS: serializers.DictField(required=False, default=dict),
        ReportField.DATA: serializers.DictField(required=False, default=dict),
        ReportField.CONFIG: serializers.DictField(required=False, default=dict),
    }
    assert list(fields) == list(ReportField), "a ReportField without its serializer field"
    return {str(name): value for name, value in fields.items()}


class RoundReportSerializer(StrictSerializer):
    """A combiner's report of its part of a round (fedplane.roundreport.RoundReport)."""

    # The DRF fields keep the parsing this route always had (numbers taken as text, whole floats
    # as integers, strings trimmed); `validate` then holds the result to the contract and returns
    # its wire form, defaults filled in: that is what round_record_report stores.

    def get_fields(self) -> dict[str, serializers.Field]:
        return _report_fields()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            return dict(RoundReport.from_json(attrs).to_json())
        except RoundReportError as exc:
            raise serializers.ValidationError({exc.field or "non_field_errors": [exc.message]}) from exc
