"""Kedro datasets for the project's own formats."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import AbstractVersionedDataset

from ru_rlhf.io.readers import READERS, RECORD_FIELDS


class CorpusDataset(AbstractDataset[None, pd.DataFrame]):
    """Reads one or more corpus sources into one raw document table (read-only).

    Each source names a ``format`` (``jsonl``, ``squad``, ``text_folder``, ``conllu``), a
    ``path`` (a ``.gz`` file is decompressed), and the reader's other arguments (``lang``,
    ``source``, ``license``, ``max_line_bytes`` for the line readers, ...). Every row of every
    source comes back, good or bad, with ``id_normalised`` saying whether its ``doc_id`` was
    NFC-normalised or stripped (see :mod:`ru_rlhf.io.readers`); a source that cannot be read at all
    raises :class:`~ru_rlhf.io.readers.CorpusReadError` naming the file and the rule.

    Example (``conf/external/catalog.yml``)::

        raw_corpus:
          type: ru_rlhf.io.datasets.CorpusDataset
          sources:
            - {format: squad, path: ../shared/data/xquad/xquad.ru.json, lang: ru, ...}
    """

    def __init__(self, sources: list[dict[str, Any]], metadata: dict | None = None) -> None:
        if not sources:
            raise DatasetError("CorpusDataset needs at least one source")
        for s in sources:
            if s.get("format") not in READERS:
                raise DatasetError(f"unknown corpus format {s.get('format')!r}; known: {sorted(READERS)}")
        self._sources = deepcopy(sources)
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        records: list[dict] = []
        for s in self._sources:
            kwargs = {k: v for k, v in s.items() if k != "format"}
            records.extend(READERS[s["format"]](**kwargs))
        return pd.DataFrame.from_records(records, columns=list(RECORD_FIELDS))

    def save(self, data: None) -> None:
        raise DatasetError("CorpusDataset is read-only: corpora are inputs")

    def _describe(self) -> dict[str, Any]:
        return {"sources": [{"format": s["format"], "path": s["path"]} for s in self._sources]}

    def _exists(self) -> bool:
        from pathlib import Path

        return all(Path(s["path"]).exists() for s in self._sources)


class PairsDataset(AbstractDataset[None, pd.DataFrame]):
    """A user's preference pairs, read in place (read-only): one or more files in any format of
    :mod:`ru_rlhf.io.pairs` (TRL standard or conversational JSONL, Anthropic HH text, CSV/TSV with a column
    mapping; each may be gzipped).

    Every row of every file comes back (bad ones with ``read_error``), with ``lang``, ``criterion`` and the
    file's ``source`` name, so that the node that validates them can account for each.

    Example (``conf/ru_detox/catalog.yml``)::

        user_pairs:
          type: ru_rlhf.io.datasets.PairsDataset
          files:
            - path: ../shared/data/MERA-ruDetox/dataset.csv
              columns: {prompt: instruction, chosen: outputs, rejected: inputs}
              prompt_placeholders: {toxic_comment: inputs}
              criterion: harmlessness
              lang: ru
    """

    FILE_KEYS = {"path", "format", "columns", "delimiter", "prompt_placeholders", "max_line_bytes", "lang",
                 "criterion", "source"}

    def __init__(self, files: list[dict[str, Any]], metadata: dict | None = None) -> None:
        if not files:
            raise DatasetError("PairsDataset needs at least one file")
        for f in files:
            unknown = set(f) - self.FILE_KEYS
            if unknown or "path" not in f or "criterion" not in f:
                raise DatasetError(f"PairsDataset file {f.get('path')!r}: unknown key(s) {sorted(unknown)}, or no path "
                                   f"or criterion (the reward-model head the pairs train); known keys: "
                                   f"{sorted(self.FILE_KEYS)}")
        self._files = deepcopy(files)
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        from ru_rlhf.io.pairs import read_pairs

        parts = []
        for f in self._files:
            kwargs = {k: v for k, v in f.items() if k not in ("path", "lang", "criterion", "source")}
            df = read_pairs(f["path"], **kwargs)
            parts.append(df.assign(lang=f.get("lang", "ru"), criterion=f["criterion"],
                                   source=f.get("source", "user")))
        return pd.concat(parts, ignore_index=True)

    def save(self, data: None) -> None:
        raise DatasetError("PairsDataset is read-only: a user's pairs are inputs")

    def _describe(self) -> dict[str, Any]:
        return {"files": [f["path"] for f in self._files]}

    def _exists(self) -> bool:
        from pathlib import Path

        return all(Path(f["path"]).exists() for f in self._files)


class RatingsDataset(AbstractDataset[None, dict]):
    """A user's rating exports, read in place (read-only), each a ``pool``: a Toloka export as Toloka writes
    it (``format: toloka``, with ``outputs`` mapping each ``OUTPUT:*`` column), a long table (``long``) or a
    wide annotator table (``wide``, with ``item_column``, ``annotators``, ``criterion``, ``level``,
    ``categories``).

    Loads ``{"labels", "control", "rejected", "levels"}``: the labels of every pool in the long layout with a
    ``pool`` column; the control (golden) answers; the lines that gave no label, with their rule; and each
    (pool, criterion)'s level of measurement.
    """

    FORMATS = {"toloka", "long", "wide"}

    def __init__(self, pools: list[dict[str, Any]], metadata: dict | None = None) -> None:
        if not pools:
            raise DatasetError("RatingsDataset needs at least one pool")
        names = [p.get("name") for p in pools]
        if None in names or len(set(names)) != len(names):
            raise DatasetError(f"RatingsDataset: every pool needs a distinct name, got {names}")
        for p in pools:
            if p.get("format") not in self.FORMATS:
                raise DatasetError(f"RatingsDataset pool {p.get('name')!r}: format {p.get('format')!r} is not one "
                                   f"of {sorted(self.FORMATS)}")
        self._pools = deepcopy(pools)
        self.metadata = metadata

    def load(self) -> dict:
        from ru_rlhf.io.annotations import OutputSpec, read_long_table, read_toloka_export, read_wide_table

        labels, control, rejected, levels = [], [], [], []
        for p in self._pools:
            kw = {k: v for k, v in p.items() if k not in ("name", "format")}
            if p["format"] == "toloka":
                lab, ctl, rej = read_toloka_export(**kw)
                levels += [{"pool": p["name"], "criterion": s.criterion, "level": s.level}
                           for s in map(OutputSpec.of, p["outputs"].values())]
            elif p["format"] == "wide":
                lab, ctl, rej = read_wide_table(**kw), pd.DataFrame(), pd.DataFrame()
                levels.append({"pool": p["name"], "criterion": p["criterion"], "level": p.get("level", "ordinal")})
            else:
                level = kw.pop("level", "ordinal")
                lab, ctl, rej = read_long_table(**kw), pd.DataFrame(), pd.DataFrame()
                levels += [{"pool": p["name"], "criterion": c, "level": level}
                           for c in sorted(lab["criterion"].dropna().unique())]
            labels.append(lab.assign(pool=p["name"]))
            control.append(ctl.assign(pool=p["name"]))
            rejected.append(rej.assign(pool=p["name"]))
        return {"labels": pd.concat(labels, ignore_index=True), "control": pd.concat(control, ignore_index=True),
                "rejected": pd.concat(rejected, ignore_index=True), "levels": pd.DataFrame(levels)}

    def save(self, data: None) -> None:
        raise DatasetError("RatingsDataset is read-only: rating exports are inputs")

    def _describe(self) -> dict[str, Any]:
        return {"pools": [{"name": p["name"], "format": p["format"], "path": p["path"]} for p in self._pools]}

    def _exists(self) -> bool:
        from pathlib import Path

        return all(Path(p["path"]).exists() for p in self._pools)


class HumanLabelsDataset(AbstractDataset[None, dict]):
    """Real human labels for preference curation, read in place (read-only): long tables (CSV, TSV or JSONL in the
    long layout, :func:`~ru_rlhf.io.annotations.read_long_table`) and Toloka TSV exports
    (:func:`~ru_rlhf.io.annotations.read_toloka_tsv`). None by default (``conf/base/catalog_preference_curation.yml``).

    Loads ``{"long_tables": {path: table}, "toloka": {path: (labels, control, rejected)}}``, each file read as
    its reader reads it (bad rows carry ``read_error``), in the order listed; a file that cannot be read at all
    fails the load with the reader's message, which names the file and the rule.

    Example::

        human_labels:
          type: ru_rlhf.io.datasets.HumanLabelsDataset
          long_tables: [data/01_raw/annotations/my_labels.csv]
          toloka: []
    """

    def __init__(self, long_tables: list[str] | None = None, toloka: list[str] | None = None,
                 metadata: dict | None = None) -> None:
        self._files = {"long_tables": [str(p) for p in long_tables or []], "toloka": [str(p) for p in toloka or []]}
        for kind, paths in self._files.items():
            twice = sorted({p for p in paths if paths.count(p) > 1})
            if twice:
                raise DatasetError(f"HumanLabelsDataset: {kind} lists {twice} more than once")
        self.metadata = metadata

    def load(self) -> dict:
        from ru_rlhf.io.annotations import read_long_table, read_toloka_tsv

        return {"long_tables": {p: read_long_table(p) for p in self._files["long_tables"]},
                "toloka": {p: read_toloka_tsv(p) for p in self._files["toloka"]}}

    def save(self, data: None) -> None:
        raise DatasetError("HumanLabelsDataset is read-only: label files are inputs")

    def _describe(self) -> dict[str, Any]:
        return dict(self._files)

    def _exists(self) -> bool:
        from pathlib import Path

        return all(Path(p).exists() for paths in self._files.values() for p in paths)


class BiasProbesDataset(AbstractDataset[None, dict]):
    """The counterfactual minimal pairs of the bias probes (read-only): the bundled templates
    (``source: bundled``, :func:`ru_rlhf.audit.bias_pairs`: Russian and Tatar) or RuBia read in place
    (``source: rubia`` with its ``path``, :func:`ru_rlhf.audit.rubia_pairs`: Russian).

    Loads ``{"source": source, "pairs": table}``, the table with ``pair_id, lang, domain, group_a, group_b,
    text_a, text_b``.
    """

    SOURCES = ("bundled", "rubia")

    def __init__(self, source: str = "bundled", path: str | None = None, metadata: dict | None = None) -> None:
        if source not in self.SOURCES or (source == "rubia") != bool(path):
            raise DatasetError(f"BiasProbesDataset: source must be one of {self.SOURCES} (got {source!r}), with a path "
                               "for rubia only")
        self._source, self._path = source, path
        self.metadata = metadata

    def load(self) -> dict:
        from ru_rlhf import audit

        pairs = audit.rubia_pairs(self._path) if self._source == "rubia" else audit.bias_pairs()
        return {"source": self._source, "pairs": pairs}

    def save(self, data: None) -> None:
        raise DatasetError("BiasProbesDataset is read-only: probe sets are inputs")

    def _describe(self) -> dict[str, Any]:
        return {"source": self._source, "path": self._path}

    def _exists(self) -> bool:
        from pathlib import Path

        return self._path is None or Path(self._path).exists()


class NotTrained:
    """What a training node returns for a model its parameters switched off (Kedro refuses to save None).

    Saved as ``not_trained.json`` with the reason; loads back as ``None``, so a consumer sees no model.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"NotTrained({self.reason!r})"


