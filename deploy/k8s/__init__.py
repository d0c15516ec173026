"""Kubernetes manifests (kustomize) and the generated Envoy files they mount (`sync`)."""
