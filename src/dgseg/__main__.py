import sys

from dgseg.cli import main

sys.exit(main())