class HFModelDataset(AbstractDataset[Any, Any]):
    """A model or tokenizer saved with ``save_pretrained`` (safetensors) and loaded by our loaders.

    Saving writes to a temporary sibling directory and renames it into place, so a killed run
    never leaves a half-written model that a later run would load.

    Args:
        path: the directory.
        kind: ``causal_lm`` (loaded with :func:`ru_rlhf.models.policy.load_policy`),
            ``tokenizer`` (loaded with :func:`ru_rlhf.models.policy.load_tokenizer`), ``encoder``
            (a ``(model, tokenizer)`` pair saved in one directory, loaded with
            :func:`ru_rlhf.models.encoder.load_encoder`), or ``reward_model`` (a
            ``(RewardModel, tokenizer)`` pair, loaded with
            :func:`ru_rlhf.models.reward.load_reward_model`).
        load_args: extra keyword arguments for the loader (``dtype``, ``device``).
    """

    KINDS = ("causal_lm", "tokenizer", "encoder", "reward_model")

    def __init__(self, path: str, kind: str = "causal_lm", load_args: dict | None = None,
                 metadata: dict | None = None) -> None:
        if kind not in self.KINDS:
            raise DatasetError(f"HFModelDataset kind must be one of {self.KINDS}, not {kind!r}")
        self._path, self._kind, self._load_args = path, kind, dict(load_args or {})
        self.metadata = metadata

    def load(self) -> Any:
        from pathlib import Path

        from ru_rlhf.models.policy import load_policy, load_tokenizer

        if not Path(self._path).exists():
            raise DatasetError(f"{self._path}: no saved {self._kind} here; run the pipeline that writes it first")
        if (Path(self._path) / "not_trained.json").exists():
            return None
        if self._kind == "tokenizer":
            return load_tokenizer(self._path)
        if self._kind == "encoder":
            from ru_rlhf.models.encoder import load_encoder, load_encoder_tokenizer

            return load_encoder(self._path, **self._load_args), load_encoder_tokenizer(self._path)
        if self._kind == "reward_model":
            from ru_rlhf.models.reward import load_reward_model

            return load_reward_model(self._path, **self._load_args)
        return load_policy(self._path, **self._load_args)

    def save(self, data: Any) -> None:
        import shutil
        from pathlib import Path

        target = Path(self._path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        if isinstance(data, NotTrained):
            import json

            tmp.mkdir(parents=True)
            (tmp / "not_trained.json").write_text(json.dumps({"reason": data.reason}), encoding="utf-8")
        elif isinstance(data, tuple):  # (model, tokenizer) saved side by side
            model, tokenizer = data
            if self._kind == "reward_model":
                model.save_pretrained(tmp, tokenizer)
            else:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
        else:
            data.save_pretrained(tmp)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "kind": self._kind}

    def _exists(self) -> bool:
        from pathlib import Path

        marker = {"tokenizer": "tokenizer_config.json", "reward_model": "reward_config.json"}.get(self._kind, "config.json")
        return (Path(self._path) / marker).exists() or (Path(self._path) / "not_trained.json").exists()


