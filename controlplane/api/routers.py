from rest_framework.routers import DefaultRouter


class OptionalSlashRouter(DefaultRouter):
    """Routes that answer with and without a trailing slash (FEDn's clients use both), no redirects.

    `/api/v1/` itself lists the entity collections, so the browsable API has a front door.
    """

    include_format_suffixes = False

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"
