"""deployres: ResNet-family CNNs from PyTorch to fast, verified inference engines."""

__version__ = "0.1.0"
