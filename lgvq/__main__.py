import sys

from lgvq.cli import main

sys.exit(main())
