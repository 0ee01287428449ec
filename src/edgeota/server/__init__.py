"""The control plane: API, database, artifact store, TUF repository, deployments."""
