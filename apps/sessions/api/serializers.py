import json
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.sessions.models import CombinerReport, Round, Session, Status, Validation
from apps.sessions.records import session_config
from controlplane.api.fields import as_http_date, as_rfc3339
from controlplane.api.serializers import StrictIntegerField, StrictSerializer
from fedplane.roundreport import (
    EchoedConfigKey,
    ReportField,
    ReportStatus,
    RoundReport,
    RoundReportError,
    Timing,
)


def session_doc(instance: Session) -> dict[str, Any]:
    config = session_config(instance)
    config["committed_at"] = as_http_date(instance.committed_at)
    return {
        "id": str(instance.pk),
        "session_id": instance.session_id,
        "status": instance.status,
        "status_reason": instance.status_reason,
        "session_config": config,
        "committed_at": as_http_date(instance.committed_at),
        "rounds_completed": instance.rounds_completed,
        "started_at": as_http_date(instance.started_at),
        "finished_at": as_http_date(instance.finished_at),
    }


class SessionSerializer(serializers.ModelSerializer):
    """FEDn's session doc: {id, session_id, status, session_config, committed_at}."""

    class Meta:
        model = Session
        fields = ["session_id"]

    def to_representation(self, instance: Session) -> dict[str, Any]:
        return session_doc(instance)


def report_doc(report: CombinerReport) -> dict[str, Any]:
    """An entry of a round's `combiners`: the stored report (fedplane.roundreport) under FEDn's names."""
    body = report.report or {}
    config = body.get(ReportField.CONFIG, {})
    timings = body.get(ReportField.TIMINGS, {})
    return {
        "name": report.combiner,
        "status": report.status,
        "model_id": report.model_id,
        "round_id": config.get(EchoedConfigKey.ROUND_ID) or report.round.round_id,
        "num_examples": report.num_examples,
        "participants": body.get(ReportField.PARTICIPANTS, []),
        "reason": body.get(ReportField.REASON, ""),
        "timings": timings,
        "data": body.get(ReportField.DATA, {}),
        "config": config,
        "time_exec_training": timings.get(Timing.TIME_COMBINATION),
    }


class RoundSerializer(serializers.ModelSerializer):
    """FEDn's round doc: {id, round_id, status, round_config, combiners, round_data}."""

    class Meta:
        model = Round
        fields = ["round_id"]

    def to_representation(self, instance: Round) -> dict[str, Any]:
        return {
            "id": str(instance.pk),
            "round_id": instance.round_id,
            "status": instance.status,
            "status_reason": instance.status_reason,
            "session_id": instance.session.session_id if instance.session else None,
            "model_id": instance.model_id,
            "round_config": instance.round_config,
            # The attempt that counts; earlier attempts of a retried round are in round_data["attempts"].
            "combiners": [
                report_doc(report) for report in instance.reports.all() if report.attempt == instance.attempt
            ],
            "round_data": instance.round_data,
            "retries": instance.attempt,
        }


def status_doc(instance: Status, typed: bool = True) -> dict[str, Any]:
    sender = {"name": instance.sender_name, "role": instance.sender_role}
    if not typed:
        return {
            "id": str(instance.pk),
            "sender": sender,
            "status": instance.status,
            "logLevel": instance.log_level,
            "data": instance.data,
            "correlationId": instance.correlation_id,
            "timestamp": as_rfc3339(instance.timestamp),
            "type": instance.type,
            "extra": instance.extra,
            "sessionId": instance.session_id,
        }
    return {
        "id": str(instance.pk),
        "status": instance.status,
        "timestamp": as_rfc3339(instance.timestamp),
        "log_level": instance.log_level,
        "data": instance.data,
        "correlation_id": instance.correlation_id,
        "type": instance.type,
        "extra": instance.extra,
        "session_id": instance.session_id,
        "sender": sender,
    }


def validation_doc(instance: Validation, typed: bool = True) -> dict[str, Any]:
    sender = {"name": instance.sender_name, "role": instance.sender_role}
    receiver = {"name": instance.receiver_name, "role": instance.receiver_role}
    if not typed:
        return {
            "id": str(instance.pk),
            "sender": sender,
            "receiver": receiver,
            "modelId": instance.model_id,
            "data": instance.data,
            "correlationId": instance.correlation_id,
            "timestamp": as_rfc3339(instance.timestamp),
            "meta": instance.meta,
            "sessionId": instance.session_id,
        }
    return {
        "id": str(instance.pk),
        "model_id": instance.model_id,
        "data": instance.data,
        "correlation_id": instance.correlation_id,
        "timestamp": as_rfc3339(instance.timestamp),
        "session_id": instance.session_id,
        "meta": instance.meta,
        "sender": sender,
        "receiver": receiver,
    }


def skip_typing(context: dict[str, Any]) -> bool:
    request = context.get("request")
    return bool(request and request.headers.get("X-Skip-Typing", "").lower() == "true")


class StatusSerializer(serializers.ModelSerializer):
    class Meta:
        model = Status
        fields = ["status"]

    def to_representation(self, instance: Status) -> dict[str, Any]:
        return status_doc(instance, typed=not skip_typing(self.context))


class ValidationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Validation
        fields = ["model_id"]

    def to_representation(self, instance: Validation) -> dict[str, Any]:
        return validation_doc(instance, typed=not skip_typing(self.context))


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
                data = json.loads(data)
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
