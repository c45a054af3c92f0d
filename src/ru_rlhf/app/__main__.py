"""``python -m ru_rlhf.app``: start the A/B app (127.0.0.1:7860 by default), or ``retrain`` / ``export``.

    python -m ru_rlhf.app                       # serve the base run's policies
    python -m ru_rlhf.app --auth                # log in with users from conf/local/credentials.yml
    python -m ru_rlhf.app retrain               # run preference_curation + reward_modeling with the votes
    python -m ru_rlhf.app export --out DIR      # the votes as a Hugging Face dataset (parquet)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def _credentials(path: Path) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """Users (``app_users: {name: password}``) and admins (``app_admins: [name]``) from a credentials file."""
    import yaml

    if not path.exists():
        raise SystemExit(f"{path}: no credentials file; write `app_users: {{name: password}}` there or drop --auth")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    users = [(str(k), str(v)) for k, v in (data.get("app_users") or {}).items()]
    if not users:
        raise SystemExit(f"{path}: `app_users` is empty")
    return users, tuple(data.get("app_admins") or ("admin",))


def main(argv: list[str] | None = None) -> None:
    from ru_rlhf.app.service import ABService, AppConfig, Retrainer

    ap = argparse.ArgumentParser(prog="python -m ru_rlhf.app")
    ap.add_argument("command", nargs="?", default="serve", choices=["serve", "retrain", "export"])
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--store", default=None, help="SQLite file (default: <data-root>/01_raw/feedback/votes.sqlite)")
    ap.add_argument("--env", default="base")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--auth", action="store_true", help="log in with conf/local/credentials.yml")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--out", default="data/09_export/feedback_dataset")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    store = args.store or str(Path(args.data_root) / "01_raw" / "feedback" / "votes.sqlite")
    if args.command == "retrain":
        r = Retrainer(args.env, args.data_root)
        print("running:", " ".join(r.command()))
        r.start()
        while r.running():
            import time

            time.sleep(2)
        print(r.state["status"], r.state["log_tail"][-1500:])
        print("new reward model (test):", r.state["metrics"])
        raise SystemExit(0 if r.state["status"] == "done" else 1)
    if args.command == "export":
        from ru_rlhf.app.export import export_votes

        print(export_votes(store, args.out))
        return
    users, admins = (_credentials(Path("conf/local/credentials.yml")) if args.auth else (None, ("admin",)))
    service = ABService(AppConfig(data_root=args.data_root, store=store, env=args.env, admins=admins,
                                  max_new_tokens=args.max_new_tokens))
    from ru_rlhf.app.ui import build_app

    build_app(service).launch(server_name=args.host, server_port=args.port, auth=users)


if __name__ == "__main__":
    main()
