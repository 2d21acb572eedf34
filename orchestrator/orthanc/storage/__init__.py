"""An Orthanc storage folder read offline: files, compression, DICOM sniffing, the walker and
the index's attachments.

Layout (filesystem storage): `root/xx/yy/<uuid>`, where xx and yy are the first
two pairs of hex digits of the attachment's UUID; on Debian the SQLite `index`
sits in the same folder. Every file is immutable once written, and untrusted:
symlinks are not followed, sizes are capped, and a zlib stream may not inflate
beyond the size its header declares.

Two ways to find the full DICOM files: the stopped source's index
(`attachments`), or the content alone (`dicom`). The names below are the
package's public interface (`from orchestrator.orthanc.storage import ...`).
"""

from orchestrator.orthanc.index import INDEX_FILE
from orchestrator.orthanc.storage.attachments import (Attachment, FileType, attachments,
                                                      known_uuids, open_index, read_attachment)
from orchestrator.orthanc.storage.compression import (ZLIB_HEADER, Compression, Inflater,
                                                      declared_size, decompress,
                                                      looks_zlib_with_size)
from orchestrator.orthanc.storage.dicom import DicomFacts, Kind, classify, dicom_facts, is_dicom
from orchestrator.orthanc.storage.files import (DEFAULT_MAX_SIZE, UUID_RE, StorageFormatError,
                                                attachment_path, open_regular, read_file)
from orchestrator.orthanc.storage.walker import StorageEntry, walk, walk_top

__all__ = ["INDEX_FILE", "Attachment", "FileType", "attachments", "known_uuids", "open_index",
           "read_attachment", "ZLIB_HEADER", "Compression", "Inflater", "declared_size",
           "decompress", "looks_zlib_with_size", "DicomFacts", "Kind", "classify",
           "dicom_facts", "is_dicom", "DEFAULT_MAX_SIZE", "UUID_RE", "StorageFormatError",
           "attachment_path", "open_regular", "read_file", "StorageEntry", "walk", "walk_top"]
