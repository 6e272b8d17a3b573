import sys

from mucode_cli.main import main

sys.exit(main())
