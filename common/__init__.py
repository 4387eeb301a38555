"""Shared, method-agnostic core: ops, genotypes, data, evaluation networks and protocol, utilities."""
