"""The controller's URLs plus `/bench/plain`, a plain Django JSON view: the API figure's baseline.

It passes through the same middleware in the same server as the API, so the difference between
the two is what the API itself costs (auth, filters, queries, serialization).
"""

from django.http import HttpRequest, JsonResponse
from django.urls import URLPattern, URLResolver, path

from controlplane.urls import handler400, handler403, handler404, handler500
from controlplane.urls import urlpatterns as product_urlpatterns

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]


def plain_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"count": 1, "result": [{"status": "ok"}]})


urlpatterns: list[URLPattern | URLResolver] = [path("bench/plain", plain_json), *product_urlpatterns]
