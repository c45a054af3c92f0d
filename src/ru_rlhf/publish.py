"""Push the publish pipeline's folders to the Hugging Face hub, or show what would be pushed.

    python -m ru_rlhf.publish --env smoke --dry-run          # offline: repos, files and sizes
    HF_TOKEN=hf_… python -m ru_rlhf.publish --env base --namespace my-user

Each bundle under ``<data_root>/09_publish/<bundle>`` (written by ``kedro run --pipelines
publish``) becomes one repo, ``<namespace>/<repo_prefix>-<bundle>`` (a dataset repo for the pairs,
model repos otherwise), uploaded with ``HfApi.upload_folder``. The dry run reads only the local
manifest and files: it never opens a network connection.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd


def plan(manifest: pd.DataFrame, folders: dict[str, Path], namespace: str | None = None) -> pd.DataFrame:
    """One row per repo: id, type, files, bytes, the local folder (``folders``: the bundles' folders, as the
    catalog's ``publish_bundles`` loads them); checks every file is still there."""
    rows = []
    for bundle, g in manifest.groupby("bundle", sort=True):
        folder = Path(folders[bundle]) if bundle in folders else None
        missing = [f for f in g["file"] if folder is None or not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder or bundle}: {len(missing)} file(s) of the manifest are missing ({missing[:3]}); "
                                    "run `kedro run --pipelines publish` again")
        repo_id = g["repo_id"].iloc[0]
        if namespace:
            repo_id = f"{namespace}/{repo_id.split('/', 1)[1]}"
        rows.append({"bundle": bundle, "repo_id": repo_id, "repo_type": g["repo_type"].iloc[0], "files": len(g),
                     "bytes": int(g["bytes"].sum()), "folder": str(folder)})
    return pd.DataFrame(rows)


def describe(p: pd.DataFrame, manifest: pd.DataFrame) -> str:
    lines = [f"would upload {len(p)} repos, {int(p['files'].sum())} files, {p['bytes'].sum() / 1e6:.2f} MB:"]
    for r in p.itertuples(index=False):
        lines.append(f"  {r.repo_type:7s} {r.repo_id}  ({r.files} files, {r.bytes / 1e6:.2f} MB) from {r.folder}")
        for f in manifest[manifest["bundle"] == r.bundle].itertuples(index=False):
            lines.append(f"      {f.file}  {f.bytes:,} B")
    return "\n".join(lines)


def push(p: pd.DataFrame, token: str, private: bool = True) -> list[str]:
    """Create each repo (if needed) and upload its folder; returns the commit URLs."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    urls = []
    for r in p.itertuples(index=False):
        api.create_repo(r.repo_id, repo_type=r.repo_type, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=r.folder, repo_id=r.repo_id, repo_type=r.repo_type,
                                 commit_message="ru-rlhf publish")
        urls.append(str(info))
    return urls


def _load(env: str) -> tuple[pd.DataFrame, dict[str, Path]]:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(Path.cwd())
    with KedroSession.create(project_path=Path.cwd(), env=env) as session:
        ctx = session.load_context()
        manifest = ctx.catalog.load("publish_manifest")
        folders = ctx.catalog.load("publish_bundles")
    return manifest, folders


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ru_rlhf.publish", description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", default="base")
    ap.add_argument("--namespace", help="hub user or organisation (default: publish.hub_namespace)")
    ap.add_argument("--dry-run", action="store_true", help="list what would be uploaded, with sizes; no network")
    ap.add_argument("--public", action="store_true", help="create public repos (default: private)")
    args = ap.parse_args(argv)
    os.environ.setdefault("RU_RLHF_MLFLOW", "off")  # reading the catalog is not a tracked run
    manifest, folders = _load(args.env)
    p = plan(manifest, folders, args.namespace)
    print(describe(p, manifest))
    if args.dry_run:
        print("dry run: nothing uploaded")
        return 0
    token = os.environ.get("HF_TOKEN")
    if not token:
        print("HF_TOKEN is not set: pass a token with write access (or use --dry-run)", file=sys.stderr)
        return 2
    for url in push(p, token, private=not args.public):
        print(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
