"""The ``hermes_tiny`` tasks: YAML, JSONL and their hooks in :mod:`.utils`."""
