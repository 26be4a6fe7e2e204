import sys

from citywatch.cli import main

sys.exit(main())
