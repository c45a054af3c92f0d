"""The shared sampler and log-prob scorer."""

from __future__ import annotations

import math

import pytest
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


def test_no_prompts_give_no_outputs(tiny_policy, tiny_tokenizer):
    kw = dict(temperatures=[], top_ps=[], seeds=[])
    assert generate(tiny_policy, tiny_tokenizer, [], progress=False, **kw)[0] == []
    assert generate_batch(tiny_policy, tiny_tokenizer, [], return_ids=True, **kw) == ([], [])


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


def test_without_a_nucleus_cut_the_draw_is_found_among_the_top_tokens_as_a_full_sort_finds_it():
    """top_p >= 1 (the RL rollouts): the draw is the inverse CDF over the whole vocabulary in descending order; the
    rows whose draw falls inside the first top-k are resolved there, the others go wider, down to a full sort."""
    torch.manual_seed(1)
    logits = torch.randn(256, 500) * torch.linspace(0.3, 4.0, 256).unsqueeze(-1)
    temp, one = torch.ones(256), torch.ones(256)
    u = torch.rand(256)
    u[:8] = torch.tensor([0.0, 1e-7, 0.5, 0.999, 0.9999, 0.99999, 1.0 - 1e-7, 0.999999])  # deep into the tail
    full = _sample(logits, temp, one, u, top_k_first=500)
    # by hand on the full sort: the first token whose cumulative mass reaches u times the row's total
    probs = torch.softmax(logits, -1)
    sp, order = probs.sort(-1, descending=True)
    pos = torch.searchsorted(sp.cumsum(-1), (u * probs.sum(-1)).unsqueeze(-1)).clamp_max(499)
    assert torch.equal(full, order.gather(-1, pos).squeeze(-1))
    narrow = _sample(logits, temp, one, u, top_k_first=2)  # most rows beyond the first 2 tokens, some beyond 32
    assert torch.equal(narrow, full)
    inside = (u * probs.sum(-1)) <= sp[:, :2].sum(-1)
    assert 0 < int(inside.sum()) < 256  # both kinds of row were exercised
    # rows with and without the cut in one batch: each as it would be alone
    mixed = torch.where(torch.arange(256) % 2 == 0, one, torch.full((256,), 0.9))
    together = _sample(logits, temp, mixed, u, top_k_first=4)
    assert torch.equal(together[0::2], full[0::2])
    assert torch.equal(together[1::2], _sample(logits, temp, torch.full((256,), 0.9), u, top_k_first=500)[1::2])


@pytest.mark.parametrize("fast_decode", [True, False])
def test_dropping_ended_rows_does_not_change_outputs(tiny_policy, tiny_tokenizer, small_world, fast_decode):
    """Rows that end are dropped from the running batch (and its cache; in the Llama decoder also
    prompts with no row left); every row's text and token ids must be what the uncompacted batch
    gives, in both decoders."""
    import copy

    model = copy.deepcopy(tiny_policy)
    eos = tiny_tokenizer.eos_token_id
    with torch.no_grad():  # make EOS likely, so rows end at different steps
        head = model.get_output_embeddings().weight
        head[eos] = head.mean(0) + 2.0 * model.model.norm(model.model.embed_tokens.weight.mean(0, keepdim=True))[0]
    texts = small_world[0]["text"].tolist()[:8]
    prompts = [format_prompt(t[: 40 + 15 * i]) for i, t in enumerate(texts)] * 3
    kw = dict(temperatures=[1.0] * len(prompts), top_ps=[0.95] * len(prompts), seeds=list(range(len(prompts))),
              max_new_tokens=16, return_ids=True, fast_decode=fast_decode)
    stats_on, stats_off = GenerationStats(), GenerationStats()
    on = generate_batch(model, tiny_tokenizer, prompts, stats=stats_on, **kw)
    off = generate_batch(model, tiny_tokenizer, prompts, stats=stats_off, compact=False, **kw)
    lengths = [len(ids) for ids in on[1]]
    assert stats_on.compactions >= 1 and stats_off.compactions == 0  # the drop happened
    assert min(lengths) < max(lengths)  # rows ended at different steps
    assert on == off


