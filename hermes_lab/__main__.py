"""``python -m hermes_lab ...``: what launchers run (``torchrun -m hermes_lab eval ...``, ``accelerate launch -m``)."""

from hermes_lab.cli import main_entry

if __name__ == "__main__":
    main_entry()
