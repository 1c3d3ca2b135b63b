from combiner_node.cli import main

raise SystemExit(main())
