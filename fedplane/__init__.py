"""fedplane: the user-side SDK of the fedplane control plane.

Light on dependencies (requests, numpy, grpcio, protobuf, tqdm); imports no Django.
"""

__version__ = "0.1.0"

__all__ = ["APIClient", "__version__"]


def __getattr__(name: str):
    # Imported lazily so `import fedplane.numpyhelper` stays cheap for the combiner.
    if name == "APIClient":
        from fedplane.api_client import APIClient

        return APIClient
    raise AttributeError(name)
