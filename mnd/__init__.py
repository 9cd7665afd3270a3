"""mnd: Minimum Noticeable Difference adversarial privacy-preserving images.

A reproduction of Sun, Jin and Lin, "Minimum Noticeable Difference based
Adversarial Privacy Preserving Image Generation". Folders, bottom to top (a
folder imports only the ones before it; tests/test_layers.py checks it):

1. ``errors``: the exceptions every layer raises
2. ``core``: the 8-bit grid, the equations, the metrics, Algorithm 1, the anchors
3. ``models``: weight files, network builders, the registry, the face gallery
4. ``data``: image files, faces, the test sets, the embedded photos, preprocessing
5. ``experiments``: methods, result rows, presets, the resumable grid, summaries, traces
6. ``book``: the reproducibility book (pages, tables, figures, MOS, claims, build)
7. ``cli``: the ``mnd`` command
"""

__version__ = "0.1.0"
