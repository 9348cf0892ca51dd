"""The ground every layer stands on: errors, atomic files and hashes, manifests, ONNX I/O.

Nothing here imports anything else of the project, so ``exporters``,
``engines``, the stages and the CLI may all import it.
"""
