"""Models of real Hugging Face architectures (scripts/make_local_models.py) through the project's model code.

The ``local_models`` env runs the whole loop on these folders (tests/e2e/test_local_models.py); here each
shared function a hub model meets is checked on them: loading, generation (against ``transformers``'
own greedy ``generate``), scoring, and device placement. The device checks run on CPU: every model is
moved to PyTorch's ``meta`` device, and a hook on each of its modules fails the test when a tensor it is
given lives anywhere else (the missing ``.to(device)`` that would break on CUDA). A meta model computes
shapes, not numbers, so each call ends at its first read of a value (``.item()``, ``.tolist()``); the test
requires the model to have been called, with every input on its device, before that.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ru_rlhf.models.policy import format_prompt, load_policy, load_tokenizer

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [format_prompt("Кто возглавляет компанию?"),
           format_prompt("Где находится музей, о котором говорится в тексте? Ответьте кратко."),
           format_prompt("Когда?")]


def _script():
    spec = importlib.util.spec_from_file_location("make_local_models", ROOT / "scripts" / "make_local_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def local_models(tmp_path_factory) -> dict[str, Path]:
    """The three folders, built by the script (smoke sizes) into a temporary directory."""
    return _script().make(tmp_path_factory.mktemp("local_models"), "smoke")


def test_the_script_saves_real_architectures_with_their_tokenizers(local_models):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    assert type(AutoModelForCausalLM.from_pretrained(local_models["gpt2"])).__name__ == "GPT2LMHeadModel"
    assert type(AutoModelForCausalLM.from_pretrained(local_models["qwen2"])).__name__ == "Qwen2ForCausalLM"
    assert type(AutoModelForMaskedLM.from_pretrained(local_models["bert"])).__name__ == "BertForMaskedLM"
    for folder in local_models.values():
        files = {p.name for p in folder.iterdir()}
        assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files), files
    gpt2, qwen2 = AutoTokenizer.from_pretrained(local_models["gpt2"]), AutoTokenizer.from_pretrained(local_models["qwen2"])
    assert (type(gpt2).__name__, type(qwen2).__name__) == ("GPT2Tokenizer", "Qwen2Tokenizer")
    assert gpt2.pad_token is None and gpt2.eos_token == "<|endoftext|>"  # as GPT-2 ships
    chat = qwen2.apply_chat_template([{"role": "user", "content": "Привет"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nПривет<|im_end|>\n<|im_start|>assistant\n"
    # trained on the bundled corpus: a Russian word is fewer tokens than letters (16 bytes, 8 letters)
    assert len(gpt2("Компания", add_special_tokens=False)["input_ids"]) < len("Компания")


def test_the_script_keeps_folders_it_already_built(local_models):
    before = {n: (p / "model.safetensors").stat().st_mtime_ns for n, p in local_models.items()}
    again = _script().make(next(iter(local_models.values())).parent, "smoke")
    assert {n: (p / "model.safetensors").stat().st_mtime_ns for n, p in again.items()} == before


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_greedy_generation_equals_transformers_generate(local_models, arch):
    """Batched, left-padded, per-row budgets, through the model's KV cache (the path every non-Llama model
    takes): the same tokens as ``model.generate`` on each prompt alone. A row that stops at its budget
    does not end in an EOS it never sampled (the pad token is the EOS for both tokenizers)."""
    from ru_rlhf.models.generation import _LlamaDecoder, generate_batch

    model, tok = load_policy(local_models[arch]), load_tokenizer(local_models[arch])
    assert tok.pad_token_id == tok.eos_token_id and not _LlamaDecoder.supports(model)
    budgets = [3, 8, 6]
    texts, ids = generate_batch(model, tok, PROMPTS, temperatures=[0.0] * 3, top_ps=[1.0] * 3, seeds=[1, 2, 3],
                                max_new_tokens=budgets, return_ids=True)
    for prompt, budget, got in zip(PROMPTS, budgets, ids):
        enc = tok(prompt, add_special_tokens=False, return_tensors="pt")
        ref = model.generate(**enc, do_sample=False, max_new_tokens=budget, pad_token_id=tok.eos_token_id,
                             eos_token_id=tok.eos_token_id)[0, enc["input_ids"].shape[1]:].tolist()
        if tok.eos_token_id in ref:
            ref = ref[:ref.index(tok.eos_token_id) + 1]
        assert got == ref
        assert len(got) <= budget
    assert texts[0] == tok.decode(ids[0], skip_special_tokens=True).strip()


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_scores_do_not_depend_on_batch_mates(local_models, arch):
    """Log-probabilities and KL of a response are the same alone and in a left-padded batch (GPT-2 has
    absolute positions: they must count real tokens only)."""
    from ru_rlhf.models.generation import response_kl, sequence_logprobs

    model, tok = load_policy(local_models[arch]), load_tokenizer(local_models[arch])
    ref = load_policy(local_models[arch])
    torch.manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    responses = ["Иван Петров", "В Казани, на улице Баумана.", "В 1998 году"]
    batched = sequence_logprobs(model, tok, PROMPTS, responses)
    kl = response_kl(model, ref, tok, PROMPTS, responses)
    for i in range(3):
        alone = sequence_logprobs(model, tok, PROMPTS[i:i + 1], responses[i:i + 1])[0]
        assert alone["tokens"] == batched[i]["tokens"]
        assert alone["logprob"] == pytest.approx(batched[i]["logprob"], abs=1e-4)
        assert response_kl(model, ref, tok, PROMPTS[i:i + 1], responses[i:i + 1])[0]["kl"] == \
            pytest.approx(kl[i]["kl"], abs=1e-5)
        assert kl[i]["kl"] > 0


# --------------------------------------------------------------------------- devices
class DeviceMismatch(AssertionError):
    """A tensor passed to a module on another device than the module's."""


