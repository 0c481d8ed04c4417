"""The ``hermes-lab`` command: composes the subcommands each package owns."""
