"""The fedplane edge client: `python -m fedplane.client start ...` (FEDn 0.9.5 wire-compatible)."""

from fedplane.client.client import ClientFatal, EdgeClient
from fedplane.client.config import ClientConfig, ConfigError, build_config

__all__ = ["ClientConfig", "ClientFatal", "ConfigError", "EdgeClient", "build_config"]
