"""Exit 0 when the controller answers GET /health with 200 OK: the container's HEALTHCHECK.

It asks the address gunicorn binds (FEDPLANE_BIND, loopback when it binds every address) and
sends the first of DJANGO_ALLOWED_HOSTS as the Host header: Django answers 400 to a Host it was
not told to serve, and the health route is no exception. Standard library only.
"""

from __future__ import annotations

import http.client
import os
import sys
from collections.abc import Mapping

TIMEOUT_SECONDS = 5


def probe_target(environ: Mapping[str, str]) -> tuple[str, int, str]:
    """(address, port, Host header) to ask, from the controller's own settings."""
    bind = environ.get("FEDPLANE_BIND", "127.0.0.1:8092").strip()
    address, _, port = bind.rpartition(":")
    address = address.strip("[]")
    if address in ("", "0.0.0.0", "::"):
        address = "127.0.0.1"
    allowed = [name.strip() for name in environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if name.strip()]
    # A leading dot allows the domain and its subdomains; the bare domain is one of them.
    host = allowed[0].lstrip(".") if allowed and allowed[0] != "*" else address
    return address, int(port), host


def main() -> int:
    address, port, host = probe_target(os.environ)
    connection = http.client.HTTPConnection(address, port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("GET", "/health", headers={"Host": host})
        response = connection.getresponse()
        body = response.read(64)
    except OSError as exc:
        print(f"unhealthy: {address}:{port} does not answer: {exc}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    if response.status != 200 or body.strip() != b"OK":
        print(f"unhealthy: /health answered {response.status} {body[:64]!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
