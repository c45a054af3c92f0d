"""``python -m ru_rlhf.app``: start the A/B app (127.0.0.1:7860 by default), or ``retrain`` / ``export``.

    python -m ru_rlhf.app                       # serve the base run's policies
    python -m ru_rlhf.app --auth                # log in with users from conf/local/credentials.yml
    python -m ru_rlhf.app retrain               # run preference_curation + reward_modeling with the votes
    python -m ru_rlhf.app export --out DIR      # the votes as a Hugging Face dataset (parquet)

A bad credentials file, a store that cannot be written and too few policies stop the app at start
with one line naming the file and the key or rule (``SystemExit``), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

CREDENTIALS = Path("conf/local/credentials.yml")


# ------------------------------------------------------------------------------------- credentials
@dataclass(frozen=True)
class _NotText:
    """A YAML scalar that is not a string (``0123`` is the integer 83, ``alice:`` is null), as written."""

    raw: str
    kind: str

    def __str__(self) -> str:
        return self.raw or "(nothing)"


def _yaml_loader():
    """A safe YAML loader that keeps non-string scalars as written (to reject them, not stringify them)
    and refuses a key given twice."""
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader with the constructors below (a subclass, so yaml.SafeLoader itself is untouched)."""

    def keep(kind: str):
        return lambda loader, node: _NotText(node.value, kind)

    for tag, kind in (("null", "null"), ("bool", "boolean"), ("int", "integer"), ("float", "number"),
                      ("timestamp", "date")):
        Loader.add_constructor(f"tag:yaml.org,2002:{tag}", keep(kind))

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                           lambda loader, node: mapping(loader, node, deep=True))
    return Loader


def _show(value) -> str:
    if isinstance(value, _NotText):
        return f"the YAML {value.kind} {value}" if value.kind != "null" else "nothing (null)"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"a {type(value).__name__}"


def _credentials_model():
    from pydantic import BaseModel, ConfigDict, field_validator, model_validator

    class AppCredentials(BaseModel):
        """``app_users: {name: password}`` (non-empty strings) and ``app_admins: [name, ...]`` (known users)."""

        model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
        app_users: dict[str, str]
        app_admins: list[str] | None = None

        @field_validator("app_users", mode="before")
        @classmethod
        def _users(cls, v):
            if not isinstance(v, dict) or not v:
                raise ValueError("must be a mapping of user names to passwords, e.g. `app_users: {alice: secret1}`, "
                                 f"got {_show(v) if v not in ({}, None) else 'nothing'}")
            for name, pw in v.items():
                if not isinstance(name, str) or not name.strip():
                    raise ValueError(f"user name {str(name)!r} must be a non-empty string, got {_show(name)}; "
                                     "quote it")
                if isinstance(pw, _NotText) and pw.kind == "null":
                    raise ValueError(f"{name}: no password (`{name}:` with nothing after it); write `{name}: <password>`")
                if not isinstance(pw, str):
                    kind = pw.kind if isinstance(pw, _NotText) else type(pw).__name__  # never echo a password
                    raise ValueError(f"{name}: the password must be a string, got a YAML {kind}; quote it: "
                                     f"`{name}: '<password>'`")
                if not pw:
                    raise ValueError(f"{name}: the password is empty")
            return v

        @field_validator("app_admins", mode="before")
        @classmethod
        def _admins(cls, v):
            if isinstance(v, str):
                raise ValueError(f"must be a list of user names, got the string {v!r}; write `app_admins: [{v}]`")
            if not isinstance(v, list):
                raise ValueError(f"must be a list of user names, got {_show(v)}")
            for name in v:
                if not isinstance(name, str) or not name.strip():
                    raise ValueError(f"must be a list of user names, got {_show(name)} in it")
            return v

        @model_validator(mode="after")
        def _known(self):
            unknown = [a for a in self.app_admins or [] if a not in self.app_users]
            if unknown:
                raise ValueError(f"app_admins: {', '.join(map(repr, unknown))} not in app_users")
            return self

    return AppCredentials


