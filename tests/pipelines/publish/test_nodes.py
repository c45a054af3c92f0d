"""assemble_bundles: each bundle's folder is its saved folder (the catalog's ``<dataset>_folder``) copied as it is,
less checkpoints and hidden files, with the tokenizer for policies and the card as README.md; the manifest
describes exactly the files ``publish_bundles`` writes."""

from __future__ import annotations

import hashlib

import pytest

from ru_rlhf.io.datasets import BundleFoldersDataset
from ru_rlhf.pipelines.publish.nodes import assemble_bundles

PARAMS = {"hub_namespace": "me", "repo_prefix": "ru-rlhf", "license": "mit", "policy_tokenizer": "policy_tokenizer",
          "bundles": {"policy-sft": {"kind": "policy", "method": "sft", "source": "sft_policy"},
                      "reward-model": {"kind": "reward_model", "source": "reward_model"}}}


@pytest.fixture()
def folders(tmp_path):
    sft, rm, tok = tmp_path / "sft_policy", tmp_path / "reward_model", tmp_path / "tokenizer"
    for f, text in ((sft / "config.json", "{}"), (sft / "model.safetensors", "weights"),
                    (sft / "checkpoints" / "step-1" / "config.json", "{}"), (sft / ".tmp" / "x", "half"),
                    (sft / ".hidden", "no"), (rm / "encoder" / "config.json", "{}"), (rm / "head.safetensors", "h"),
                    (tok / "tokenizer.json", "tok"), (tok / "tokenizer_config.json", "{}")):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return {"sft_policy": sft, "reward_model": rm, "policy_tokenizer": tok}


def test_bundles_are_the_saved_folders_with_tokenizer_and_card(tmp_path, folders):
    cards = {"policy-sft": "# SFT\n", "reward-model": "# RM ✓\n"}
    bundles, manifest = assemble_bundles(cards, PARAMS, **folders)
    assert sorted(bundles["policy-sft"]) == ["README.md", "config.json", "model.safetensors", "tokenizer.json",
                                             "tokenizer_config.json"]  # no checkpoints, nothing hidden
    assert sorted(bundles["reward-model"]) == ["README.md", "encoder/config.json", "head.safetensors"]  # no tokenizer
    out = BundleFoldersDataset(str(tmp_path / "09_publish"))
    out.save(bundles)
    assert sorted(out.load()) == ["policy-sft", "reward-model"]
    for row in manifest.itertuples(index=False):  # the manifest describes the files as written
        data = (tmp_path / "09_publish" / row.bundle / row.file).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (row.bytes, row.sha256)
    written = {(b, str(p.relative_to(tmp_path / "09_publish" / b))) for b in bundles
               for p in (tmp_path / "09_publish" / b).rglob("*") if p.is_file()}
    assert written == set(zip(manifest["bundle"], manifest["file"]))
    assert list(manifest["file"][manifest["bundle"] == "reward-model"]) == ["README.md", "encoder/config.json",
                                                                             "head.safetensors"]
    assert (tmp_path / "09_publish" / "reward-model" / "README.md").read_text(encoding="utf-8") == "# RM ✓\n"


def test_a_second_save_replaces_a_folder_and_leaves_no_temporary(tmp_path, folders):
    out = BundleFoldersDataset(str(tmp_path / "09_publish"))
    out.save({"policy-sft": {"README.md": "old", "stale.bin": folders["sft_policy"] / "config.json"}})
    out.save({"policy-sft": {"README.md": "new"}})
    assert sorted(p.name for p in (tmp_path / "09_publish").iterdir()) == ["policy-sft"]
    assert [p.name for p in (tmp_path / "09_publish" / "policy-sft").iterdir()] == ["README.md"]


def test_a_source_that_is_not_a_saved_folder_of_the_pipeline_is_named(folders):
    params = {**PARAMS, "bundles": {"x": {"kind": "policy", "source": "alignment.xyz.policy"}}}
    with pytest.raises(ValueError, match=r"\['alignment.xyz.policy'\] are not saved folders"):
        assemble_bundles({"x": ""}, params, **folders)
