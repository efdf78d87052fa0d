"""Knowledge distillation: a temperature-scaled KL term against a teacher's logits.

Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"
(arXiv:1503.02531). Both distributions are softened by a temperature T and the KL
term is multiplied by T^2, because the gradients of the soft term scale as 1/T^2;
with the factor, changing T does not change how much the term weighs against CE.

Hyperparameters (names as in :class:`trainable.config.TrainConfig`):

* ``teacher_checkpoint`` -- the teacher's weights; None = off.
* ``kd_temperature`` -- T; 1 = the plain softmax, larger = softer (the paper uses 1-20).
* ``kd_weight`` -- w in ``(1 - w) * CE + w * T^2 * KL``; 0 = CE only, 1 = teacher only.

The teacher sees the same (possibly mixed) images as the student, so mixup/cutmix
change the KD target consistently with the CE target.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, averaged over the batch."""
    # float32: under autocast the logits may be bf16 (~3 significant digits), too coarse
    # for a KL between two close distributions. detach: the teacher is not trained.
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    # batchmean is the true KL per sample; "mean" would also divide by the class count.
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature ** 2


def distill_loss(ce: Tensor, student_logits: Tensor, teacher_logits: Tensor, temperature: float,
                 weight: float) -> Tensor:
    """``(1 - weight) * ce + weight * kd_loss``: the training loss with a teacher."""
    return (1.0 - weight) * ce + weight * kd_loss(student_logits, teacher_logits, temperature)


__all__ = ["kd_loss", "distill_loss"]
