"""`omni-gpt2o` with the tests' `micro` preset registered, for runs the tests start as their own processes
(`accelerate launch tests/train_micro.py train --preset micro ...`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omni_gpt2o.cli import main  # noqa: E402
from tests.conftest import MICRO  # noqa: E402,F401  (registers the preset)

if __name__ == "__main__":
    raise SystemExit(main())
