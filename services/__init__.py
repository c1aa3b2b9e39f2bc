"""Online workloads: Ray Serve applications (see DESIGN.md, Layout)."""
