"""Copy instances into an Orthanc: REST -> REST (`replicate`) and storage folder -> REST
(`import-storage`), over one shared transfer pool (keep-alive connections, retries,
resumable state, progress)."""
