"""mnd: Minimum Noticeable Difference adversarial privacy-preserving images.

A reproduction of Sun, Jin and Lin, "Minimum Noticeable Difference based
Adversarial Privacy Preserving Image Generation". Layers, bottom to top:
``losses`` and ``metrics``; ``models``, ``faces`` and ``data``; ``attack`` and
``anchors``; ``experiments``; ``cli`` and the book runner.
"""

__version__ = "0.1.0"
