from django.db import models
from django.utils import timezone

from apps.identity.choices import TokenRole


class IssuedToken(models.Model):
    """A token the controller minted: its claims (never the token itself) and its revocation."""

    jti = models.CharField("token id (jti)", max_length=64, unique=True)
    role = models.CharField(max_length=16, choices=TokenRole.choices, db_index=True)
    subject = models.CharField(max_length=128, db_index=True, help_text="The `sub` claim.")
    issued_at = models.DateTimeField(db_index=True)
    expires_at = models.DateTimeField()
    issued_by = models.CharField(
        max_length=150, blank=True, default="", help_text="The OS user or admin user who minted it."
    )
    revoked_at = models.DateTimeField(blank=True, null=True)
    revoked_by = models.CharField(max_length=150, blank=True, default="")
    revoke_reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-issued_at", "-id"]
        indexes = [
            # The admin's "revoked" filter and the revocation list (revoked, not yet expired).
            models.Index(fields=["revoked_at", "expires_at"], name="identity_revoked_expires"),
        ]

    def __str__(self) -> str:
        return f"{self.role}:{self.subject} ({self.jti})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()
