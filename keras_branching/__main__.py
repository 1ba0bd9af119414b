"""`python -m keras_branching` runs the `keras-branching` command."""

import sys

from keras_branching.cli import main

sys.exit(main())
