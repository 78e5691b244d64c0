"""``python -m vidsim2real ...`` (also what ``torchrun -m vidsim2real`` runs)."""
from .cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
