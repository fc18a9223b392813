from authproxy.cli import main

raise SystemExit(main())
