"""Training hooks: JaFR drop-in loss (Chan2022) and CSA augmentation (Chen2022 §5)."""

from .csa import CSABank, CSAugment, assemble_bank, attribute_images, nfc_images, select_per_class
from .jafr import JaFRLoss, JaFROutput

__all__ = ["CSABank", "CSAugment", "JaFRLoss", "JaFROutput", "assemble_bank", "attribute_images", "nfc_images",
           "select_per_class"]
