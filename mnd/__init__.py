"""mnd: Minimum Noticeable Difference adversarial privacy-preserving images.

A reproduction of Sun, Jin and Lin, "Minimum Noticeable Difference based
Adversarial Privacy Preserving Image Generation". Layers, bottom to top (a
module imports only its own layer or lower; tests/test_layers.py checks it):

1. ``errors``; ``imageio``, ``losses`` (eqs. 3-19), ``metrics``
2. ``weights`` (download and cache), ``nets``; ``dlib_resnet``, ``facenet``;
   ``models`` (the registry); ``gallery``
3. ``faces`` (detection and crops), ``data`` (test sets, preprocessing)
4. ``attack`` (Algorithm 1, eqs. 1, 20, 21), ``anchors``
5. ``experiments``, ``grid``, ``trace``
6. ``mos``, ``book``
7. ``attack_cli``, ``cli_data``, ``cli_book``, ``cli``
"""

__version__ = "0.1.0"
