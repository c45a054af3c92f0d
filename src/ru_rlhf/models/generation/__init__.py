"""Batched generation and log-prob scoring, shared by sft, alignment and evaluation.

Why our own sampling loop rather than ``model.generate``: the candidate grid needs a different
temperature and top-p on every row of one batch, and every row must be seeded on its own so that
a prompt's samples do not depend on which other prompts share its batch. ``generate`` has one
temperature per call and one global random stream. The loop below is the plain one: left
padding, the model's KV cache, per-row temperature / top-p, and inverse-CDF sampling from a
per-row random stream (``torch.Generator`` seeded per row).

The package, by concern: ``sampling`` (per-row seeded token draws, :func:`stable_seed`), ``decoders`` (the
KV-cache decoders that step the running batch), ``batching`` (the generation loop: :func:`generate_batch`,
:func:`generate`) and ``scoring`` (log-probabilities and KL of given responses).
"""

from ru_rlhf.models.generation.batching import GenerationStats, generate, generate_batch, left_pad
from ru_rlhf.models.generation.decoders import _LlamaDecoder, _ModelDecoder  # noqa: F401 (tests check them)
from ru_rlhf.models.generation.sampling import _sample, stable_seed  # noqa: F401 (_sample: tests check it)
from ru_rlhf.models.generation.scoring import response_kl, sequence_logprobs

__all__ = ["GenerationStats", "generate", "generate_batch", "left_pad", "response_kl", "sequence_logprobs",
           "stable_seed"]
