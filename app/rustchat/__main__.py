from rustchat.cli import main

raise SystemExit(main())
