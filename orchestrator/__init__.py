"""orchestrator: safe upgrades and replication for the Orthanc DICOM server."""

__version__ = "0.1.0"
