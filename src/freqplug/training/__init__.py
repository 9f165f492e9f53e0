"""Training hooks: JaFR drop-in loss (Chan2022) and CSA augmentation (Chen2022 §5).

Names are imported on first use (PEP 562).
"""

from .._lazy import attach, names_from

_LAZY = names_from({
    ".csa": ["CSABank", "CSAugment", "assemble_bank", "attribute_images", "nfc_images", "select_per_class"],
    ".jafr": ["JaFRLoss", "JaFROutput"],
})

__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = ["CSABank", "CSAugment", "JaFRLoss", "JaFROutput", "assemble_bank", "attribute_images", "nfc_images",
           "select_per_class"]
