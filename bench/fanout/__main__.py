from bench.fanout.main import main

raise SystemExit(main())
