"""`python manage.py fedplane_token --role ROLE`: print a token the controller and combiners accept."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.tokens import DEFAULT_DAYS, ROLES, TokenError, TokenSettings, mint_token


def _positive_days(value: str) -> float:
    try:
        days = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number of days: {value!r}") from exc
    if not days > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return days


class Command(BaseCommand):
    help = (
        "Print an HS256 token signed with FEDN_JWT_SECRET_KEY for one role: admin (APIClient, CLI, "
        "controller to combiners), client (edge clients) or combiner (combiner nodes)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--role", required=True, choices=ROLES, help="the role the token grants")
        parser.add_argument(
            "--days",
            type=_positive_days,
            default=DEFAULT_DAYS,
            help=f"days until the token expires (default {DEFAULT_DAYS:g}; fractions allowed)",
        )
        parser.add_argument(
            "--subject", help="the token's `sub` claim, e.g. the client's name (default: the role)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            token = mint_token(
                TokenSettings.from_django(),
                options["role"],
                days=options["days"],
                subject=options["subject"],
            )
        except TokenError as exc:
            raise CommandError(str(exc), returncode=1) from exc
        # Only the token on stdout, so `TOKEN=$(python manage.py fedplane_token ...)` works.
        self.stdout.write(token)
