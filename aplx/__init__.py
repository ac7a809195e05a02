"""aplx: Normalized and Active-Passive losses for learning with noisy labels, in JAX.

Ma et al., "Normalized Loss Functions for Deep Learning with Noisy Labels", ICML 2020.
"""

__version__ = "0.1.0"
