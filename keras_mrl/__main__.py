"""`python -m keras_mrl demo ...`: see `keras_mrl.cli`."""

import sys

from keras_mrl.cli import main

sys.exit(main())
