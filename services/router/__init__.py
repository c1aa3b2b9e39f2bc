"""Canary-aware ingress router (built in the serving issue)."""