def _on_meta(*modules) -> list[str]:
    """Move ``modules`` to the meta device; return the list each checked module call appends to."""
    calls: list[str] = []

    def check(module, args, kwargs):
        for t in [*args, *kwargs.values()]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                raise DeviceMismatch(f"{type(module).__name__} got a tensor on {t.device}, its weights are on meta")
        calls.append(type(module).__name__)

    for m in modules:
        m.to("meta")
        for sub in m.modules():
            sub.register_forward_pre_hook(check, with_kwargs=True)
    return calls


def _runs_on_its_device(fn, calls: list[str], at_least: int = 1) -> None:
    """``fn`` passes every model call its inputs on the model's device, up to its first read of a value."""
    try:
        fn()
    except DeviceMismatch:
        raise
    except (RuntimeError, NotImplementedError) as e:  # a meta tensor read as a number: where the check ends
        if "meta" not in str(e) or "device" in str(e).lower():
            raise
    assert len(calls) >= at_least, calls


@pytest.fixture(params=["gpt2", "qwen2"])
def meta_policy(request, local_models):
    return load_policy(local_models[request.param]), load_tokenizer(local_models[request.param])


def test_the_device_check_catches_inputs_left_on_the_cpu(meta_policy):
    """The check itself: a forward with CPU inputs and meta weights fails it."""
    model, tok = meta_policy
    calls = _on_meta(model)
    with pytest.raises(DeviceMismatch):
        model(**tok(PROMPTS[:1], return_tensors="pt"))
    assert not calls


def test_generation_and_scoring_send_inputs_to_the_models_device(meta_policy):
    from ru_rlhf.models.generation import generate_batch, response_kl, sequence_logprobs

    model, tok = meta_policy
    path = Path(model.name_or_path)
    calls = _on_meta(model)
    _runs_on_its_device(lambda: generate_batch(model, tok, PROMPTS, temperatures=[1.0] * 3, top_ps=[1.0] * 3,
                                               seeds=[1, 2, 3], max_new_tokens=4), calls)
    calls.clear()
    _runs_on_its_device(lambda: sequence_logprobs(model, tok, PROMPTS, ["а", "б", "в"]), calls)
    # the policy and the reference each get their inputs on their own device, whichever is elsewhere
    # (the old response_kl gave both models CPU tensors: it fails here)
    calls.clear()
    _runs_on_its_device(lambda: response_kl(model, load_policy(path), tok, PROMPTS, ["а", "б", "в"]), calls)
    ref = load_policy(path)
    calls = _on_meta(ref)
    _runs_on_its_device(lambda: response_kl(load_policy(path), ref, tok, PROMPTS, ["а", "б", "в"]), calls)


