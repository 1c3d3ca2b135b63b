from apps.sessions.models import Round, Session, Status, Validation
from controlplane.api.filters import FednDateTimeFilter, FednFilter, FednFilterSet, add_aliases


class SessionFilterSet(FednFilterSet):
    session_id = FednFilter()
    status = FednFilter()
    aggregator = FednFilter()
    committed_at = FednDateTimeFilter()

    class Meta:
        model = Session
        fields: list[str] = []


add_aliases(SessionFilterSet, {"sessionId": "session_id"})


class RoundFilterSet(FednFilterSet):
    round_id = FednFilter()
    status = FednFilter()
    session_id = FednFilter(field_name="session__session_id")

    class Meta:
        model = Round
        fields: list[str] = []


add_aliases(RoundFilterSet, {"roundId": "round_id", "sessionId": "session_id"})


class StatusFilterSet(FednFilterSet):
    type = FednFilter()
    status = FednFilter()
    sender_name = FednFilter()
    sender_role = FednFilter()
    session_id = FednFilter()
    log_level = FednFilter()
    correlation_id = FednFilter()
    timestamp = FednDateTimeFilter()

    class Meta:
        model = Status
        fields: list[str] = []


add_aliases(
    StatusFilterSet,
    {
        "sender.name": "sender_name",
        "sender.role": "sender_role",
        "sessionId": "session_id",
        "logLevel": "log_level",
        "correlationId": "correlation_id",
    },
)


class ValidationFilterSet(FednFilterSet):
    sender_name = FednFilter()
    sender_role = FednFilter()
    receiver_name = FednFilter()
    receiver_role = FednFilter()
    session_id = FednFilter()
    model_id = FednFilter()
    correlation_id = FednFilter()
    timestamp = FednDateTimeFilter()

    class Meta:
        model = Validation
        fields: list[str] = []


add_aliases(
    ValidationFilterSet,
    {
        "sender.name": "sender_name",
        "sender.role": "sender_role",
        "receiver.name": "receiver_name",
        "receiver.role": "receiver_role",
        "sessionId": "session_id",
        "modelId": "model_id",
        "correlationId": "correlation_id",
    },
)
