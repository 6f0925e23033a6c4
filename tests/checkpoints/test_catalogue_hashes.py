"""Every sha256 in the catalogue is the one a public record gives for the
same file, and slimnets/data/PROVENANCE.md names that record.

The values cannot be recomputed offline; what can fail here is the
catalogue and its provenance table drifting apart (a value added, changed
or dropped on one side only, or a row that cites no record).
"""

import importlib.resources
import re

from slimnets import checkpoints

_HEX64 = re.compile(r'^[0-9a-f]{64}$')


def _provenance():
    return importlib.resources.files('slimnets').joinpath(
        'data', 'PROVENANCE.md').read_text(encoding='utf-8')


def _rows(text):
    """[name, format, url, sha256, records] of the sha256 table."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
        if len(cells) == 5 and _HEX64.match(cells[3]):
            rows.append(cells)
    return rows


def test_the_provenance_table_and_the_catalogue_agree():
    rows = _rows(_provenance())
    table = [tuple(row[:4]) for row in rows]
    assert len(table) == len(set(table)), 'a row is repeated'
    catalogue = {(item.name, source.format, source.url, source.sha256)
                 for item in checkpoints.catalogue()
                 for source in item.sources if source.sha256}
    assert set(table) == catalogue


def test_every_row_cites_a_record_with_its_commit():
    text = _provenance()
    # "* **KEY**: owner/repo@<40 hex>:path" or "* **KEY MODEL**: ...MODEL..."
    records = dict(re.findall(
        r'^\* \*\*([\w-]+)(?: MODEL)?\*\*: (\S+@[0-9a-f]{40}:\S+)', text,
        re.M))
    assert records
    cited = set()
    for name, _, url, _, refs in _rows(text):
        assert refs, name
        for ref in refs.split(', '):
            key, _, model = ref.partition(' ')
            assert key in records, (name, ref)
            # A per-model record names its model; the others do not.
            assert bool(model) == ('MODEL' in records[key]), (name, ref)
            cited.add(key)
        assert url.startswith('https://'), name
    assert cited == set(records)
