from datetime import timedelta
from pathlib import Path

from controlplane.settings.env import BASE_DIR, VAR_DIR, env_bool, env_int, env_list, env_str

# The defaults suit the embedded demo only; a deployment that keeps either is refused by
# `manage.py check --deploy` and by controlplane/wsgi.py (controlplane/checks.py).
DEVELOPMENT_SECRET_KEY = "fedplane-insecure-development-key-change-me"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", DEVELOPMENT_SECRET_KEY)
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["*"])
# Set by `make demo` and `make serve`: one machine on loopback, where those defaults are accepted.
FEDPLANE_DEMO = env_bool("FEDPLANE_DEMO", False)

# Behind a reverse proxy that terminates TLS (docs/deploy.md): the proxy sets X-Forwarded-Proto
# itself, overwriting a client's, so a request it got over HTTPS counts as secure here.
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# Served over HTTPS only: the session and CSRF cookies never travel in the clear.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)

INSTALLED_APPS = [
    # Before the admin: the console's templates (admin/base_site.html, admin/index.html) win.
    "apps.console",
    # django.contrib.admin, with the console's site as the default site.
    "apps.console.apps.ConsoleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    # Swagger UI and ReDoc as static files of our own: /api/docs/ loads nothing from another host.
    "drf_spectacular_sidecar",
    "storages",
    "django_celery_beat",
    "django_celery_results",
    "axes",
    "controlplane",
    "apps.packages",
    "apps.combiners",
    "apps.clients",
    "apps.models",
    "apps.sessions",
    "apps.identity",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # NUL or unpaired surrogates in the path, query or headers: 400 before anything reads them.
    "controlplane.api.hardening.RefuseUnstorableInput",
    # Static files answered before sessions or auth touch the request (STATIC_ROOT, collectstatic).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as axes asks: it turns a flagged login request into the lockout answer.
    "axes.middleware.AxesMiddleware",
]

# FEDn's routes are served both with and without a trailing slash; no redirects.
APPEND_SLASH = False
ROOT_URLCONF = "controlplane.urls"
# None: runserver, a development server, serves Django's own handler. controlplane.wsgi is for
# WSGI servers (gunicorn), and refuses to start on an insecure deployment.
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "controlplane" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

# Login throttling (django-axes): the axes backend refuses a locked-out login before ModelBackend
# checks the password, so a locked account cannot be probed.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("FEDPLANE_LOGIN_FAILURE_LIMIT", 5)
# 0 minutes: the lock stays until an operator removes it (admin or `manage.py axes_reset`).
_cooloff_minutes = env_int("FEDPLANE_LOGIN_COOLOFF_MINUTES", 15)
AXES_COOLOFF_TIME = timedelta(minutes=_cooloff_minutes) if _cooloff_minutes > 0 else None
# One username from one address: a wrong password elsewhere cannot lock an operator out.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The lock ends a fixed time after the last counted failure; attempts while locked do not extend it.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# gunicorn is reached directly, so the peer address is the client. Forwarded headers are not trusted:
# a client could set them. Behind a reverse proxy, name its header here (and install django-ipware).
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)
AXES_HTTP_RESPONSE_CODE = 429
# A page in the admin's look (JSON for clients that ask for it) with Retry-After.
AXES_LOCKOUT_CALLABLE = "controlplane.login_lockout.lockout_response"
# No banner on every manage.py command; lockouts are still logged.
AXES_VERBOSE = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Every page shows times to the second with their time zone (controlplane/formats/en/formats.py),
# not the locale's "Dec. 1, 2026, 7:31 a.m.".
FORMAT_MODULE_PATH = ["controlplane.formats"]