def test_ppo_value_head_and_reward_model_follow_the_backbone(meta_policy, local_models):
    """New layers (PPO's value head, the reward model's heads and match vector) are made where the
    backbone lives, and the reward model's scoring sends its inputs there."""
    from ru_rlhf.models.encoder import load_encoder, load_encoder_tokenizer
    from ru_rlhf.models.reward import RewardModel, score
    from ru_rlhf.rl.rollout import PolicyWithValue, response_logits

    model, tok = meta_policy
    model.to("meta")
    with_value = PolicyWithValue(model)
    assert with_value.value_head.weight.device.type == "meta"
    rm = RewardModel(model, ("helpfulness", "truthfulness", "harmlessness"), "multi_head", pooling="response",
                     match_feature=True)
    assert {p.device.type for p in rm.parameters()} == {"meta"}
    calls = _on_meta(rm)
    _runs_on_its_device(lambda: score(rm, tok, PROMPTS, ["а", "б", "в"]), calls)
    bert = RewardModel(load_encoder(local_models["bert"]), ("helpfulness",), "multi_head")
    calls = _on_meta(bert)
    _runs_on_its_device(lambda: score(bert, load_encoder_tokenizer(local_models["bert"]), PROMPTS, ["а", "б", "в"]),
                        calls)
    ids = tok(PROMPTS, return_tensors="pt", padding=True)
    calls = _on_meta(with_value)
    with pytest.raises(DeviceMismatch):  # the rollout moves its batch first (rl/rollout.py: make_rollout)
        response_logits(with_value.policy, ids["input_ids"], ids["attention_mask"], keep=2)


def test_encoder_features_go_to_the_encoders_device(local_models):
    """MAUVE's features (evaluation): the batch goes to the encoder's device, the features come back to the CPU."""
    from ru_rlhf.models.encoder import load_encoder, load_encoder_tokenizer
    from ru_rlhf.pipelines.evaluation.nodes import _features

    encoder = load_encoder(local_models["bert"])
    calls = _on_meta(encoder)
    _runs_on_its_device(lambda: _features((encoder, load_encoder_tokenizer(local_models["bert"])), ["а б", "в"]),
                        calls)


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_the_shared_functions_run_in_bfloat16(local_models, arch):
    """``dtype: auto`` gives bf16 on a GPU: every function a run calls on the models works in bf16 (here on
    the CPU, which has bf16 kernels) and gives numbers close to float32's."""
    from ru_rlhf.models.encoder import load_encoder, load_encoder_tokenizer
    from ru_rlhf.models.generation import generate_batch, response_kl, sequence_logprobs
    from ru_rlhf.models.reward import RewardModel, score
    from ru_rlhf.pipelines.evaluation.nodes import _features
    from ru_rlhf.rl.rollout import PolicyWithValue

    tok = load_tokenizer(local_models[arch])
    f32, bf16 = load_policy(local_models[arch]), load_policy(local_models[arch], dtype="bfloat16")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    texts = generate_batch(bf16, tok, PROMPTS, temperatures=[0.7] * 3, top_ps=[0.9] * 3, seeds=[1, 2, 3],
                           max_new_tokens=6)
    assert len(texts) == 3
    responses = ["Иван Петров", "В Казани", "В 1998 году"]
    lp32, lp16 = sequence_logprobs(f32, tok, PROMPTS, responses), sequence_logprobs(bf16, tok, PROMPTS, responses)
    for a, b in zip(lp32, lp16):
        assert b["logprob"] == pytest.approx(a["logprob"], rel=0.05)
    assert all(k["kl"] >= 0 for k in response_kl(bf16, f32, tok, PROMPTS, responses))
    with_value = PolicyWithValue(bf16)
    ids = tok(PROMPTS, return_tensors="pt", padding=True)
    logits, values = with_value(ids["input_ids"], ids["attention_mask"], keep=2)
    assert values.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    rm = RewardModel(bf16, ("helpfulness", "truthfulness"), "multi_head", pooling="response", match_feature=True)
    scores = score(rm, tok, PROMPTS, responses)
    assert list(scores.columns) == ["helpfulness", "truthfulness", "scalar"] and scores.notna().all().all()
    encoder = load_encoder(local_models["bert"], dtype="bfloat16")
    assert _features((encoder, load_encoder_tokenizer(local_models["bert"])), responses).shape == (3, 64)
