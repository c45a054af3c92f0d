"""GRPO and RLOO through TRL's own trainers (``ru_rlhf.rl.trl_online``): a few steps on a tiny policy with a toy
scorer whose answer is known, the gold reward, the reward function's mapping of TRL's columns to a scorer, and the
typed parameters."""

from __future__ import annotations

import pandas as pd
import pytest

from ru_rlhf.models.policy import format_prompt
from ru_rlhf.params import ParameterError, check
from ru_rlhf.rl.trl_online import TrlOnlineConfig, reward_function, run_trl_rl, train
from tests.params_helpers import base_params

STEPS, EVAL_EVERY = 4, 2
COLUMNS = {"method", "step", "reward", "kl", "kl_smoothed", "entropy", "loss", "probe_gold", "expert_score", "seconds"}


@pytest.fixture(scope="module")
def roles(world_tables) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and probe prompts (with their judge context), as the alignment slice chooses them."""
    from ru_rlhf.pipelines.alignment.nodes import select_alignment_prompts

    docs, facts, prompts = world_tables
    common = base_params("alignment.common", {"seed": 3, "train_prompts": 16, "probe_prompts": 4})
    table = select_alignment_prompts(prompts, facts, docs, common)
    split = {r: table[table["role"] == r].reset_index(drop=True) for r in ("train", "probe")}
    return split["train"], split["probe"]


def _trl(algorithm: str, **overrides) -> dict:
    """The base YAML's section of ``algorithm``, at toy sizes: TrlOnlineConfig's fields but the seed."""
    from ru_rlhf.pipelines.alignment.params import TrlRLParams

    p = TrlRLParams.of(base_params(f"alignment.{algorithm}.train", {
        "steps": STEPS, "batch_size": 4, "num_generations": 2, "max_new_tokens": 6, "eval_every": EVAL_EVERY,
        "patience": 10, "learning_rate": 1e-2, "best_max_kl": None, **overrides}))
    return p.trl()


class LengthScorer:
    """A scorer with a known answer (scalar = the response's length in characters) that records its calls."""

    def __init__(self):
        self.calls: list[tuple[list[str], list[str]]] = []

    def __call__(self, prompts: list[str], responses: list[str]) -> pd.DataFrame:
        self.calls.append((list(prompts), list(responses)))
        return pd.DataFrame({"scalar": [float(len(r)) for r in responses]})


def test_the_reward_function_scores_raw_prompts_and_stripped_completions():
    scorer = LengthScorer()
    fn = reward_function(scorer, "toy")
    raw = ["Вопрос один?", "Вопрос два?"]
    out = fn(prompts=[format_prompt(p) for p in raw], completions=[" Да. ", "Нет"], raw_prompt=raw,
             prompt_id=["a", "b"], trainer_state=None)
    assert out == [3.0, 3.0] and fn.__name__ == "toy"
    assert scorer.calls == [(raw, ["Да.", "Нет"])]  # the raw prompt (the scorers format it themselves)


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_a_few_steps_move_the_policy_save_checkpoints_and_log(algorithm, roles, tiny_policy, tiny_tokenizer, tmp_path):
    import torch

    from ru_rlhf.io.datasets import saved_checkpoints
    from ru_rlhf.models.policy import load_policy

    train_prompts, probe = roles
    sft = {k: v.clone() for k, v in tiny_policy.state_dict().items()}
    scorer = LengthScorer()
    cfg = TrlOnlineConfig(**_trl(algorithm), seed=3)
    (tmp_path / "step-0099").mkdir()  # an earlier run's state: not this run's
    (tmp_path / "step-0099" / "config.json").write_text("{}")
    policy, log, info = train(tiny_policy, tiny_policy, tiny_tokenizer, scorer, train_prompts, probe, cfg,
                              checkpoint_dir=tmp_path, max_new_tokens={"qa": 4, "dialogue": 4, "summarization": 4},
                              batch_size=8, reward_name="toy", desc=algorithm)
    # the saved states are this run's evaluated steps, and training moved the weights
    saved = saved_checkpoints(tmp_path)
    assert list(saved) == [f"step-{s:04d}" for s in range(EVAL_EVERY, STEPS + 1, EVAL_EVERY)]
    last = load_policy(saved[f"step-{STEPS:04d}"]).state_dict()
    assert max(float((last[k] - sft[k]).abs().max()) for k in sft) > 0
    assert all(torch.equal(tiny_policy.state_dict()[k], sft[k]) for k in sft)  # the input policy is untouched
    # the output is the best evaluated state
    best = sft if info["best_step"] == 0 else load_policy(saved[f"step-{info['best_step']:04d}"]).state_dict()
    assert all(torch.equal(policy.state_dict()[k], best[k]) for k in sft)
    # the log: a step-0 row, then every step with TRL's metrics and the probe at the evaluated steps
    assert COLUMNS - {"method"} <= set(log.columns)
    assert list(log["step"]) == list(range(STEPS + 1))
    steps = log[log["step"] > 0]
    for col in ("reward", "kl", "entropy", "loss"):
        assert steps[col].notna().all(), col
    assert list(log.loc[log["expert_score"].notna(), "step"]) == [0, *range(EVAL_EVERY, STEPS + 1, EVAL_EVERY)]
    assert info["algorithm"] == algorithm and info["steps_run"] == STEPS and info["stop_reason"] == "max_steps"
    assert {"best_step", "best_score", "kl_at_best", "sft_probe_gold", "sft_probe_expert", "best_probe_gold",
            "seconds"} <= set(info)
    # TRL called the scorer with the raw training prompts, num_generations completions of each per step
    known = set(train_prompts["prompt"])
    assert len(scorer.calls) == STEPS
    for prompts, _ in scorer.calls:
        assert len(prompts) == cfg.batch_size and set(prompts) <= known
        assert all(prompts[i] == prompts[i - i % cfg.num_generations] for i in range(len(prompts)))  # groups
    # TRL's logged reward is the mean of the scorer's answers (the response lengths)
    lengths = [sum(len(r) for r in responses) / len(responses) for _, responses in scorer.calls]
    assert steps["reward"].tolist() == pytest.approx(lengths)


def test_the_best_state_is_chosen_within_the_kl_bound_and_patience_stops_the_run(tiny_policy, tmp_path):
    """PPO's rule around TRL's steps: the best expert score among states whose smoothed KL is within best_max_kl;
    stop after patience evaluations without a better one."""
    from ru_rlhf.rl.trl_online import _Evaluation

    cfg = TrlOnlineConfig(**_trl("grpo", best_max_kl=0.01, kl_window=1, patience=2, eval_every=1), seed=0)
    scores = iter([3.0, 3.5, 4.0, 3.2])
    run = _Evaluation(cfg, lambda m: {"score": next(scores), "probe_gold": 0.5, "probe_expert": 0.0}, tmp_path, "t")
    run.evaluate(tiny_policy, 0)
    stops = [run.step(tiny_policy, step, {"reward": 0.1, "kl": kl, "loss": 0.0})
             for step, kl in ((1, 0.005), (2, 0.05), (3, 0.05))]
    assert run.best.step == 1 and run.best.score == 3.5  # 4.0 came with a KL above the bound
    assert stops == [False, False, True] and run.stop.startswith("early stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "step-0001", "step-0002", "step-0003"]


def test_a_non_finite_kl_stops_the_run(tiny_policy, tmp_path):
    from ru_rlhf.rl.loop import NonFiniteError
    from ru_rlhf.rl.trl_online import _Evaluation

    run = _Evaluation(TrlOnlineConfig(**_trl("rloo"), seed=0), lambda m: {"score": 0.0}, tmp_path, "rloo")
    with pytest.raises(NonFiniteError, match="rloo: kl is not finite"):
        run.step(tiny_policy, 1, {"reward": 0.1, "kl": float("nan"), "loss": 0.0})


def test_gold_reward_runs_against_the_gold_judges(roles, tiny_policy, tiny_tokenizer, tmp_path):
    train_prompts, probe = roles
    policy, log, info = run_trl_rl(
        tiny_policy, tiny_policy, tiny_tokenizer, None, train_prompts, probe, method="grpo_gold",
        trl=_trl("grpo", steps=2), seed=3, checkpoint_dir=tmp_path, reward_weights=None, reward="gold",
        max_new_tokens=4, batch_size=8, desc="grpo gold")
    assert info["reward"] == "gold" and info["method"] == "grpo_gold" and set(log["method"]) == {"grpo_gold"}
    rewards = log.loc[log["step"] > 0, "reward"]
    assert rewards.notna().all() and rewards.between(0, 1).all()  # the gold judges' mean is in [0, 1]


def test_an_unknown_reward_is_refused(roles, tiny_policy, tiny_tokenizer, tmp_path):
    train_prompts, probe = roles
    with pytest.raises(ValueError, match="reward is 'human'"):
        run_trl_rl(tiny_policy, tiny_policy, tiny_tokenizer, None, train_prompts, probe, method="grpo",
                   trl=_trl("grpo"), seed=3, checkpoint_dir=tmp_path, reward_weights=None, reward="human",
                   max_new_tokens=4, batch_size=8, desc="grpo")


@pytest.mark.parametrize("section, key, value, message", [
    ("grpo", "num_genrations", 4, "alignment.grpo.train.num_genrations: Extra inputs are not permitted"),
    ("rloo", "beta", 0.0, "alignment.rloo.train.beta: Input should be greater than 0"),
    ("grpo", "num_generations", 1, "alignment.grpo.train.num_generations: Input should be greater than or equal to 2"),
    ("grpo", "batch_size", 6, "batch_size (6) must be a multiple of num_generations (4)"),
    ("grpo", "algorithm", "ppo", "alignment.grpo.train.algorithm: Input should be 'grpo' or 'rloo'"),
    ("rloo", "loss_type", "dapo", "loss_type: not an option of rloo"),
    ("grpo", "loss_type", None, "grpo needs loss_type"),
    ("rloo", "method", "grpo", "a section's method must be its name ('rloo')"),
])
def test_bad_parameters_are_refused_with_their_path(section, key, value, message):
    from ru_rlhf.pipelines.alignment.params import AlignmentParams

    params = base_params("alignment")
    params[section]["train"][key] = value
    with pytest.raises(ParameterError) as err:
        check(AlignmentParams, params, "alignment")
    assert message in str(err.value)


def test_the_sections_pass_in_every_env_with_smaller_runs_in_smoke():
    from ru_rlhf.pipelines.alignment.params import AlignmentParams

    for env in ("base", "smoke", "local_models"):
        p = check(AlignmentParams, base_params("alignment", env=env), "alignment")
        for m in ("grpo", "rloo"):
            assert p.__getattribute__(m).train.algorithm == m and p.__getattribute__(m).train.reward == "rm"
    smoke = check(AlignmentParams, base_params("alignment", env="smoke"), "alignment")
    assert smoke.grpo.train.steps <= 4 and smoke.rloo.train.steps <= 4
