import sys

from asr_kd.steps.recipe import main

sys.exit(main())