def _credentials(path: Path) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """Users (``app_users: {name: password}``) and admins (``app_admins: [name]``) from a credentials file.

    Without ``app_admins`` the user ``admin`` (if there is one) is the admin.

    Raises:
        SystemExit: no file, not YAML, or a key that breaks the schema: the message names the file and the key.
    """
    import yaml
    from pydantic import ValidationError

    if not path.exists():
        raise SystemExit(f"{path}: no credentials file; write `app_users: {{name: password}}` there or drop --auth")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml_loader())  # noqa: S506 - a SafeLoader
    except (yaml.YAMLError, OSError, UnicodeDecodeError, TypeError) as err:  # TypeError: a list or map as a key
        raise SystemExit(f"{path}: not a readable YAML file ({' '.join(str(err).split())})") from None
    if data is None or (isinstance(data, _NotText) and data.kind == "null"):
        raise SystemExit(f"{path}: app_users: missing; write `app_users: {{name: password}}`")
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: must be a mapping with app_users and app_admins, got {_show(data)}")
    try:
        creds = _credentials_model().model_validate(data)
    except ValidationError as err:
        raise SystemExit(f"{path}: " + "; ".join(_problem(e) for e in err.errors())) from None
    users = list(creds.app_users.items())
    admins = creds.app_admins if creds.app_admins is not None else [u for u, _ in users if u == "admin"]
    return users, tuple(admins)


def _problem(e: dict) -> str:
    key = ".".join(str(p) for p in e["loc"])
    msg = str(e.get("msg", "")).removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        return f"{key}: unknown key (the file holds app_users and app_admins only)"
    if e["type"] == "missing":
        return f"{key}: missing; write `app_users: {{name: password}}`"
    return f"{key}: {msg}" if key else msg


# ------------------------------------------------------------------------------------------- main
def env_data_root(env: str, conf_source: str = "conf") -> str:
    """The data root of a Kedro env (its ``globals.yml``; ``RU_RLHF_DATA_ROOT`` when set), as the pipelines see it."""
    from ru_rlhf.app.catalog import env_config

    return str(env_config("globals", env, conf_source=conf_source)["data_root"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ru_rlhf.app")
    ap.add_argument("command", nargs="?", default="serve", choices=["serve", "retrain", "export"])
    ap.add_argument("--data-root", default=None,
                    help="the run's data folder (default: the env's data_root, e.g. data/smoke for --env smoke)")
    ap.add_argument("--store", default=None, help="SQLite file (default: the env's catalog entry app_feedback, "
                                                  "<data-root>/01_raw/feedback/votes.sqlite)")
    ap.add_argument("--env", default="base")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--auth", action="store_true", help=f"log in with {CREDENTIALS}")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--out", default="data/09_export/feedback_dataset")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    # a bad credentials file stops the app first, before any configuration or model is read
    users, admins = (_credentials(CREDENTIALS) if args.auth and args.command == "serve" else (None, ("admin",)))
    from ru_rlhf.app.catalog import env_catalog

    try:
        args.data_root = args.data_root or env_data_root(args.env)
        default_store = Path(env_catalog(args.env, args.data_root).get("app_feedback").path)  # what curation reads
    except Exception as err:  # noqa: BLE001 - no conf/ here, or no such env: one line, not a traceback
        raise SystemExit(f"conf/: cannot read the catalog of the env {args.env!r} ({' '.join(str(err).split())}); "
                         "start the app in the project folder") from None
    store = args.store or str(default_store)
    if Path(store).resolve() != default_store.resolve():
        logging.getLogger(__name__).warning(
            "--store %s is not the store the pipelines read (%s): `retrain` and `kedro run` will not see these "
            "votes until the file is moved there", store, default_store)
    if args.command == "retrain":
        from ru_rlhf.app.service import Retrainer

        r = Retrainer(args.env, args.data_root)
        print("running:", " ".join(r.command()))
        r.start()
        while r.running():
            import time

            time.sleep(2)
        print(r.state["status"], r.state["log_tail"][-1500:])
        print("new reward model (test):", r.state["metrics"])
        print("trained on:", r.state["training_data"])
        raise SystemExit(0 if r.state["status"] == "done" else 1)
    import sqlite3

    if args.command == "export":
        from ru_rlhf.app.export import export_votes

        try:
            print(export_votes(store, args.out))
        except sqlite3.Error as err:
            raise SystemExit(_store_message(store, err)) from None
        return
    from ru_rlhf.app.service import ABService, AppConfig, AppSetupError

    try:
        service = ABService(AppConfig(data_root=args.data_root, store=store, env=args.env, admins=admins,
                                      max_new_tokens=args.max_new_tokens))
    except sqlite3.Error as err:
        raise SystemExit(_store_message(store, err)) from None
    except AppSetupError as err:
        raise SystemExit(str(err)) from None
    from ru_rlhf.app.ui import build_app

    build_app(service).launch(server_name=args.host, server_port=args.port, auth=users)


def _store_message(store: str, err: Exception) -> str:
    from ru_rlhf.io.feedback_store import StoreError

    if isinstance(err, StoreError):
        return str(err)
    return f"{store}: not a readable SQLite vote store ({err}) (rule: corrupt_store)"


if __name__ == "__main__":
    main()
