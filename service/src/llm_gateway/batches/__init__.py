"""Batches: many chat calls as one durable job (docs/batches.md)."""
