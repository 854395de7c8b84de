"""sagan-cli: a pluggable toolkit for Self-Attention GAN ablation studies."""

__version__ = "0.2.0"
