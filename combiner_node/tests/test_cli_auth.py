"""The combiner says at startup how it treats tokens, from the same environment it checks them with."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from combiner_node.cli import auth_summary, build_parser, settings_from_args


def summary_for(environ: dict[str, str], tmp_path: Path) -> tuple[int, str]:
    args = build_parser(environ).parse_args(["--name", "c1", "--store", str(tmp_path), "--no-register"])
    return auth_summary(settings_from_args(args, environ))


@pytest.mark.parametrize(
    ("environ", "level", "text"),
    [
        ({}, logging.INFO, "grpc auth off"),
        ({"FEDN_JWT_SECRET_KEY": "s"}, logging.INFO, "client token naming their sender"),
        (
            {"FEDN_JWT_SECRET_KEY": "s", "FEDPLANE_GRPC_ALLOW_TOKENLESS_CLIENTS": "true"},
            logging.WARNING,
            "without a token are let in",
        ),
        ({"FEDPLANE_GRPC_ALLOW_TOKENLESS_CLIENTS": "true"}, logging.INFO, "grpc auth off"),
    ],
)
def test_auth_summary(environ: dict[str, str], level: int, text: str, tmp_path: Path) -> None:
    found_level, line = summary_for(environ, tmp_path)
    assert found_level == level
    assert text in line
