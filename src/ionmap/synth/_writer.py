"""pyimzML's ImzMLWriter with the metadata it cannot set itself, and bounded memory.

pyimzML (1.5.x) writes the UUID, the .ibd SHA-1, mode, spectrum type, polarity and data
types, but no pixel size, and it takes "max count of pixels" from the largest coordinate
written (too small when the tissue does not reach the grid's last row or column). This
subclass adds ``pixel size (x)`` / ``pixel size y`` (IMS:1000046/1000047, µm) and states
the grid size, by extending pyimzML's own XML template, and makes the UUID deterministic.
pyimzML renders the whole XML as one string (~7 KB of memory per spectrum); here the
spectrum list is rendered and written in chunks of spectra.
"""
from __future__ import annotations

import hashlib
import uuid as uuid_mod

from pyimzml import ImzMLWriter as _module
from pyimzml.ImzMLWriter import ImzMLWriter
from wheezy.template import CoreExtension, DictLoader, Engine

_MAX_X = (
    '<cvParam cvRef="IMS" accession="IMS:1000042" name="max count of pixels x" '
    'value="@{(max(s.coords[0] for s in spectra))!!s}"/>'
)
_MAX_Y = (
    '<cvParam cvRef="IMS" accession="IMS:1000043" name="max count of pixels y" '
    'value="@{(max(s.coords[1] for s in spectra))!!s}"/>'
)
_LOOP = "      @for index, s in enumerate(spectra):\n"
_LOOP_END = "      @end\n    </spectrumList>"
_CHUNK = 5000  # spectra per rendered piece of XML
_PARAM = '<cvParam cvRef="IMS" accession="IMS:{acc}" name="{name}" value="{value}"{unit}/>'
_UM = ' unitCvRef="UO" unitAccession="UO:0000017" unitName="micrometer"'


class SynthWriter(ImzMLWriter):
    """ImzMLWriter that records the grid ``(ny, nx)``, the pixel size (µm) and a given UUID."""

    def __init__(self, path: str, *, shape: tuple[int, int], pixel_size_um: float,
                 file_uuid: uuid_mod.UUID, **kwargs) -> None:
        super().__init__(path, **kwargs)
        template = _module.IMZML_TEMPLATE
        if _MAX_X not in template or _MAX_Y not in template:
            raise RuntimeError("unexpected pyimzML writer template; update ionmap.synth._writer")
        indent = "\n      "
        size = f"{pixel_size_um:g}"
        template = template.replace(_MAX_X, _PARAM.format(
            acc="1000042", name="max count of pixels x", value=shape[1], unit=""))
        template = template.replace(_MAX_Y, indent.join([
            _PARAM.format(acc="1000043", name="max count of pixels y", value=shape[0], unit=""),
            _PARAM.format(acc="1000046", name="pixel size (x)", value=size, unit=_UM),
            _PARAM.format(acc="1000047", name="pixel size y", value=size, unit=_UM),
        ]))
        if _LOOP in template and _LOOP_END in template:
            self.imzml_template = _ChunkedTemplate(template, self.xml)
        else:  # unknown template layout: render in one piece
            self.imzml_template = _compile(template)
        # The parent wrote a random UUID as the first 16 bytes; replace it.
        self.uuid = file_uuid
        self.ibd.seek(0)
        self.ibd.write(file_uuid.bytes)
        self.sha1 = hashlib.sha1(file_uuid.bytes)


def _compile(text: str):
    engine = Engine(loader=DictLoader({"t": text}), extensions=[CoreExtension()])
    return engine.get_template("t")


class _ChunkedTemplate:
    """Renders pyimzML's template as head, spectrum loop per chunk, tail, each written to
    ``out`` at once; ``render`` returns "" so the writer's own final write adds nothing."""

    def __init__(self, template: str, out) -> None:
        require, _, rest = template.partition("\n")
        start = rest.index(_LOOP)
        stop = rest.index(_LOOP_END) + len("      @end\n")
        loop = rest[start:stop].replace("enumerate(spectra)", "enumerate(spectra, first)")
        self.head = _compile(require + "\n" + rest[:start])
        self.loop = _compile(require[:-1] + ", first)\n" + loop)
        self.tail = _compile(require + "\n" + rest[stop:])
        self.out = out

    def render(self, ctx: dict) -> str:
        self.out.write(self.head.render(ctx))
        spectra = ctx["spectra"]
        for first in range(0, len(spectra), _CHUNK):
            chunk = {**ctx, "spectra": spectra[first:first + _CHUNK], "first": first}
            self.out.write(self.loop.render(chunk))
        self.out.write(self.tail.render(ctx))
        return ""
