"""Temporal-consistency and realism metrics of videos of simulated scenes (see README)."""
