"""EPNG losses: BCE, Dice, the bidirectional Semantic Alignment Loss and the weighted criterion."""

from epng.losses.bce import mask_bce_loss
from epng.losses.criterion import EPNGCriterion
from epng.losses.dice import dice_loss
from epng.losses.masks import real_phrase_logits
from epng.losses.sal import reduce_targets, sal_loss

__all__ = ["EPNGCriterion", "dice_loss", "mask_bce_loss", "real_phrase_logits", "reduce_targets", "sal_loss"]
