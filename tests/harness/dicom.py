"""Deterministic synthetic DICOM: patients / studies / series / instances with real pixels."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root


def _uid(*parts: object) -> str:
    return generate_uid(prefix=ROOT, entropy_srcs=[str(p) for p in parts])


def make_instance(patient: int, study: int, series: int, instance: int, *,
                  rows: int = 256, cols: int = 256, seed: str = "orchestrator") -> bytes:
    """Return one valid DICOM file (Secondary Capture, 16-bit MONOCHROME2) as bytes.

    The same arguments always give the same bytes; 256x256 gives ~130 KB.
    """
    meta = FileMetaDataset()
    sop_uid = _uid(seed, patient, study, series, instance)
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT + "1"

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.PatientID = f"{seed[:8].upper()}-P{patient:04d}"
    ds.PatientName = f"Test^Patient{patient}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = _uid(seed, patient, study)
    ds.StudyID = f"S{study}"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyDescription = f"Synthetic study {study}"
    ds.AccessionNumber = f"A{patient:04d}{study:02d}"
    ds.SeriesInstanceUID = _uid(seed, patient, study, series)
    ds.SeriesNumber = series + 1
    ds.SeriesDescription = f"Synthetic series {series}"
    ds.Modality = "OT"
    ds.InstanceNumber = instance + 1
    ds.ConversionType = "WSD"
    ds.Rows = rows
    ds.Columns = cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    # Real, non-constant pixels derived from the identity (so files differ and compress a bit).
    digest = hashlib.sha256(sop_uid.encode()).digest()
    block = bytes(digest) * ((rows * cols * 2) // len(digest) + 1)
    ds.PixelData = block[: rows * cols * 2]

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def iter_instances(patients: int = 2, studies: int = 2, series: int = 2, instances: int = 3,
                   **kw: object) -> Iterator[bytes]:
    """Yield patients*studies*series*instances DICOM files, in a fixed order."""
    for p in range(patients):
        for st in range(studies):
            for se in range(series):
                for i in range(instances):
                    yield make_instance(p, st, se, i, **kw)  # type: ignore[arg-type]


def make_dataset(count: int, *, per_series: int = 10, series_per_study: int = 2,
                 studies_per_patient: int = 2, **kw: object) -> list[bytes]:
    """Return `count` instances spread over patients/studies/series."""
    out = []
    i = 0
    while len(out) < count:
        inst = i % per_series
        se = (i // per_series) % series_per_study
        st = (i // (per_series * series_per_study)) % studies_per_patient
        p = i // (per_series * series_per_study * studies_per_patient)
        out.append(make_instance(p, st, se, inst, **kw))  # type: ignore[arg-type]
        i += 1
    return out


def write_files(folder: Path, datasets: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, data in enumerate(datasets):
        p = folder / f"{n:06d}.dcm"
        p.write_bytes(data)
        paths.append(p)
    return paths