def test_continuous_batching_gives_the_same_outputs(tiny_policy, tiny_tokenizer, small_world, monkeypatch):
    """With ``max_rows`` below the number of rows, prompt groups join the running batch as ended
    rows leave it (rows at different generated lengths decode together); every row's tokens must
    be what one batch of all rows gives, no step may run more than ``max_rows`` rows, and every
    row is reported as done exactly once."""
    import copy

    import ru_rlhf.models.generation as gen

    model = copy.deepcopy(tiny_policy)
    eos = tiny_tokenizer.eos_token_id
    with torch.no_grad():  # make EOS likely, so rows end at different steps and free room
        head = model.get_output_embeddings().weight
        head[eos] = head.mean(0) + 1.0 * model.model.norm(model.model.embed_tokens.weight.mean(0, keepdim=True))[0]
    texts = small_world[0]["text"].tolist()[:12]
    prompts = [format_prompt(t[: 30 + 11 * i]) for i, t in enumerate(texts) for _ in range(3)]
    kw = dict(temperatures=[0.7, 1.0, 1.3] * 12, top_ps=[0.95, 0.85, 0.95] * 12, seeds=list(range(len(prompts))),
              max_new_tokens=16, return_ids=True, prefill_chunk=2)
    ref = generate_batch(model, tiny_tokenizer, prompts, **kw)
    lengths = [len(ids) for ids in ref[1]]
    assert min(lengths) < max(lengths) == 16  # rows end at different steps, some run to the budget
    sizes, step = [], gen._LlamaDecoder.step

    def spy(self, tok, position, column):
        sizes.append((len(tok), int(column.min()), int(column.max())))
        return step(self, tok, position, column)

    monkeypatch.setattr(gen._LlamaDecoder, "step", spy)
    done: list[int] = []
    streamed = generate_batch(model, tiny_tokenizer, prompts, max_rows=9,
                              on_rows_done=lambda k, tokens: done.append(k), **kw)
    assert streamed == ref
    assert max(s for s, _, _ in sizes) <= 9 and sum(done) == len(prompts)
    assert any(lo < hi for _, lo, hi in sizes)  # rows at different lengths shared a step
    # through `generate` (the nodes' entry point), in the input order
    texts_streamed, stats = generate(model, tiny_tokenizer, prompts, batch_size=9, progress=False,
                                     **{k: v for k, v in kw.items() if k not in ("return_ids", "prefill_chunk")})
    assert texts_streamed == ref[0] and stats.sequences == len(prompts)


def test_per_row_token_budgets_match_one_call_per_budget(tiny_policy, tiny_tokenizer, small_world):
    """Rows with different token budgets (the candidates node's per-task budgets) in one running
    batch give what one call per budget gives, and none runs past its budget."""
    texts = small_world[0]["text"].tolist()[:8]
    prompts = [format_prompt(t[: 30 + 9 * i]) for i, t in enumerate(texts) for _ in range(2)]
    budgets = [4, 12, 7, 12] * 4
    kw = dict(temperatures=[1.0] * 16, top_ps=[0.95] * 16, seeds=list(range(16)), return_ids=True)
    texts_all, ids_all = generate_batch(tiny_policy, tiny_tokenizer, prompts, max_new_tokens=budgets, max_rows=6, **kw)
    for b in set(budgets):
        idx = [i for i, x in enumerate(budgets) if x == b]
        one = generate_batch(tiny_policy, tiny_tokenizer, [prompts[i] for i in idx], max_new_tokens=b,
                             **{k: [v[i] for i in idx] if isinstance(v, list) else v for k, v in kw.items()})
        assert one == ([texts_all[i] for i in idx], [ids_all[i] for i in idx])
    assert all(len(ids) <= b for ids, b in zip(ids_all, budgets))
    assert any(len(ids) == b for ids, b in zip(ids_all, budgets))  # some rows stopped at their budget