def saved_checkpoints(folder, pattern: str = "step-*") -> dict:
    """The saved policies (``save_pretrained`` folders with a ``config.json``) under ``folder`` whose names match
    ``pattern``, by name, in name order (``step-0002`` before ``step-0004``)."""
    from pathlib import Path

    return {d.name: d for d in sorted(Path(folder).glob(pattern)) if (d / "config.json").exists()}


class CheckpointsDataset(AbstractDataset[dict, dict]):
    """The states a trainer saved on the way (``step-NNNN`` folders under ``path``; ``ru_rlhf.rl.loop.train``
    writes one per evaluated step, which are also what a killed run resumes from).

    Loads ``{name: load}`` in name order, ``load()`` loading that policy (with ``load_args``) only when called,
    so that a consumer holds one model at a time; no folder means no checkpoints (an empty dict).

    Saving writes nothing (the trainer wrote the folders as it went; a second copy would double the biggest
    files of a run): it takes the ``{name: folder}`` the training node reports and checks that each folder is
    the one this dataset reads, so that a trainer writing elsewhere than the catalog says fails its node instead
    of leaving the consumer without checkpoints.
    """

    def __init__(self, path: str, pattern: str = "step-*", load_args: dict | None = None,
                 metadata: dict | None = None) -> None:
        self._path, self._pattern, self._load_args = path, pattern, dict(load_args or {})
        self.metadata = metadata

    def load(self) -> dict:
        from functools import partial

        from ru_rlhf.models.policy import load_policy

        return {name: partial(load_policy, folder, **self._load_args)
                for name, folder in saved_checkpoints(self._path, self._pattern).items()}

    def save(self, data: dict) -> None:
        from pathlib import Path

        here = Path(self._path).resolve()
        elsewhere = {name: str(folder) for name, folder in data.items()
                     if Path(folder).resolve() != here / name or not (Path(folder) / "config.json").exists()}
        if elsewhere:
            raise DatasetError(f"{self._path}: the trainer's checkpoints {elsewhere} are not saved here, where the "
                               "catalog reads them; make its checkpoint folder and this entry's path the same")

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "pattern": self._pattern}

    def _exists(self) -> bool:
        return True  # no folder simply means no checkpoints were saved


