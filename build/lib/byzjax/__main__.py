import sys

from byzjax.cli import main

sys.exit(main())
