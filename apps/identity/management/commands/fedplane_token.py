"""`python manage.py fedplane_token`: mint a token the controller and combiners accept (and record
it), revoke one, or list them."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.identity.models import IssuedToken
from apps.identity.services import IdentityError, token_issue, token_revoke
from controlplane.tokens import DEFAULT_DAYS, ROLES


def _positive_days(value: str) -> float:
    try:
        days = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number of days: {value!r}") from exc
    if not days > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return days


def os_user() -> str:
    """Who runs the command, for the record; empty when the OS cannot say."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


class Command(BaseCommand):
    help = (
        "Print an HS256 token signed with FEDN_JWT_SECRET_KEY for one role: admin (APIClient, CLI, "
        "controller to combiners), client (one edge client, --subject its name) or combiner (one "
        "combiner node, --subject its name). Every token is recorded; --revoke JTI refuses it from "
        "then on, --list shows them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--role", choices=ROLES, help="the role the token grants")
        parser.add_argument(
            "--days",
            type=_positive_days,
            default=DEFAULT_DAYS,
            help=(
                f"days until the token expires (default {DEFAULT_DAYS:g}; fractions allowed; at most "
                "FEDPLANE_TOKEN_MAX_DAYS, default 365)"
            ),
        )
        parser.add_argument(
            "--subject",
            help=(
                "the token's `sub` claim: the client's or combiner's name, which the token speaks for "
                "(required for client and combiner; default for admin: admin)"
            ),
        )
        parser.add_argument("--revoke", metavar="JTI", help="revoke the token with this jti")
        parser.add_argument("--reason", default="", help="why, recorded with --revoke")
        parser.add_argument("--list", action="store_true", help="list the issued tokens")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            self.list_tokens()
            return
        if options["revoke"]:
            self.revoke(options["revoke"], options["reason"])
            return
        if not options["role"]:
            raise CommandError("give --role to mint a token (or --revoke JTI, or --list)", returncode=1)
        try:
            minted = token_issue(
                role=options["role"],
                subject=options["subject"],
                days=options["days"],
                issued_by=os_user(),
            )
        except IdentityError as exc:
            raise CommandError(str(exc), returncode=1) from exc
        # Only the token on stdout, so `TOKEN=$(python manage.py fedplane_token ...)` works.
        self.stdout.write(minted.token)

    def revoke(self, jti: str, reason: str) -> None:
        try:
            token = token_revoke(jti=jti, by=os_user(), reason=reason)
        except IdentityError as exc:
            raise CommandError(str(exc), returncode=1) from exc
        self.stdout.write(
            f"revoked {token.jti} ({token.role} {token.subject}) at {token.revoked_at:%Y-%m-%d %H:%M:%S}Z"
        )

    def list_tokens(self) -> None:
        now = timezone.now()
        rows = [("jti", "role", "subject", "expires", "revoked")]
        for token in IssuedToken.objects.order_by("issued_at", "pk"):
            expires = f"{token.expires_at:%Y-%m-%d %H:%M}Z"
            if token.expires_at <= now:
                expires += " (expired)"
            revoked = f"{token.revoked_at:%Y-%m-%d %H:%M}Z" if token.revoked_at else "-"
            rows.append((token.jti, token.role, token.subject, expires, revoked))
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        for row in rows:
            self.stdout.write(
                "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            )
