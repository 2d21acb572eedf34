"""Test harness: throwaway real Orthanc servers and synthetic DICOM.

Also used by bench/ and the demo (they add the repository root to sys.path).
"""