class FolderDataset(AbstractDataset[None, Any]):
    """A saved folder (a model, a tokenizer, an Arrow dataset) as it is on disk, read-only: loads its path, for a
    node that copies the files byte for byte (publish) instead of loading and saving the model again.

    Declared beside the dataset that saves the folder, named after it (``sft_policy_folder``), with
    ``metadata: {view_of: sft_policy}`` saying which.
    """

    def __init__(self, path: str, metadata: dict | None = None) -> None:
        self._path = path
        self.metadata = metadata

    def load(self) -> Any:
        from pathlib import Path

        if not Path(self._path).is_dir():
            raise DatasetError(f"{self._path}: no saved folder here; run the pipeline that writes it first")
        return Path(self._path)

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path}: a FolderDataset is read-only (the dataset it views writes the folder)")

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}

    def _exists(self) -> bool:
        from pathlib import Path

        return Path(self._path).is_dir()


class BundleFoldersDataset(AbstractDataset[dict, dict]):
    """Folders laid out for ``HfApi.upload_folder``, one per bundle under ``path`` (the publish pipeline's).

    Saves ``{bundle: {file: source}}``, ``file`` a path relative to the bundle's folder and ``source`` either a
    file to copy (a ``Path``) or text to write (a ``str``, UTF-8). Each folder is written to a temporary sibling
    and renamed into place, so a killed run leaves the previous folder, never a half-copied one; bundles not in
    the data are left as they are. Loads ``{bundle: folder}`` for the folders there.
    """

    def __init__(self, path: str, metadata: dict | None = None) -> None:
        self._path = path
        self.metadata = metadata

    def load(self) -> dict:
        from pathlib import Path

        root = Path(self._path)
        return {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")} \
            if root.is_dir() else {}

    def save(self, data: dict) -> None:
        import os
        import shutil
        from pathlib import Path

        root = Path(self._path)
        root.mkdir(parents=True, exist_ok=True)
        for name, files in data.items():
            tmp, final, old = (root / f".{name}.tmp{os.getpid()}", root / name, root / f".{name}.old{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for rel, source in files.items():
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(source, str):
                    target.write_text(source, encoding="utf-8")
                else:
                    shutil.copy2(source, target)
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}

    def _exists(self) -> bool:
        from pathlib import Path

        return Path(self._path).is_dir()


class FeedbackDataset(AbstractDataset):
    """The A/B app's votes (SQLite, ``ru_rlhf.io.feedback_store``) as the long annotation table.

    One row per served response and criterion (``source = "app"``) and one ``overall`` row per vote
    naming the chosen response. A store that does not exist yet means no votes: an empty table.
    Read-only here: only the app writes votes.
    """

    def __init__(self, path: str, metadata: dict | None = None) -> None:
        self._path = path
        self.metadata = metadata

    @property
    def path(self) -> str:
        """The SQLite file: where the app writes its votes."""
        return self._path

    def load(self) -> pd.DataFrame:
        from pathlib import Path

        from ru_rlhf.feedback import empty_votes, votes_to_long
        from ru_rlhf.io.feedback_store import FeedbackStore, StoreError

        if not Path(self._path).exists():
            return votes_to_long(empty_votes())
        import sqlite3

        store = None
        try:
            store = FeedbackStore(self._path, read_only=True)  # a pipeline never writes the app's votes
            return votes_to_long(store.votes())
        except StoreError as err:  # the store's own message names the path and the rule
            raise DatasetError(str(err)) from err
        except sqlite3.DatabaseError as err:
            raise DatasetError(f"{self._path}: not a readable SQLite vote store ({err}) (rule: corrupt_store)") from err
        finally:
            if store is not None:
                store.close()

    def save(self, data: pd.DataFrame) -> None:
        raise DatasetError(f"{self._path}: the feedback store is written by the app, not by a pipeline")

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}

    def _exists(self) -> bool:
        return True  # no store yet simply means no votes yet


