"""Training hooks: JaFR drop-in loss (seed 003) and CSA augmentation (seed 000 §5)."""

from .csa import CSABank, CSAugment, nfc_images
from .jafr import JaFRLoss, JaFROutput

__all__ = ["CSABank", "CSAugment", "JaFRLoss", "JaFROutput", "nfc_images"]
