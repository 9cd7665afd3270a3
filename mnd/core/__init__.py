"""The core: the paper's equations and Algorithm 1, with no knowledge of files, models or experiments.

- :mod:`~mnd.core.pixels`: the 8-bit grid every success is decided on.
- :mod:`~mnd.core.losses`: one function per equation (eqs. 3-19, 21).
- :mod:`~mnd.core.metrics`: PSNR, SSIM (piq), changed-pixel ratio, sample statistics.
- :mod:`~mnd.core.config`: eq. (7)'s weights, the ablation variants, the hyper-parameter file.
- :mod:`~mnd.core.attack`: Algorithm 1 (:func:`~mnd.core.attack.generate`).
- :mod:`~mnd.core.anchors`: the paper's anchors, through torchattacks.
- :mod:`~mnd.core.memory`: keep freed memory in the process (fewer page faults per iteration).

Imports only :mod:`mnd.errors` from the package.
"""
