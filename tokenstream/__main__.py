import sys

from tokenstream.cli import main

sys.exit(main())
