from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from apps.models.lineage import register_facts_source
from apps.sessions import services
from apps.sessions.admin_display import (
    CONTROLLER_TONES,
    LOG_LEVEL_TONES,
    ROUND_TONES,
    SESSION_TONES,
    RoundSessionFilter,
    SessionIdFilter,
    model_link,
    round_took,
    session_link,
)
from apps.sessions.admin_overview import lineage_facts, privacy_summary, session_overview
from apps.sessions.metrics import numeric_metrics
from apps.sessions.models import (
    CombinerReport,
    ControllerState,
    Round,
    ScheduledStart,
    Session,
    Status,
    Validation,
)
from controlplane.admin_widgets import (
    OK,
    WARN,
    ReadOnlyAdmin,
    badge,
    change_url,
    choice_badge,
    link,
    pretty_json,
    progress_bar,
)
from fedplane.aggregators import AGGREGATOR_NAMES

# The model page's lineage labels each model with its session, round and metrics, which live here.
register_facts_source(lineage_facts)


# ---------------------------------------------------------------- sessions


class SessionCreateForm(forms.ModelForm):
    """A new session, checked by the same service as the API's session creation."""

    new_session_id = forms.CharField(
        label="Session id", required=False, max_length=128, help_text="Leave empty for a random uuid."
    )
    aggregator = forms.ChoiceField(choices=[(name, name) for name in AGGREGATOR_NAMES], initial="fedavg")
    dp = forms.JSONField(
        label="Differential privacy",
        required=False,
        help_text='Central DP at the combiners (fedavg only), e.g. {"noise_multiplier": 1.1, '
        '"clip_norm": 1.0, "delta": 1e-5, "target_epsilon": 8}. Empty: none.',
    )
    mode = forms.ChoiceField(
        choices=[("sync", "sync (rounds)"), ("async", "async (FedBuff: rounds count model versions)")],
        initial="sync",
        required=False,
    )
    fedbuff = forms.JSONField(
        label="FedBuff",
        required=False,
        help_text='For async: e.g. {"buffer_size": 4, "max_staleness": 3, "staleness": "polynomial", '
        '"server_learning_rate": 1.0}; buffer_size defaults to the buffer size above.',
    )

    class Meta:
        model = Session
        fields = [
            "aggregator",
            "aggregator_kwargs",
            "rounds",
            "round_timeout",
            "buffer_size",
            "clients_required",
            "clients_requested",
            "validate",
            "delete_models_storage",
            "helper_type",
            "model_id",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        # The service's own checks, without creating anything: save_model creates.
        session_id = self.chosen_session_id()
        if session_id is not None and Session.objects.filter(session_id=session_id).exists():
            raise forms.ValidationError(f"Session {session_id} already exists.")
        try:
            services.clean_session_config(self.session_config())
        except services.SessionError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return cleaned

    def chosen_session_id(self) -> str | None:
        return self.cleaned_data.get("new_session_id") or None

    def session_config(self) -> dict[str, Any]:
        # The session's own fields (the admin's form class lists every field of its fieldsets).
        config = {name: self.cleaned_data.get(name) for name in SessionCreateForm.Meta.fields}
        config["model_id"] = config["model_id"] or None
        for key in ("dp", "fedbuff"):
            if self.cleaned_data.get(key) not in (None, "", {}):
                config[key] = self.cleaned_data[key]
        if self.cleaned_data.get("mode") == "async":
            config["mode"] = "async"
        return config


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = [
        "session_id",
        "status_badge",
        "progress",
        "aggregator",
        "clients",
        "validate",
        "committed_at",
        "started_at",
        "finished_at",
    ]
    list_filter = ["status", "aggregator", "validate"]
    search_fields = ["session_id", "status_reason", "model_id"]
    date_hierarchy = "committed_at"
    ordering = ["-committed_at", "-id"]
    actions = ["start_sessions", "stop_sessions"]
    fieldsets = [
        (None, {"fields": ["session_id", "status_badge", "status_reason", "progress", "stop_requested"]}),
        (
            "Configuration",
            {
                "fields": [
                    "aggregator",
                    "aggregator_kwargs",
                    "rounds",
                    "round_timeout",
                    "buffer_size",
                    "clients_required",
                    "clients_requested",
                    "validate",
                    "delete_models_storage",
                    "helper_type",
                    "task",
                    "seed_model",
                    "extra_config",
                ]
            },
        ),
        ("Differential privacy", {"fields": ["privacy_spent"]}),
        ("Timeline", {"fields": ["committed_at", "start_requested_at", "started_at", "finished_at"]}),
    ]
    add_fieldsets = [
        (None, {"fields": ["new_session_id", "aggregator", "aggregator_kwargs", "rounds", "model_id", "dp"]}),
        ("Asynchronous", {"fields": ["mode", "fedbuff"]}),
        (
            "Clients and rounds",
            {
                "fields": [
                    "clients_required",
                    "clients_requested",
                    "round_timeout",
                    "buffer_size",
                    "validate",
                    "delete_models_storage",
                    "helper_type",
                ]
            },
        ),
    ]

    def get_form(self, request: HttpRequest, obj: Session | None = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = SessionCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Session | None = None) -> Any:
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Session | None = None) -> Any:
        if obj is None:
            return []
        # A session's configuration is fixed once created; its state belongs to the orchestration.
        return [name for _, options in self.fieldsets for name in options["fields"]]

    def save_model(self, request: HttpRequest, obj: Session, form: Any, change: bool) -> None:
        if change:
            return  # nothing is editable after creation
        created = services.session_create(session_id=form.chosen_session_id(), config=form.session_config())
        # The admin logs and redirects to the instance it holds: make it the created row.
        obj.pk = created.pk
        obj.refresh_from_db()

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        session = self.get_object(request, object_id)
        context = dict(extra_context or {})
        context.update(show_save=False, show_save_and_continue=False, show_save_and_add_another=False)
        if session is not None:
            context.update(self.overview_context(session))
        return super().change_view(request, object_id, form_url, extra_context=context)

    def overview_context(self, session: Session) -> dict[str, Any]:
        return session_overview(session)

    @admin.display(description="status", ordering="status")
    def status_badge(self, session: Session) -> SafeString:
        return choice_badge(session.status, SESSION_TONES)

    @admin.display(description="rounds")
    def progress(self, session: Session) -> SafeString:
        return progress_bar(session.rounds_completed, session.rounds)

    @admin.display(description="clients req. / wanted")
    def clients(self, session: Session) -> str:
        return f"{session.clients_required} / {session.clients_requested}"

    @admin.display(description="privacy spent")
    def privacy_spent(self, session: Session) -> SafeString | str:
        return privacy_summary(session)

    @admin.display(description="seed model")
    def seed_model(self, session: Session) -> SafeString | str:
        return model_link(session.model_id)

    @admin.action(description="Start the selected created sessions")
    def start_sessions(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        for session in queryset.order_by("committed_at", "id"):
            try:
                services.session_start(session=session)
            except services.SessionError as exc:
                self.message_user(request, f"{session.session_id}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Session {session.session_id} is starting.", messages.SUCCESS)

    @admin.action(description="Stop the selected sessions")
    def stop_sessions(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        for session in queryset:
            try:
                stopped = services.session_stop(session=session)
            except services.SessionError as exc:
                self.message_user(request, f"{session.session_id}: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request, f"Session {stopped.session_id} is {stopped.status.lower()}.", messages.SUCCESS
                )


# ---------------------------------------------------------------- rounds


class CombinerReportInline(admin.TabularInline):
    model = CombinerReport
    fields = ["combiner", "attempt", "status", "combined_model", "num_examples", "received_at", "report_json"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="model")
    def combined_model(self, report: CombinerReport) -> SafeString | str:
        return model_link(report.model_id)

    @admin.display(description="report")
    def report_json(self, report: CombinerReport) -> SafeString:
        return pretty_json(report.report)


@admin.register(Round)
class RoundAdmin(ReadOnlyAdmin):
    list_display = [
        "round_id",
        "session_link",
        "status_badge",
        "global_model",
        "report_count",
        "attempt",
        "created_at",
        "took",
    ]
    list_filter = ["status", RoundSessionFilter]
    list_select_related = ["session"]
    search_fields = ["=round_id", "session__session_id", "model_id", "status_reason"]
    date_hierarchy = "created_at"
    ordering = ["-number"]
    inlines = [CombinerReportInline]
    fields = [
        "round_id",
        "session_link",
        "status_badge",
        "status_reason",
        "global_model",
        "attempt",
        "retry_history",
        "config_json",
        "data_json",
        "created_at",
        "started_at",
        "finished_at",
        "took",
        "updated_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Round]:
        # Counted per listed round, not by joining every report and grouping: the list's counts and
        # its date drill-down then read the rounds table alone.
        reports = (
            CombinerReport.objects.filter(round=OuterRef("pk"))
            .order_by()
            .values("round")
            .annotate(count=Count("pk"))
            .values("count")
        )
        return super().get_queryset(request).annotate(reports_received=Coalesce(Subquery(reports), 0))

    @admin.display(description="session", ordering="session__session_id")
    def session_link(self, item: Round) -> SafeString | str:
        if item.session is None:
            return "-"
        return link(change_url(item.session), item.session.session_id)

    @admin.display(description="status", ordering="status")
    def status_badge(self, item: Round) -> SafeString:
        return choice_badge(item.status, ROUND_TONES)

    @admin.display(description="model")
    def global_model(self, item: Round) -> SafeString | str:
        return model_link(item.model_id)

    @admin.display(description="took")
    def took(self, item: Round) -> str:
        return round_took(item)

    @admin.display(description="reports", ordering="reports_received")
    def report_count(self, item: Any) -> int:
        return item.reports_received

    @admin.display(description="retries")
    def retry_history(self, item: Round) -> SafeString | str:
        """Each attempt that ended without a model: who ran it, who was lost, and why it was retried."""
        attempts = item.round_data.get("attempts", [])
        if not attempts:
            return "-"
        return format_html(
            "<ol start='0'>{}</ol>",
            format_html_join(
                "",
                "<li>{}: {} (lost: {})</li>",
                (
                    (
                        attempt.get("ended_at", ""),
                        attempt.get("reason", ""),
                        ", ".join(attempt.get("lost", [])) or "none",
                    )
                    for attempt in attempts
                ),
            ),
        )

    @admin.display(description="round config")
    def config_json(self, item: Round) -> SafeString:
        return pretty_json(item.round_config)

    @admin.display(description="round data")
    def data_json(self, item: Round) -> SafeString:
        return pretty_json(item.round_data)


# ---------------------------------------------------------------- events and validations


@admin.register(Status)
class StatusAdmin(ReadOnlyAdmin):
    list_display = [
        "timestamp",
        "type",
        "level_badge",
        "sender_name",
        "sender_role",
        "short_status",
        "session",
    ]
    list_filter = ["type", "log_level", "sender_role", SessionIdFilter]
    search_fields = ["status", "sender_name", "=session_id", "=correlation_id"]
    date_hierarchy = "timestamp"
    ordering = ["-timestamp", "-id"]
    # Events grow without end: a filtered page counts its matches, not the whole table again.
    show_full_result_count = False
    fields = [
        "timestamp",
        "type",
        "log_level",
        "sender_name",
        "sender_role",
        "session",
        "correlation_id",
        "status",
        "data",
        "extra",
    ]
    readonly_fields = fields

    @admin.display(description="level", ordering="log_level")
    def level_badge(self, status: Status) -> SafeString:
        return choice_badge(status.log_level, LOG_LEVEL_TONES)

    @admin.display(description="status")
    def short_status(self, status: Status) -> str:
        return status.status if len(status.status) <= 100 else f"{status.status[:100]}…"

    @admin.display(description="session", ordering="session_id")
    def session(self, status: Status) -> SafeString | str:
        return session_link(status.session_id)


@admin.register(Validation)
class ValidationAdmin(ReadOnlyAdmin):
    list_display = ["timestamp", "sender_name", "receiver_name", "global_model", "metrics", "session"]
    list_filter = ["sender_role", "receiver_role", SessionIdFilter]
    search_fields = ["sender_name", "receiver_name", "=model_id", "=session_id", "=correlation_id"]
    date_hierarchy = "timestamp"
    ordering = ["-timestamp", "-id"]
    show_full_result_count = False  # as for statuses
    fields = [
        "timestamp",
        "sender_name",
        "sender_role",
        "receiver_name",
        "receiver_role",
        "global_model",
        "session",
        "correlation_id",
        "metrics",
        "data",
        "meta",
    ]
    readonly_fields = fields

    @admin.display(description="model", ordering="model_id")
    def global_model(self, validation: Validation) -> SafeString | str:
        return model_link(validation.model_id)

    @admin.display(description="metrics")
    def metrics(self, validation: Validation) -> str:
        values = numeric_metrics(validation.data)
        return ", ".join(f"{key}={value:.4g}" for key, value in sorted(values.items())) or "-"

    @admin.display(description="session", ordering="session_id")
    def session(self, validation: Validation) -> SafeString | str:
        return session_link(validation.session_id)


@admin.register(ControllerState)
class ControllerStateAdmin(ReadOnlyAdmin):
    list_display = ["state_badge", "session_link", "updated_at"]
    list_select_related = ["session"]
    fields = ["state_badge", "session_link", "updated_at"]
    readonly_fields = fields

    @admin.display(description="state", ordering="state")
    def state_badge(self, state: ControllerState) -> SafeString:
        return choice_badge(state.state, CONTROLLER_TONES)

    @admin.display(description="session")
    def session_link(self, state: ControllerState) -> SafeString | str:
        if state.session is None:
            return "-"
        return link(change_url(state.session), state.session.session_id)


@admin.register(ScheduledStart)
class ScheduledStartAdmin(ReadOnlyAdmin):
    """What each beat schedule firing did: the session it started, or why it skipped."""

    list_display = ["fired_at", "schedule_name", "outcome_badge", "session_link", "reason"]
    list_filter = ["outcome", "schedule_name"]
    list_select_related = ["session"]
    search_fields = ["schedule_name", "reason"]
    date_hierarchy = "fired_at"
    fields = ["fired_at", "schedule_name", "outcome_badge", "session_link", "reason"]
    readonly_fields = fields

    @admin.display(description="outcome", ordering="outcome")
    def outcome_badge(self, firing: ScheduledStart) -> SafeString:
        return badge(firing.outcome, OK if firing.outcome == "started" else WARN)

    @admin.display(description="session")
    def session_link(self, firing: ScheduledStart) -> SafeString | str:
        if firing.session is None:
            return "-"
        return link(change_url(firing.session), firing.session.session_id)
