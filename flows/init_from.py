"""`pretrain.init_from` → the checkpoint it names: the one seam through which the `code` stage's stamp, the
tokenize stage and the pretrain stage see it.

A directory is taken as params.yaml gives it (relative to the workspace, or absolute); `champion` is the
registry's champion now, named `champion vNNNN` in the lineage. The checkpoint's identity is
`flows.registry.model_digest` of its directory, the same hash the registry gives its versions.

The stamp `.doclife/base.json` holds {origin, sha256} (or {"origin": null}); tokenize and pretrain list it
in their DVC deps, so a checkpoint whose files changed, or a new champion under `init_from: champion`,
re-runs them. The `code` stage writes it with the code stamps (flows/workspace.py, `write_code_stamps`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_checks.io import DoclifeError
from flows.registry import Registry, model_digest
from lightning_modules.checkpoint import CHAMPION, BaseCheckpoint, read_checkpoint_config

BASE_STAMP = ".doclife/base.json"


def resolve_init_from(init_from: str | None, root: Path, registry_dir: Path) -> BaseCheckpoint | None:
    """The checkpoint `init_from` names, checked to be one doclife can train (config.json of a BERT, weights);
    None for null. `root` is the workspace, `registry_dir` its registry (for `champion`)."""
    if init_from is None:
        return None
    if init_from == CHAMPION:
        registry = Registry(registry_dir)
        champion = registry.champion()
        if champion is None:
            raise DoclifeError(f"{registry.state_path}: pretrain.init_from is champion, but there is no champion yet "
                               "(promote a model first, or set init_from to a checkpoint directory or null)")
        path, origin = Path(champion["path"]), f"{CHAMPION} {champion['version']}"
    else:
        path, origin = Path(root) / init_from, init_from  # an absolute init_from stays as it is
    read_checkpoint_config(path)
    return BaseCheckpoint(path=path, origin=origin, sha256=model_digest(path))


def base_stamp(root: Path) -> dict[str, Any]:
    """{origin, sha256} of the checkpoint the workspace's params.yaml starts pretraining from, or {"origin": None}.

    A checkpoint that does not resolve (no champion yet, a directory that is not a checkpoint) is stamped with
    sha256 None rather than refused here: the stamp is written before every run, and the stages that need no
    checkpoint (ingest to snapshot) must still run; tokenize and pretrain refuse it in one line, before any
    training step. Fixed, the stamp changes and they run again.
    """
    from flows.config import load_params

    params_path = Path(root) / "params.yaml"
    if not params_path.is_file():  # not a workspace (yet): nothing to start from
        return {"origin": None}
    params = load_params(params_path)
    init_from = params.pretrain.init_from
    try:
        base = resolve_init_from(init_from, Path(root), Path(root) / params.promote.registry)
    except DoclifeError:
        return {"origin": init_from, "sha256": None}
    return {"origin": None} if base is None else base.lineage()
