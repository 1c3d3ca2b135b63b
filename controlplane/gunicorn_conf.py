"""gunicorn's settings for the controller: `gunicorn -c controlplane/gunicorn_conf.py --bind HOST:PORT`.

`make serve` and `make demo` start it this way; a deployment does too, with its own --bind and
environment. controlplane.wsgi refuses to serve on the demo's insecure defaults unless
FEDPLANE_DEMO=1. Static files are served by the application (WhiteNoise) from STATIC_ROOT, so run
`manage.py collectstatic --noinput` before starting it.
"""

import os

wsgi_app = "controlplane.wsgi:application"
bind = [os.environ.get("FEDPLANE_BIND", "127.0.0.1:8092")]

# Threads, not only processes: model uploads and downloads keep a request open for long, and a
# gthread worker keeps telling the arbiter it is alive while its threads stream.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 120
# Ctrl-C and SIGTERM: requests in flight get this long before the workers are killed.
graceful_timeout = 10
keepalive = 5

# gunicorn's control socket sits at one path per user ($HOME/.gunicorn): several controllers on one
# machine (a demo beside a test run) would take it from each other.
control_socket_disable = True

accesslog = "-"
errorlog = "-"
# The process title names the controller in `ps`, beside the Celery processes.
proc_name = "fedplane-controller"


def post_worker_init(worker: object) -> None:
    """Once a worker has loaded the application, load its URLs (and so every view) as well, and
    move all that is loaded out of the cyclic garbage collector's sight (gc.freeze).

    Those objects live as long as the worker; left tracked, each full collection walks all of them,
    a pause of about 100 ms every few hundred requests, stalling every thread of the worker.
    """
    import gc

    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports the URLconf and its views
    gc.collect()
    gc.freeze()
