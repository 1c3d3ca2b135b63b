"""Artifact storage: S3 when S3_BUCKET is set, otherwise files under var/media."""

from controlplane.settings.env import VAR_DIR, env_str

MEDIA_ROOT = VAR_DIR / "media"
MEDIA_URL = "/media/"

S3_BUCKET = env_str("S3_BUCKET")
S3_ENDPOINT_URL = env_str("S3_ENDPOINT_URL")
S3_ACCESS_KEY = env_str("S3_ACCESS_KEY")
S3_SECRET_KEY = env_str("S3_SECRET_KEY")
S3_REGION = env_str("S3_REGION", "us-east-1")

if S3_BUCKET:
    DEFAULT_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": S3_ENDPOINT_URL or None,
            "access_key": S3_ACCESS_KEY or None,
            "secret_key": S3_SECRET_KEY or None,
            "region_name": S3_REGION,
            "addressing_style": "path",
            "signature_version": "s3v4",
            # Keys are content- or uuid-addressed, so the name asked for is the name stored.
            "file_overwrite": True,
            "querystring_auth": True,
        },
    }
else:
    DEFAULT_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": MEDIA_URL},
    }

STORAGES = {
    "default": DEFAULT_STORAGE,
    # Hashed names (cached for a year by browsers) and gzip copies, made by collectstatic.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
