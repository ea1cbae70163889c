"""A build step's layer is safe from garbage collection while it enters the layer cache
(issue 11): `adopt_as_layer` made `layers/.unpack-*` without holding `store.writing()`, so
a collection running then could remove it half-made. It now waits for a running collection,
and a collection waits for it. Library code on a real filesystem; no daemon needed."""

from __future__ import annotations

import threading
from pathlib import Path

from carte.build._layers import adopt_as_layer
from carte.image.layers import UNPACK_PREFIX, is_unpacked
from carte.image.store import ImageStore

CHAIN = "sha256:" + "c" * 64
DIFF = "sha256:" + "d" * 64


def test_a_layer_being_adopted_waits_for_a_running_collection(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "root")
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "step").write_text("made by RUN\n")
    adopted = threading.Event()

    def adopt() -> None:
        adopt_as_layer(store, upper, CHAIN, DIFF, None)
        adopted.set()

    with store.collecting():
        worker = threading.Thread(target=adopt)
        worker.start()
        assert not adopted.wait(0.5), "adopted while a collection held the store"
        assert not [p for p in store.layers_dir.iterdir() if p.name.startswith(UNPACK_PREFIX)]
    worker.join(10)
    assert adopted.is_set()
    assert is_unpacked(store, CHAIN)
    assert not upper.exists()
