from ioagent.cli import main

raise SystemExit(main())
