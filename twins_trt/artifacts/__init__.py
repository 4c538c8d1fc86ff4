"""The artifact catalog: how artifacts are written (atomically), described (one manifest type) and found.

    files     atomic writes, hashes, tool versions: nothing half-written under a final name
    manifest  `Manifest`, the one record every artifact writes beside it and every reader reads
    resolve   the one resolver that finds (or makes) the artifacts a run needs, once per run

`files` and `manifest` sit on the ground floor with the models; `resolve` sits above export/ and
trt/ (it exports and builds what is missing), so this package's `__init__` never imports it.
"""

from twins_trt.artifacts.files import (
    TOOL_PACKAGES,
    atomic_path,
    ensure_dir,
    git_commit,
    journal_mark,
    manifest_path,
    now_iso,
    read_manifest,
    sha256_file,
    tool_versions,
    write_bytes_atomic,
    write_json_atomic,
    written_since,
)

__all__ = ["TOOL_PACKAGES", "atomic_path", "ensure_dir", "git_commit", "journal_mark", "manifest_path", "now_iso",
           "read_manifest", "sha256_file", "tool_versions", "write_bytes_atomic", "write_json_atomic", "written_since"]
