"""Images of one size, in batches, for inference: stacking needs equal sizes, and VOC's images are
mostly 500 x 375 or 375 x 500, so grouping by size fills the batches without padding (padding would
change what the networks see at the borders)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence


def same_size_batches(
    ids: Sequence[str], size_of: Callable[[str], tuple[int, int]], batch: int
) -> Iterator[list[str]]:
    """`ids` in batches of at most `batch` images of one size, sizes in order of first appearance."""
    groups: dict[tuple[int, int], list[str]] = {}
    for image_id in ids:
        groups.setdefault(size_of(image_id), []).append(image_id)
    for members in groups.values():
        for start in range(0, len(members), batch):
            yield members[start : start + batch]
