"""Sweeps: a table of runs (methods x pairs x trials) from a script, a YAML grid or a preset, run on this
machine's GPUs or CPU slots, or as a Slurm job array, skipping what is done and resuming what is not.

``scripts/sweep.py`` is the command; ``docs/distributed.md`` describes the Slurm side.
"""