# --------------------------------------------------------------------------- atomic file datasets
class _AtomicSave:
    """Write to a hidden temporary sibling, then rename it into place (``os.replace``).

    kedro-datasets write straight to the target path, so a run killed mid-save leaves a
    truncated parquet/JSON that the next run would load. These subclasses redirect the save path
    to ``.<stem>.tmp<pid><suffix>`` beside the target and rename it when the save has finished;
    a failed save removes the temporary file and leaves the previous output untouched. Only
    local, unversioned paths are redirected (others save as the parent class does).
    """

    _atomic_tmp = None

    def _get_save_path(self):
        return self._atomic_tmp if self._atomic_tmp is not None else super()._get_save_path()

    def save(self, data) -> None:
        import os
        import shutil
        from pathlib import Path

        if getattr(self, "_version", None) or getattr(self, "_protocol", "file") not in ("file", "local"):
            return super().save(data)
        final = self._filepath
        tmp = final.parent / f".{final.stem}.tmp{os.getpid()}{final.suffix}"
        Path(str(final.parent)).mkdir(parents=True, exist_ok=True)
        self._atomic_tmp = tmp
        try:
            super().save(data)
        except BaseException:
            shutil.rmtree(str(tmp), ignore_errors=True) if Path(str(tmp)).is_dir() else Path(str(tmp)).unlink(missing_ok=True)
            raise
        finally:
            self._atomic_tmp = None
        tmp_p, final_p = Path(str(tmp)), Path(str(final))
        if tmp_p.is_dir() and final_p.exists():  # a directory cannot be replaced in one step
            old = final_p.with_name(f".{final_p.name}.old{os.getpid()}")
            final_p.rename(old)
            tmp_p.rename(final_p)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_p, final_p)
        self._invalidate_cache()


