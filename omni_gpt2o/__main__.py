from omni_gpt2o.cli import main

raise SystemExit(main())
