"""Batch workloads that run as Ray jobs (see DESIGN.md, Layout)."""