# The application serves its own static files (WhiteNoise) from STATIC_ROOT, which
# `manage.py collectstatic` fills (make demo and make serve run it); the storage is in storage.py.
STATIC_URL = "static/"
# FEDPLANE_STATIC_ROOT keeps them apart from the data, e.g. inside a container image.
STATIC_ROOT = Path(env_str("FEDPLANE_STATIC_ROOT") or VAR_DIR / "static")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Large uploads go to a temporary file, never whole into memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 32 * 1024 * 1024
FEDPLANE_MAX_UPLOAD_BYTES = env_int("FEDPLANE_MAX_UPLOAD_BYTES", 4 * 1024**3)
# What a seed model's array headers may declare: max(expansion x file size, floor), capped at max
# (fedplane/npzcheck.py SizeLimits). Trained weights deflate ~1.1x; a seed of zeros ~1000x.
FEDPLANE_MODEL_MAX_EXPANSION = env_int("FEDPLANE_MODEL_MAX_EXPANSION", 8)
FEDPLANE_MODEL_EXPANSION_FLOOR_BYTES = env_int("FEDPLANE_MODEL_EXPANSION_FLOOR_BYTES", 256 * 1024**2)
FEDPLANE_MODEL_MAX_BYTES = env_int("FEDPLANE_MODEL_MAX_BYTES", 4 * 1024**3)

# The network as FEDn's /get_client_config describes it.
FEDPLANE_NETWORK_ID = env_str("FEDPLANE_NETWORK_ID", "fedn-network")
FEDPLANE_CONTROLLER_HOST = env_str("FEDPLANE_CONTROLLER_HOST", "127.0.0.1")
FEDPLANE_CONTROLLER_PORT = env_int("FEDPLANE_CONTROLLER_PORT", 8092)
# A stored report or the last expected validation runs the waiting session step at once; off, the
# step only polls (bench/round_overhead.py measures both).
FEDPLANE_WAKE_STEPS = env_bool("FEDPLANE_WAKE_STEPS", True)
# Seconds a client stays online after its combiner last saw it.
FEDPLANE_CLIENT_ONLINE_WINDOW = env_int("FEDPLANE_CLIENT_ONLINE_WINDOW", 10)

# FEDn-compatible JWT auth: disabled while FEDN_JWT_SECRET_KEY is unset, as in FEDn.
FEDN_JWT_SECRET_KEY = env_str("FEDN_JWT_SECRET_KEY")
FEDN_JWT_ALGORITHM = env_str("FEDN_JWT_ALGORITHM", "HS256")
FEDN_AUTH_SCHEME = env_str("FEDN_AUTH_SCHEME", "Bearer")
FEDN_JWT_CUSTOM_CLAIM_KEY = env_str("FEDN_JWT_CUSTOM_CLAIM_KEY")
FEDN_JWT_CUSTOM_CLAIM_VALUE = env_str("FEDN_JWT_CUSTOM_CLAIM_VALUE")
FEDN_AUTH_WHITELIST_URL_PREFIX = env_str("FEDN_AUTH_WHITELIST_URL_PREFIX")
# `fedplane_token` refuses a longer --days: a leaked token stays useful at most this long.
FEDPLANE_TOKEN_MAX_DAYS = float(env_str("FEDPLANE_TOKEN_MAX_DAYS", "365"))
# A combiner that sent presence snapshots and then none for this long has its clients go offline.
FEDPLANE_COMBINER_SILENCE_SECONDS = env_int("FEDPLANE_COMBINER_SILENCE_SECONDS", 15)
# Token the controller and workers present to combiners on Control calls (role admin or combiner).
FEDPLANE_CONTROL_TOKEN = env_str("FEDPLANE_CONTROL_TOKEN", env_str("FEDN_AUTH_TOKEN"))
# mTLS toward combiners started with --client-ca: PEM paths of the certificate and key the controller
# and workers present, and of the CA their certificates are checked against (on TLS channels only).
FEDPLANE_CONTROL_CLIENT_CERT = env_str("FEDPLANE_CONTROL_CLIENT_CERT")
FEDPLANE_CONTROL_CLIENT_KEY = env_str("FEDPLANE_CONTROL_CLIENT_KEY")
FEDPLANE_CONTROL_CA = env_str("FEDPLANE_CONTROL_CA")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("FEDPLANE_LOG_LEVEL", "INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}
