"""Observability for the local stack: an OTLP trace sink readable from the CLI (Tempo cannot run
here), and the configs for Tempo/Grafana/Prometheus used with compose or Kubernetes."""
