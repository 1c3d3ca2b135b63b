from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Max, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from apps.models.lineage import lineage_svg, model_lineage
from apps.models.models import Model
from apps.models.services import ModelError, model_create_seed, model_set_active
from controlplane.admin_widgets import OK, RecentIdFilter, badge, change_url, download_link, link, short_id


class SeedModelUploadForm(forms.ModelForm):
    """The admin's seed upload: validated and stored by the same service as FEDn's /set_initial_model."""

    upload = forms.FileField(label="Model file", help_text='numpyhelper .npz with arrays "0".."n-1"')

    class Meta:
        model = Model
        fields: list[str] = []

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        # The service validates and stores in one step, so its refusal belongs to the form.
        try:
            self.instance = model_create_seed(upload=cleaned["upload"])
        except ModelError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return cleaned


class SessionIdFilter(RecentIdFilter):
    """Filter by the session that produced the model; the sessions of the latest models listed."""

    title = "session"
    parameter_name = "session_id"
    field_path = "session_id"

    def recent_ids(self) -> list[str]:
        latest = (
            Model.objects.exclude(session_id__isnull=True)
            .exclude(session_id="")
            .values("session_id")
            .annotate(latest=Max("committed_at"))
            .order_by("-latest")
        )
        return [row["session_id"] for row in latest[: self.recent]]


def session_link(session_id: str | None) -> SafeString | str:
    if not session_id:
        return "-"
    url = reverse("admin:fl_sessions_session_changelist") + "?" + urlencode({"session_id": session_id})
    return link(url, session_id)


@admin.register(Model)
class MLModelAdmin(admin.ModelAdmin):
    list_display = [
        "short_model_id",
        "active_badge",
        "session",
        "parent_link",
        "human_size",
        "committed_at",
        "download",
    ]
    list_filter = ["active", SessionIdFilter]
    list_select_related = ["parent"]
    search_fields = ["=model_id", "name", "session_id", "=sha256"]
    date_hierarchy = "committed_at"
    ordering = ["-committed_at", "-id"]
    actions = ["set_active"]
    readonly_fields = [
        "model_id",
        "active",
        "session",
        "parent_link",
        "children",
        "human_size",
        "sha256",
        "committed_at",
        "download",
    ]
    fieldsets = [
        (None, {"fields": ["model_id", "name", "active"]}),
        ("Lineage", {"fields": ["session", "parent_link", "children"]}),
        ("Artifact", {"fields": ["human_size", "sha256", "committed_at", "download"]}),
    ]
    add_fieldsets = [(None, {"fields": ["upload"]})]

    def get_form(self, request: HttpRequest, obj: Model | None = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = SeedModelUploadForm
        return super().get_form(request, obj, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Model | None = None) -> Any:
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        return [] if obj is None else self.readonly_fields

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        context = dict(extra_context or {})
        model = self.get_object(request, object_id)
        if model is not None:
            # Ancestors, descendants and their facts: a fixed number of queries however long the line.
            context["fp_lineage"] = lineage_svg(model_lineage(model))
        return super().change_view(request, object_id, form_url, extra_context=context)

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        if change:
            obj.save(update_fields=["name"])
        # On add, the upload form's clean() has already stored it through model_create_seed.

    @admin.display(description="model id", ordering="model_id")
    def short_model_id(self, model: Model) -> str:
        return str(model.model_id)

    @admin.display(description="active", ordering="active")
    def active_badge(self, model: Model) -> SafeString | str:
        return badge("active", OK) if model.active else ""

    @admin.display(description="session", ordering="session_id")
    def session(self, model: Model) -> SafeString | str:
        return session_link(model.session_id)

    @admin.display(description="parent", ordering="parent")
    def parent_link(self, model: Model) -> SafeString | str:
        if model.parent is None:
            return "-"
        return link(change_url(model.parent), short_id(model.parent.model_id))

    @admin.display(description="children")
    def children(self, model: Model) -> SafeString | str:
        count = model.children.count()
        if not count:
            return "-"
        url = reverse("admin:mlmodels_model_changelist") + "?" + urlencode({"parent__exact": model.model_id})
        return link(url, f"{count} child model{'s' if count != 1 else ''}")

    @admin.display(description="size", ordering="size")
    def human_size(self, model: Model) -> str:
        return filesizeformat(model.size)

    @admin.display(description="artifact")
    def download(self, model: Model) -> SafeString:
        return download_link(reverse("model-download", args=[model.model_id]), f"{model.model_id}.npz")

    @admin.action(description="Make the selected model the active model")
    def set_active(self, request: HttpRequest, queryset: QuerySet[Model]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model to make active.", messages.ERROR)
            return
        model = model_set_active(model=queryset.get())
        self.message_user(request, f"Model {model.model_id} is now the active model.", messages.SUCCESS)
