"""The shared server runtime: settings, logs, tracing, gRPC bootstrap, bus, storage, database.

Imports no service; every service builds on it.
"""