def _forced_logits(monkeypatch, model, tokenizer, prompts, forced, **kw):
    """The logits each decode step sees when every row is fed the tokens ``forced`` (the sampler
    is replaced by one that records its input), as ``[steps, rows, vocab]`` in the batch's order."""
    import ru_rlhf.models.generation as gen

    seen = []

    def record(logits, temperature, top_p, u, top_k_first=32):
        seen.append(logits.clone())
        return forced[len(seen) - 1].repeat(len(logits))

    monkeypatch.setattr(gen.batching, "_sample", record)  # the name the generation loop calls
    gen.generate_batch(model, tokenizer, prompts, temperatures=[1.0] * len(prompts), top_ps=[1.0] * len(prompts),
                       seeds=list(range(len(prompts))), max_new_tokens=len(forced), compact=False, **kw)
    return torch.stack(seen)


def test_llama_decoder_matches_the_models_forward(tiny_policy, tiny_tokenizer, monkeypatch):
    """The shared-prefix Llama decoder and the model's own forward with the row cache give the same
    next-token logits as a plain forward over prompt + continuation, on rows that share prompts."""
    from ru_rlhf.models.generation import _LlamaDecoder

    assert _LlamaDecoder.supports(tiny_policy)
    # distinct lengths in ascending order, so the batch's internal order (by length) is this order
    texts = ["Где?", "Где прошёл турнир по футболу?", "Кто открыл новую школу в Казани в этом году и когда?"]
    prompts = [format_prompt(t) for t in texts for _ in range(2)]  # two rows per prompt share its cache
    forced = torch.tensor(tiny_tokenizer(" в Казани прошёл турнир", add_special_tokens=False)["input_ids"])
    fast = _forced_logits(monkeypatch, tiny_policy, tiny_tokenizer, prompts, forced, fast_decode=True)
    slow = _forced_logits(monkeypatch, tiny_policy, tiny_tokenizer, prompts, forced, fast_decode=False)
    assert fast.shape == (len(forced), len(prompts), tiny_policy.config.vocab_size)
    assert torch.allclose(fast, slow, atol=1e-4)
    for r, p in enumerate(prompts):
        p_ids = tiny_tokenizer(p, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            full = tiny_policy(torch.tensor([p_ids + forced.tolist()])).logits[0]
        assert torch.allclose(fast[:, r], full[len(p_ids) - 1: len(p_ids) - 1 + len(forced)], atol=1e-4)


def test_greedy_decoding_matches_model_generate_for_llama_and_gpt2(tiny_policy, tiny_tokenizer):
    """Temperature 0 gives ``model.generate``'s greedy tokens: the Llama decoder for the default
    policy, the model's own forward for a GPT-2 (the hub env's architecture)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from ru_rlhf.models.generation import _LlamaDecoder

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=256, n_embd=32, n_layer=2,
                                      n_head=2, bos_token_id=tiny_tokenizer.bos_token_id,
                                      eos_token_id=tiny_tokenizer.eos_token_id)).eval()
    assert not _LlamaDecoder.supports(gpt2)
    prompts = [format_prompt("Где прошёл турнир?"), format_prompt("Кто открыл новую школу в Казани?")]
    for model in (tiny_policy, gpt2):
        _, ids = generate_batch(model, tiny_tokenizer, prompts, temperatures=[0.0, 0.0], top_ps=[1.0, 1.0],
                                seeds=[0, 1], max_new_tokens=10, return_ids=True)
        for p, got in zip(prompts, ids):
            enc = tiny_tokenizer(p, return_tensors="pt", add_special_tokens=False)
            with torch.no_grad():
                ref = model.generate(**enc, do_sample=False, max_new_tokens=10, pad_token_id=tiny_tokenizer.pad_token_id,
                                     eos_token_id=tiny_tokenizer.eos_token_id)[0, enc["input_ids"].shape[1]:].tolist()
            assert got == ref[: len(got)] and len(got) == len(ref)
