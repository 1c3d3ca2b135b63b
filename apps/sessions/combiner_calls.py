"""Calling every combiner of a round at once, all answers within about one gRPC deadline."""

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

from django.conf import settings

from apps.combiners.grpc_client import CombinerCallFailed, CombinerClient, CombinerUnreachable
from apps.combiners.models import Combiner

T = TypeVar("T")

GRPC_TIMEOUT = 5.0
# Combiners called at once; more than this share the same overall deadline.
MAX_PARALLEL_CALLS = 64


def combiner_client(combiner: Combiner) -> CombinerClient:
    return CombinerClient(
        combiner.address,
        combiner.port,
        token=settings.FEDPLANE_CONTROL_TOKEN or None,
        secure=combiner.secure_grpc,
        root_cert=combiner.certificate.encode() if combiner.certificate else None,
        timeout=GRPC_TIMEOUT,
    )


def call_combiners(
    combiners: Iterable[Combiner], call: Callable[[Combiner], T], *, calls: int = 1
) -> dict[str, T | CombinerCallFailed]:
    """`call` on every combiner at once; all answers (or errors) within about one gRPC deadline,
    or `calls` of them for a `call` that makes that many gRPC calls one after the other."""
    targets = list(combiners)
    if not targets:
        return {}
    pool = ThreadPoolExecutor(
        max_workers=min(len(targets), MAX_PARALLEL_CALLS), thread_name_prefix="combiner-call"
    )
    try:
        futures = {pool.submit(call, combiner): combiner.name for combiner in targets}
        # Each call carries the gRPC deadline; the margin covers connecting and thread start.
        done, _ = wait(futures, timeout=calls * GRPC_TIMEOUT + 1.0)
    finally:
        # A call past its deadline is abandoned, not awaited: its thread ends with its own deadline.
        pool.shutdown(wait=False, cancel_futures=True)
    results: dict[str, T | CombinerCallFailed] = {}
    for future, name in futures.items():
        if future not in done:
            results[name] = CombinerUnreachable(f"no answer within {calls * GRPC_TIMEOUT:g} s")
            continue
        error = future.exception()
        if error is None:
            results[name] = future.result()
        elif isinstance(error, CombinerCallFailed):
            results[name] = error
        else:
            results[name] = CombinerCallFailed(f"{type(error).__name__}: {error}")
    return results
