import sys

from blizzard.cli import main

sys.exit(main())
