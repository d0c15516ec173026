"""Deployment assets and the embedded local stack (`python -m deploy.local up`)."""
