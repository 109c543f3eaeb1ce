"""LandFuse networks, model registry and weights files (imports torch only, never qgis).

Modules:

- :mod:`.errors`: the LandFuse error family (standard library only).
- :mod:`.registry`: read-only model entries (bands, classes, normalisation, tile size); importable
  without torch, the networks are built lazily.
- :mod:`.resnet`: ResNet-18/34/50 encoders with torchvision's parameter names.
- :mod:`.amm_fusenet`: AMM-FuseNet, N modality branches (NETWORKS.md §2).
- :mod:`.amfnet`: AMFNet change detection (NETWORKS.md §3).
- :mod:`.weights`: safe weights files (``weights_only=True``), sha256 checks, reference
  checkpoints.

Nothing is imported here, so ``import landfuse.models`` stays cheap and torch-free.
"""
