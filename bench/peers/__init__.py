"""Comparison services driven by the same load generator."""
