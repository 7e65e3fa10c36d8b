from vjapp.cli import main

raise SystemExit(main())
