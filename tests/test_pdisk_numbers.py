"""pdisk prints numbers for its server's locale (spec §8): the driver must read them all."""

from __future__ import annotations

import pytest

from stratuslab_lc_plugin.services.pdisk import DiskRecord, pdisk_number

UUID = "9c5a2c03-8243-4a1b-a248-0f0d22d948c2"


@pytest.mark.parametrize(
    "text, value",
    [
        ("5", 5),
        ("1024", 1024),
        ("1,024", 1024),  # en
        ("1.024", 1024),  # de
        ("1\u00a0024", 1024),  # fr, no-break space
        ("1\u202f024", 1024),  # fr, narrow no-break space (newer CLDR data)
        ("1'024", 1024),  # de-CH
        ("1 024", 1024),
        ("1,073,741,824", 1073741824),
        (" 12 ", 12),
        (7, 7),
    ],
)
def test_grouped_numbers_are_read(text, value):
    assert pdisk_number(text) == value


@pytest.mark.parametrize(
    "text", ["", "-1", "1,02", "12,34", "1,,024", "1,024.000", "1,024 000", "1e3", "0x10", True, None, 1.5]
)
def test_other_texts_are_refused(text):
    with pytest.raises(ValueError, match="not a pdisk number"):
        pdisk_number(text)


def test_disk_record_reads_grouped_size_and_count():
    record = DiskRecord.from_json({"uuid": UUID, "tag": "t", "owner": "alice", "size": "1,000", "count": "1,001"})
    assert record.size == 1000
    assert record.count == 1001


@pytest.mark.parametrize("size, gib", [("1", 1), ("1,000", 1000), ("1,001", 1001), ("1,024", 1024), ("10,737,418,240", 10)])
def test_sizes_up_to_the_largest_volume_are_gib_and_larger_ones_bytes(size, gib):
    assert DiskRecord.from_json({"uuid": UUID, "size": size, "count": "0"}).size == gib