def _atomic(base: type, doc: str, *mixins: type) -> type:
    return type(f"Atomic{base.__name__}", (*mixins, _AtomicSave, base), {"__doc__": doc, "__module__": __name__})


def strict_json(value):
    """``value`` with every NaN or infinite float replaced by None and numpy scalars and arrays made Python's,
    so that it is valid JSON (``json.dumps(allow_nan=False)``; bare ``NaN`` is rejected by strict parsers)."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return [strict_json(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _CheckedFigure:
    """When a figure is saved, :func:`ru_rlhf.figures.figure_problems` is asked what is wrong with it (an
    unlabelled axis, an empty panel, overlapping tick labels, a rate off [0, 1]); each problem is a warning
    naming the file. The figure is saved either way; it is checked after the save, which has laid it out, so it
    is drawn once (checking first drew it twice: a third of the save's time)."""

    def save(self, data) -> None:
        import logging

        from ru_rlhf.figures import figure_problems

        figures = list(data.values() if isinstance(data, dict) else data if isinstance(data, list) else [data])
        super().save(data)
        for fig in figures:
            for problem in figure_problems(fig, str(self._filepath), drawn=True):
                logging.getLogger(__name__).warning("plot: %s", problem)


class _StrictJSON:
    """Reports are strict JSON: NaN and infinities are written as ``null`` (:func:`strict_json`), and a value
    that is still not JSON fails the save (``allow_nan=False``) instead of writing ``NaN``."""

    def save(self, data) -> None:
        self._save_args = {**(self._save_args or {}), "allow_nan": False}
        super().save(strict_json(data))


class ArrowDataset(AbstractVersionedDataset):
    """A Hugging Face ``datasets.Dataset`` (or ``DatasetDict``) as an Arrow directory: ``save_to_disk`` and
    ``load_from_disk``, which is all kedro-datasets' ``huggingface.ArrowDataset`` does for a local or fsspec path.

    Written here rather than imported because importing ``kedro_datasets.huggingface`` imports every one of its
    datasets, among them the transformers pipeline dataset, and with it ``transformers.pipelines`` and the image and
    audio processors: 3.2 s in every process that builds the catalog, for a module this project never uses
    (``docs/benchmarks.md``, start-up).
    """

    def __init__(self, *, path: str, load_args: dict | None = None, save_args: dict | None = None,
                 credentials: dict | None = None, fs_args: dict | None = None, metadata: dict | None = None) -> None:
        from pathlib import PurePosixPath

        import fsspec
        from kedro.io.core import get_protocol_and_path

        protocol, resolved = get_protocol_and_path(str(path))
        self._protocol = protocol
        fs_args = dict(fs_args or {})
        if protocol == "file":
            fs_args.setdefault("auto_mkdir", True)
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **fs_args)
        self._storage_options = {**(credentials or {}), **fs_args} or None
        self._load_args = dict(load_args or {})
        self._save_args = dict(save_args or {})
        self.metadata = metadata
        super().__init__(filepath=PurePosixPath(resolved), version=None, exists_function=self._fs.exists,
                         glob_function=self._fs.glob)

    def load(self):
        from datasets import load_from_disk
        from kedro.io.core import get_filepath_str

        return load_from_disk(get_filepath_str(self._get_load_path(), self._protocol),
                              storage_options=self._storage_options, **self._load_args)

    def save(self, data) -> None:
        from datasets import Dataset, DatasetDict
        from kedro.io.core import get_filepath_str

        if not isinstance(data, (Dataset, DatasetDict)):
            raise DatasetError(f"{type(self).__name__} saves a datasets.Dataset or DatasetDict, got {type(data)}")
        data.save_to_disk(get_filepath_str(self._get_save_path(), self._protocol),
                          storage_options=self._storage_options, **self._save_args)
        self._invalidate_cache()

    def _exists(self) -> bool:
        from kedro.io.core import get_filepath_str

        path = get_filepath_str(self._get_load_path(), self._protocol)
        return self._fs.isdir(path) and (self._fs.exists(f"{path}/dataset_dict.json")
                                         or self._fs.exists(f"{path}/dataset_info.json"))

    def _describe(self) -> dict:
        return {"path": str(self._filepath), "protocol": self._protocol}

    def _release(self) -> None:
        super()._release()
        self._invalidate_cache()

    def _invalidate_cache(self) -> None:
        from kedro.io.core import get_filepath_str

        self._fs.invalidate_cache(get_filepath_str(self._filepath, self._protocol))


