"""Training: dataset loading, augmentation, networks, the training loop, export and evaluation.

Use-case layer: imports catalog/, storage/, models/ and processing/, never api/ or cli/.
"""

import os as _os

# OpenMP threads that spin while waiting make PyTorch 5-10x slower on a shared, busy CPU (measured
# on the 2-core CI machine). Passive waiting costs nothing measurable when the machine is idle.
# Takes effect only if torch was not imported before this package.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
