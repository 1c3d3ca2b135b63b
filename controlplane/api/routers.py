from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """Routes that answer with and without a trailing slash (FEDn's clients use both), no redirects."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"
