import sys

from wastesort.cli import main

sys.exit(main())
