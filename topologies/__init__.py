"""Deployable topologies; each sub-package exports its bounded context(s)."""
