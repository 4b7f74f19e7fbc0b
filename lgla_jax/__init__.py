"""lgla-jax: Local and Global Logit Adjustments for long-tailed learning, in JAX/Flax."""

__version__ = "0.1.0"
