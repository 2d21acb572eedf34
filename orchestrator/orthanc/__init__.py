"""Everything the tool knows about Orthanc: config, index, binary, REST, storage."""
