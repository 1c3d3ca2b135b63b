from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from apps.packages.models import ComputePackage
from apps.packages.services import PackageError, package_activate, package_change_refused, package_create
from controlplane.admin_widgets import OK, badge, download_link

HELPER_CHOICES = [
    ("numpyhelper", "numpyhelper"),
    ("binaryhelper", "binaryhelper"),
    ("androidhelper", "androidhelper"),
]


class PackageUploadForm(forms.ModelForm):
    """The admin's upload: stored and activated by the same service as FEDn's /set_package."""

    upload = forms.FileField(label="Package file", help_text=".tar.gz, .tgz or .tar.bz2 holding fedn.yaml")
    helper = forms.ChoiceField(choices=HELPER_CHOICES, initial="numpyhelper")

    class Meta:
        model = ComputePackage
        fields = ["helper", "name", "description"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        refusal = package_change_refused()
        if refusal:
            raise forms.ValidationError(refusal)
        # The service validates and stores in one step, so its refusal belongs to the form.
        try:
            self.instance = package_create(
                upload=cleaned["upload"],
                helper=cleaned["helper"],
                name=cleaned.get("name") or None,
                description=cleaned.get("description") or None,
            )
        except PackageError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return cleaned


@admin.register(ComputePackage)
class ComputePackageAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "active_badge",
        "helper",
        "file_name",
        "human_size",
        "committed_at",
        "download",
    ]
    list_filter = ["active", "helper"]
    search_fields = ["name", "file_name", "storage_file_name", "description", "=package_id", "=sha256"]
    date_hierarchy = "committed_at"
    ordering = ["-committed_at", "-id"]
    actions = ["activate"]
    readonly_fields = [
        "package_id",
        "active",
        "helper",
        "file_name",
        "storage_file_name",
        "human_size",
        "sha256",
        "committed_at",
        "download",
    ]
    fieldsets = [
        (None, {"fields": ["name", "description"]}),
        (
            "Artifact",
            {
                "fields": [
                    "package_id",
                    "active",
                    "helper",
                    "file_name",
                    "storage_file_name",
                    "human_size",
                    "sha256",
                    "committed_at",
                    "download",
                ]
            },
        ),
    ]
    add_fieldsets = [(None, {"fields": ["upload", "helper", "name", "description"]})]

    def get_form(self, request: HttpRequest, obj: ComputePackage | None = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = PackageUploadForm
        return super().get_form(request, obj, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: ComputePackage | None = None) -> Any:
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: ComputePackage | None = None) -> Any:
        return [] if obj is None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: ComputePackage, form: Any, change: bool) -> None:
        if change:
            obj.save(update_fields=["name", "description"])
        # On add, the upload form's clean() has already stored it through package_create.

    def response_add(
        self, request: HttpRequest, obj: ComputePackage, post_url_continue: str | None = None
    ) -> Any:
        self.message_user(request, f"Compute package {obj} stored and activated.", messages.SUCCESS)
        return super().response_add(request, obj, post_url_continue)

    @admin.display(description="active", ordering="active")
    def active_badge(self, package: ComputePackage) -> SafeString | str:
        return badge("active", OK) if package.active else ""

    @admin.display(description="size", ordering="size")
    def human_size(self, package: ComputePackage) -> str:
        return filesizeformat(package.size)

    @admin.display(description="file")
    def download(self, package: ComputePackage) -> SafeString:
        url = reverse("legacy-download-package") + "?" + urlencode({"name": package.storage_file_name})
        return download_link(url, package.storage_file_name)

    @admin.action(description="Activate the selected compute package")
    def activate(self, request: HttpRequest, queryset: QuerySet[ComputePackage]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one compute package to activate.", messages.ERROR)
            return
        refusal = package_change_refused()
        if refusal:
            self.message_user(request, refusal, messages.ERROR)
            return
        package = package_activate(package=queryset.get())
        self.message_user(request, f"Compute package {package} is now active.", messages.SUCCESS)
