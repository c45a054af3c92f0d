"""The shared sampler and log-prob scorer."""

from __future__ import annotations

import math

import torch

from ru_rlhf.models.generation import GenerationStats, _sample, generate, generate_batch, sequence_logprobs
from ru_rlhf.models.policy import format_prompt


def test_inverse_cdf_sampling_on_a_known_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]] * 4))
    one = torch.ones(4)
    u = torch.tensor([0.1, 0.6, 0.85, 0.99])
    assert _sample(logits, one, one, u).tolist() == [0, 1, 2, 2]
    # top-p 0.5 keeps only the most likely token; temperature 0 is greedy whatever u is
    assert _sample(logits, one, torch.full((4,), 0.5), u).tolist() == [0, 0, 0, 0]
    assert _sample(logits, torch.zeros(4), one, u).tolist() == [0, 0, 0, 0]
    # top-p 0.8 keeps two tokens (0.5 + 0.3), renormalised to 0.625 / 0.375: u=0.6 stays on the
    # first, u=0.85 and u=0.99 (no longer the third token) fall on the second
    assert _sample(logits, one, torch.full((4,), 0.8), u).tolist() == [0, 0, 1, 1]


def test_rows_are_seeded_on_their_own(tiny_policy, tiny_tokenizer, small_world):
    texts = small_world[0]["text"].tolist()[:6]
    prompts = [format_prompt(t) for t in texts]
    kw = dict(temperatures=[1.0] * 6, top_ps=[0.95] * 6, seeds=list(range(6)), max_new_tokens=12)
    together, stats = generate(tiny_policy, tiny_tokenizer, prompts, batch_size=6, progress=False, **kw)
    alone = [generate_batch(tiny_policy, tiny_tokenizer, [p], temperatures=[1.0], top_ps=[0.95], seeds=[i],
                            max_new_tokens=12)[0] for i, p in enumerate(prompts)]
    assert together == alone
    assert stats.sequences == 6 and stats.new_tokens > 0
    other, _ = generate(tiny_policy, tiny_tokenizer, prompts, batch_size=6, progress=False,
                        **{**kw, "seeds": list(range(100, 106))})
    assert other != together


def test_long_prompts_are_cut_from_the_left_and_counted(tiny_policy, tiny_tokenizer):
    long = format_prompt("слово " * 400)
    _, stats = generate(tiny_policy, tiny_tokenizer, [long, format_prompt("коротко")], temperatures=[0, 0],
                        top_ps=[1, 1], seeds=[0, 1], max_new_tokens=4, progress=False)
    assert stats.truncated_prompts == 1


def test_sequence_logprobs_match_a_manual_computation(tiny_policy, tiny_tokenizer):
    tok = tiny_tokenizer
    prompt, response = format_prompt("Где?"), "В Казани."
    (got,) = sequence_logprobs(tiny_policy, tok, [prompt], [response])
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([p_ids + r_ids])
    with torch.no_grad():
        logp = torch.log_softmax(tiny_policy(ids).logits[0, :-1], -1)
    manual = sum(logp[len(p_ids) - 1 + i, t].item() for i, t in enumerate(r_ids))
    assert got["tokens"] == len(r_ids)
    assert math.isclose(got["logprob"], manual, rel_tol=1e-4)
    # padding in a batch does not change the score
    (_, again) = sequence_logprobs(tiny_policy, tok, [format_prompt("длинный вопрос " * 5), prompt],
                                   ["ответ", response])
    assert math.isclose(again["logprob"], manual, rel_tol=1e-4)


def test_partial_sort_gives_the_same_tokens_as_a_full_sort():
    torch.manual_seed(0)
    logits = torch.randn(64, 500) * 3
    temp, top_p, u = torch.full((64,), 1.0), torch.full((64,), 0.95), torch.rand(64)
    # top_k_first=500 sorts everything; 8 forces the fallback on most rows; 128 on some
    full = _sample(logits, temp, top_p, u, top_k_first=500)
    assert torch.equal(_sample(logits, temp, top_p, u, top_k_first=8), full)
    assert torch.equal(_sample(logits, temp, top_p, u, top_k_first=128), full)
    # mixed temperatures: some rows inside the first topk, some inside the 8x wider one, some sorted in full
    mixed = torch.linspace(0.2, 3.0, 64)
    assert torch.equal(_sample(logits, mixed, top_p, u, top_k_first=4),
                       _sample(logits, mixed, top_p, u, top_k_first=500))


def test_dropping_ended_rows_does_not_change_outputs(tiny_policy, tiny_tokenizer, small_world):
    """Rows that end are dropped from the running batch (and its cache); every row's text and token
    ids must be what the uncompacted batch gives."""
    import copy

    model = copy.deepcopy(tiny_policy)
    eos = tiny_tokenizer.eos_token_id
    with torch.no_grad():  # make EOS likely, so rows end at different steps
        head = model.get_output_embeddings().weight
        head[eos] = head.mean(0) + 2.0 * model.model.norm(model.model.embed_tokens.weight.mean(0, keepdim=True))[0]
    texts = small_world[0]["text"].tolist()[:8]
    prompts = [format_prompt(t[: 40 + 15 * i]) for i, t in enumerate(texts)] * 3
    kw = dict(temperatures=[1.0] * len(prompts), top_ps=[0.95] * len(prompts), seeds=list(range(len(prompts))),
              max_new_tokens=16, return_ids=True)
    stats_on, stats_off = GenerationStats(), GenerationStats()
    on = generate_batch(model, tiny_tokenizer, prompts, stats=stats_on, **kw)
    off = generate_batch(model, tiny_tokenizer, prompts, stats=stats_off, compact=False, **kw)
    lengths = [len(ids) for ids in on[1]]
    assert stats_on.compactions >= 1 and stats_off.compactions == 0  # the drop happened
    assert min(lengths) < max(lengths)  # rows ended at different steps
    assert on == off
