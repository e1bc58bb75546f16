"""Triton kernels of wavefuse, installed as the subpackage ``wavefuse.kernels``.

The folder sits at the top level of the repository, but setup.py maps it with
``package_dir={"wavefuse.kernels": "kernels"}``, so no top-level ``kernels`` module is installed;
import it as ``wavefuse.kernels.<op>``.

One file per op holds its ``@triton.jit`` kernels and their host launchers (no autograd here).
Nothing is imported at package import, so ``import wavefuse.kernels`` works where Triton is absent.
"""
