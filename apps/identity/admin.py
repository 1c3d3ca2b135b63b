from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.safestring import SafeString

from apps.identity.choices import TokenRole
from apps.identity.models import IssuedToken
from apps.identity.services import SUBJECT_MAX_LENGTH, IdentityError, token_mint, token_record, token_revoke
from controlplane.admin_widgets import BAD, MUTED, badge, changelist_url
from controlplane.tokens import DEFAULT_DAYS


class RevokedFilter(admin.SimpleListFilter):
    title = "revoked"
    parameter_name = "revoked"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "revoked"), ("no", "not revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("yes", "no"):
            return queryset.filter(revoked_at__isnull=self.value() == "no")
        return queryset


class TokenMintForm(forms.ModelForm):
    """A new token, minted and recorded by the same service as `manage.py fedplane_token`."""

    # Form-only names: the record is made by the service, never from these fields directly.
    token_role = forms.ChoiceField(label="Role", choices=TokenRole.choices)
    token_subject = forms.CharField(
        label="Subject",
        required=False,
        max_length=SUBJECT_MAX_LENGTH,
        help_text="The client's or combiner's name (required for those roles); admin tokens default to 'admin'.",
    )
    days = forms.FloatField(
        initial=DEFAULT_DAYS, help_text="Days until it expires, at most FEDPLANE_TOKEN_MAX_DAYS."
    )

    class Meta:
        model = IssuedToken
        fields: list[str] = []

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        # Signing checks everything the command checks; nothing is recorded until save_model.
        try:
            self.minted = token_mint(
                role=cleaned["token_role"], subject=cleaned.get("token_subject") or None, days=cleaned["days"]
            )
        except IdentityError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return cleaned


@admin.register(IssuedToken)
class IssuedTokenAdmin(admin.ModelAdmin):
    """Every token minted here or by `fedplane_token`: who has one, until when, and revocation."""

    list_display = [
        "jti",
        "role",
        "subject",
        "issued_at",
        "expires_at",
        "revoked",
        "issued_by",
    ]
    list_filter = ["role", RevokedFilter]
    search_fields = ["subject", "=jti"]
    date_hierarchy = "issued_at"
    ordering = ["-issued_at", "-id"]
    actions = ["revoke_tokens"]
    readonly_fields = [
        "jti",
        "role",
        "subject",
        "issued_at",
        "expires_at",
        "issued_by",
        "revoked",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
    ]
    fieldsets = [
        (None, {"fields": ["jti", "role", "subject", "issued_by"]}),
        (
            "Lifetime",
            {"fields": ["issued_at", "expires_at", "revoked", "revoked_at", "revoked_by", "revoke_reason"]},
        ),
    ]
    add_fieldsets = [(None, {"fields": ["token_role", "token_subject", "days"]})]

    def get_form(self, request: HttpRequest, obj: IssuedToken | None = None, **kwargs: Any) -> Any:
        if obj is not None:
            return super().get_form(request, obj, **kwargs)
        return super().get_form(request, obj, form=TokenMintForm, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: IssuedToken | None = None) -> Any:
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: IssuedToken | None = None) -> Any:
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: IssuedToken | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: IssuedToken | None = None) -> bool:
        # Deleting the record would forget a revocation.
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("identity.change_issuedtoken")

    def save_model(self, request: HttpRequest, obj: IssuedToken, form: Any, change: bool) -> None:
        record = token_record(minted=form.minted, issued_by=request.user.get_username())
        # The admin logs and answers with the instance it holds: make it the recorded row.
        obj.pk = record.pk
        obj.refresh_from_db()
        # The token itself is shown once, in response_add.
        request.fedplane_minted = form.minted  # type: ignore[attr-defined]

    def response_add(
        self, request: HttpRequest, obj: IssuedToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        minted = getattr(request, "fedplane_minted", None)
        if minted is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Token minted",
            "minted": minted,
            "record": obj,
            "changelist": changelist_url(IssuedToken),
        }
        response = TemplateResponse(request, "admin/identity/issuedtoken/minted.html", context)
        # Shown once: no cache may keep it.
        response["Cache-Control"] = "no-store"
        return response

    @admin.display(description="revoked", ordering="revoked_at")
    def revoked(self, token: IssuedToken) -> SafeString | str:
        if token.revoked_at is None:
            return badge("expired", MUTED) if token.is_expired else "-"
        return badge(f"revoked {token.revoked_at:%Y-%m-%d %H:%M}", BAD)

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[IssuedToken]) -> None:
        by = request.user.get_username()
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True):
            token_revoke(jti=token.jti, by=by, reason="revoked in the admin console")
            revoked += 1
        skipped = queryset.count() - revoked
        note = f" ({skipped} already revoked)" if skipped else ""
        self.message_user(
            request, f"Revoked {revoked} token{'' if revoked == 1 else 's'}{note}.", messages.SUCCESS
        )
