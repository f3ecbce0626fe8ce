"""Where a sweep resumes: what the results root already holds, what is left to do, and the report.

No Ray here: everything that can fail before work starts (the plan, access to the root, results
made with another recipe) fails here, before any worker is started.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sweep.core.errors import SweepError
from sweep.models.build import split_pin
from sweep.store.outputs import check_writable, open_root
from sweep.store.index import damaged_images, drop_triples, read_stored, set_aside
from sweep.work.batch import batch_hash
from sweep.work.dispatch import Triple
from sweep.work.plan import SweepConfig, Task, check_plan, expand

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    """What a sweep did, per model and in total."""

    run_id: str
    planned: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    failed_before: int = 0  # failed rows of earlier runs kept as done (retry_failed=False); among skipped
    worker_failures: int = 0
    retries: int = 0
    peak_workers: int = 0  # most workers running at once
    per_model: dict[str, dict] = field(default_factory=dict)
    workers: list[dict] = field(default_factory=list)

    def table(self) -> str:
        header = ("model", "planned", "skipped", "done", "failed", "batches", "worker s")
        rows = [(m, *(str(round(v[k], 1)) for k in ("planned", "skipped", "done", "failed", "batches", "seconds")))
                for m, v in self.per_model.items()]
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in (header, *rows))


def stale_weights(index, weights: str, triples: set[Triple]) -> set[Triple]:
    """Of `triples`, those stored with the same weights file as `weights` but other bytes (another
    pin, or none: rows written before files were pinned): to recompute, never to keep as done."""
    path, pin = split_pin(weights)
    if pin is None:
        return set()
    return {tr for row in index.itertuples(index=False)
            if (tr := (row.model, int(row.layer), row.site, int(row.feature))) in triples
            and split_pin(str(row.weights))[0] == path and row.weights != weights}


def preflight(config: SweepConfig, force: bool, retry_failed: bool = True
              ) -> tuple[list[Task], set[Triple], object, str, int, int]:
    """Everything that can fail before work starts: plan, root access, existing results.

    Returns the tasks still to do, the triples already done, the filesystem and root, and the
    number of old rows removed (for --force, because their image is damaged, or because they are
    failed rows to retry), and the number of failed rows kept as done (retry_failed=False).
    Damaged Parquet parts are moved aside once their (unreadable, so missing) triples are planned again.
    """
    full = check_plan(config)
    fs, root = open_root(config.out, config.storage_options)
    check_writable(fs, root, config.out)
    stored = read_stored(fs, root, cache=True)
    index = stored.index
    wanted_hash = {}
    for t in full:
        h = batch_hash(t.batch)
        wanted_hash.update((tr, h) for tr in t.triples())
    existing = {(row.model, int(row.layer), row.site, int(row.feature)): row.config_hash
                for row in index.itertuples(index=False)}
    clash = [tr for tr, h in wanted_hash.items() if tr in existing and existing[tr] != h]
    weights_of = {t.batch.model: t.batch.weights for t in full}
    stale: set[Triple] = set()
    for weights in set(weights_of.values()):
        mine = stale_weights(index, weights, {tr for tr in clash if weights_of[tr[0]] == weights})
        if mine:
            log.warning("%d result(s) were made from an earlier version of the weights file %s: recomputing them",
                        len(mine), split_pin(weights)[0])
        stale |= mine
        clash = [tr for tr in clash if tr not in stale]
    if clash and not force:
        m, layer, site, f = clash[0]
        raise SweepError(f"{len(clash)} planned result(s) already exist under {config.out!r} with a different "
                         f"recipe or weights (e.g. {m} layer {layer} {site} {f}); use another --out, or --force "
                         "to replace them")
    done = {tr for tr in wanted_hash if tr in existing}
    failed = {(row.model, int(row.layer), row.site, int(row.feature))
              for row in index.itertuples(index=False) if row.status == "failed"} & done
    redo = done if force else damaged_images(fs, root, index, done) | (failed if retry_failed else set()) | stale
    removed = drop_triples(fs, index, redo) if redo else 0
    done -= redo
    set_aside(fs, root, stored.damaged)
    return expand(config, skip=done), done, fs, root, removed, len(failed & done)


