"""Observability for the local stack: an OTLP trace sink whose spans are readable from the CLI
(Tempo cannot run without Docker here)."""
