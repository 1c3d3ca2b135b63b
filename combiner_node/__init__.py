"""The fedplane combiner node: a gRPC server that runs rounds for the controller.

It owns no database: it reports to the controller over REST and shares the artifact store
with it (see docs/combiner-controller.md).
"""
