"""Clusters: TOML configuration, the embedded Raft replicator, server and client."""