def _load_atomic_classes() -> dict[str, type]:
    from kedro_datasets.json import JSONDataset
    from kedro_datasets.matplotlib import MatplotlibDataset
    from kedro_datasets.pandas import CSVDataset, ParquetDataset
    from kedro_datasets.pandas import JSONDataset as PandasJSONDataset
    from kedro_datasets.pickle import PickleDataset
    from kedro_datasets.text import TextDataset

    return {
        "AtomicParquetDataset": _atomic(ParquetDataset, "pandas.ParquetDataset, saved atomically."),
        "AtomicCSVDataset": _atomic(CSVDataset, "pandas.CSVDataset, saved atomically."),
        "AtomicPandasJSONDataset": _atomic(PandasJSONDataset, "pandas.JSONDataset, saved atomically."),
        "AtomicJSONDataset": _atomic(JSONDataset, "json.JSONDataset, saved atomically, as strict JSON (NaN as null).",
                                     _StrictJSON),
        "AtomicTextDataset": _atomic(TextDataset, "text.TextDataset, saved atomically."),
        "AtomicMatplotlibDataset": _atomic(MatplotlibDataset, "matplotlib.MatplotlibDataset, saved atomically, its "
                                           "figures checked for report readiness.", _CheckedFigure),
        "AtomicArrowDataset": _atomic(ArrowDataset, "An Arrow directory (datasets' save_to_disk), saved atomically."),
        "AtomicPickleDataset": _atomic(PickleDataset, "pickle.PickleDataset (scikit-learn models), saved atomically."),
    }


_ATOMIC = _load_atomic_classes()
AtomicParquetDataset = _ATOMIC["AtomicParquetDataset"]
AtomicCSVDataset = _ATOMIC["AtomicCSVDataset"]
AtomicPandasJSONDataset = _ATOMIC["AtomicPandasJSONDataset"]
AtomicJSONDataset = _ATOMIC["AtomicJSONDataset"]
AtomicTextDataset = _ATOMIC["AtomicTextDataset"]
AtomicMatplotlibDataset = _ATOMIC["AtomicMatplotlibDataset"]
AtomicArrowDataset = _ATOMIC["AtomicArrowDataset"]
AtomicPickleDataset = _ATOMIC["AtomicPickleDataset"]


class EmissionsDataset(AbstractDataset):
    """Per-training-node energy and CO₂ rows (JSON lines), written by :class:`ru_rlhf.hooks.CarbonHook`.

    A file that does not exist yet means no training node has run: an empty table (so the
    evaluation report can be built from whatever has been measured).
    """

    COLUMNS = ["node", "method", "status", "seconds", "energy_kwh", "co2_kg", "country", "cpu_model", "cpu_power_w",
               "estimate"]

    def __init__(self, filepath: str, metadata: dict | None = None) -> None:
        self._filepath = filepath
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        from pathlib import Path

        path = Path(self._filepath)
        if not path.exists() or path.stat().st_size == 0:
            return pd.DataFrame(columns=self.COLUMNS)
        return pd.read_json(path, lines=True).reindex(columns=self.COLUMNS)

    def save(self, data: pd.DataFrame) -> None:
        import os
        from pathlib import Path

        path = Path(self._filepath)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        data.reindex(columns=self.COLUMNS).to_json(tmp, orient="records", lines=True, force_ascii=False)
        os.replace(tmp, path)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath}

    def _exists(self) -> bool:
        return True  # no file yet simply means nothing trained yet
