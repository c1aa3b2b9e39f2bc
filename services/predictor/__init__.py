"""Model replicas serving registered MLflow versions (built in the serving issue)."""
