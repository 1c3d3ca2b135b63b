"""Handlers of the entity, status, package, model and client commands."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import TextIO

from fedplane.cli.context import EXIT_OK, EXIT_SERVER_ERROR, EXIT_USAGE, Context, report_result, require_file
from fedplane.cli.entities import ENTITIES, Entity
from fedplane.cli.output import format_cell, print_document, print_json, render_table


def cmd_entity_list(ctx: Context, args: argparse.Namespace) -> int:
    entity: Entity = args.entity
    filters = {
        keyword: value for _, keyword, _ in entity.filters if (value := getattr(args, keyword)) is not None
    }
    answer = entity.list_call(ctx.api, args.n_max, **filters)
    if ctx.as_json:
        print_json(answer, ctx.out)
        return EXIT_OK
    items = answer.get("result", []) if isinstance(answer, Mapping) else list(answer)
    headers = [name for name, _ in entity.columns]
    rows = [[format_cell(get(item)) for _, get in entity.columns] for item in items]
    print(render_table(headers, rows), file=ctx.out)
    total = answer.get("count", len(items)) if isinstance(answer, Mapping) else len(items)
    print(f"({len(items)} of {total} {entity.name})", file=ctx.out)
    return EXIT_OK


def cmd_entity_show(ctx: Context, args: argparse.Namespace) -> int:
    doc = args.entity.show_call(ctx.api, args.id)
    (print_json if ctx.as_json else print_document)(doc, ctx.out)
    return EXIT_OK


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    answer = ctx.api.get_controller_status()
    if ctx.as_json:
        print_json(answer, ctx.out)
    else:
        print(f"controller {ctx.api.base_url}: {answer.get('state', 'unknown')}", file=ctx.out)
    return EXIT_OK


def cmd_package_upload(ctx: Context, args: argparse.Namespace) -> int:
    path = require_file(args.path)
    result = ctx.api.set_active_package(path, args.helper, name=args.name, description=args.description)
    return report_result(ctx, result)


def cmd_package_download(ctx: Context, args: argparse.Namespace) -> int:
    return report_result(ctx, ctx.api.download_package(args.path))


def cmd_package_active(ctx: Context, args: argparse.Namespace) -> int:
    doc = ctx.api.get_active_package()
    (print_json if ctx.as_json else print_document)(doc, ctx.out)
    return EXIT_OK


def cmd_model_upload(ctx: Context, args: argparse.Namespace) -> int:
    return report_result(ctx, ctx.api.set_active_model(require_file(args.path)))


def cmd_model_download(ctx: Context, args: argparse.Namespace) -> int:
    model_id = args.id
    if model_id == "active":
        active = ctx.api.get_active_model()
        model_id = active.get("model_id") or active.get("model")
        if not model_id:
            return report_result(ctx, {"success": False, "message": "There is no active model."})
    return report_result(ctx, ctx.api.download_model(str(model_id), args.path))


def cmd_model_trail(ctx: Context, args: argparse.Namespace) -> int:
    trail = ctx.api.get_model_trail(args.id, n_max=args.n_max)
    if ctx.as_json or not isinstance(trail, list):
        print_json(trail, ctx.out)
        return EXIT_OK
    models = next(e for e in ENTITIES if e.name == "models")
    rows = [[format_cell(get(item)) for _, get in models.columns] for item in trail]
    print(render_table([name for name, _ in models.columns], rows), file=ctx.out)
    return EXIT_OK


def run_client(argv: Sequence[str], err: TextIO) -> int:
    """`fedplane client start ARGS` is `python -m fedplane.client start ARGS`."""
    try:
        from fedplane.client.cli import main as client_main
    except ImportError as exc:
        print(f"error: the edge client is not installed with this fedplane ({exc})", file=err)
        return EXIT_SERVER_ERROR
    try:
        return int(client_main(["start", *argv]) or 0)
    except SystemExit as exc:  # its argparse: --help or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
