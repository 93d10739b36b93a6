"""`python -m omni_gpt2o`: the same command line as `omni-gpt2o`."""

from omni_gpt2o.cli import main

raise SystemExit(main())
