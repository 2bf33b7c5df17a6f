"""Small helpers shared by the training tests."""

TIMING = ("seconds", "samples_per_second")
"""Metrics that depend on the machine's speed, not on what was computed."""


def without_timing(records: list[dict]) -> list[dict]:
    """Metrics records without their timing fields, for comparing two runs exactly."""
    return [{k: v for k, v in record.items() if k not in TIMING} for record in records]
