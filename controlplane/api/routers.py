from django.urls import URLPattern, URLResolver, include, re_path
from rest_framework.routers import DefaultRouter


class OptionalSlashRouter(DefaultRouter):
    """Routes that answer with and without a trailing slash (FEDn's clients use both), no redirects.

    `/api/v1/` itself lists the entity collections, so the browsable API has a front door.
    """

    include_format_suffixes = False

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"

    def get_urls(self) -> list[URLPattern | URLResolver]:
        """Each collection's routes behind one pattern for its prefix: resolving /api/v1/statuses/
        tries one pattern per collection before it, not every route of every collection before it.
        The routes keep their names, so reverse() gives the same paths."""
        prefixes = [prefix for prefix, _viewset, _basename in self.registry]
        # The URLs in order; a collection's routes are gathered where its first route was (its prefix).
        slots: list[URLPattern | URLResolver | str] = []
        routes_of: dict[str, list[URLPattern]] = {}
        for url in super().get_urls():
            regex = str(url.pattern)  # e.g. ^statuses/count/?$
            prefix = next((prefix for prefix in prefixes if regex.startswith(f"^{prefix}/")), None)
            if prefix is None or not isinstance(url, URLPattern):
                slots.append(url)
                continue
            if prefix not in routes_of:
                routes_of[prefix] = []
                slots.append(prefix)
            # The route's regex after its prefix: ^statuses/count/?$ becomes ^/count/?$.
            routes_of[prefix].append(re_path(f"^{regex[len(prefix) + 1 :]}", url.callback, name=url.name))
        return [
            re_path(f"^{slot}", include(routes_of[slot])) if isinstance(slot, str) else slot for slot in slots
        ]
